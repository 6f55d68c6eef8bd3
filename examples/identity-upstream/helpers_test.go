package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

const (
	testIssuer   = "https://gateway.example.com"
	testAudience = "http://upstream.example.com/mcp"
)

// gatewayKey is a key the test gateway signs with.
type gatewayKey struct {
	priv crypto.Signer
	alg  jose.SignatureAlgorithm
	kid  string
}

// mustKey makes a key; it panics on error (it runs outside any test).
func mustKey(alg jose.SignatureAlgorithm) *gatewayKey {
	var priv crypto.Signer
	var err error
	switch alg {
	case jose.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.RS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		panic(err)
	}
	jwk := jose.JSONWebKey{Key: priv.Public()}
	sum, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		panic(err)
	}
	return &gatewayKey{priv: priv, alg: alg, kid: base64.RawURLEncoding.EncodeToString(sum)}
}

// Keys are made once per test binary: RSA generation is slow.
var (
	esKey    = sync.OnceValue(func() *gatewayKey { return mustKey(jose.ES256) })
	rsKey    = sync.OnceValue(func() *gatewayKey { return mustKey(jose.RS256) })
	nextKey  = sync.OnceValue(func() *gatewayKey { return mustKey(jose.ES256) })
	rogueKey = sync.OnceValue(func() *gatewayKey { return mustKey(jose.ES256) })
)

// sign makes a compact JWS over claims as the gateway does, with header
// members extra added (or, with a nil value, removed: only typ can be).
func (k *gatewayKey) sign(tb testing.TB, claims map[string]any, extra map[string]any) string {
	tb.Helper()
	opts := &jose.SignerOptions{}
	opts.WithHeader("kid", k.kid)
	typ, hasTyp := extra["typ"]
	if !hasTyp {
		opts.WithType("JWT")
	} else if typ != nil {
		opts.WithHeader("typ", typ)
	}
	for name, v := range extra {
		if name != "typ" {
			opts.WithHeader(jose.HeaderKey(name), v)
		}
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.priv}, opts)
	if err != nil {
		tb.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		tb.Fatal(err)
	}
	obj, err := s.Sign(payload)
	if err != nil {
		tb.Fatal(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// claimsAt are good claims issued at now for this upstream.
func claimsAt(now time.Time) map[string]any {
	return map[string]any{
		"iss":       testIssuer,
		"sub":       "user-1",
		"aud":       testAudience,
		"client_id": "client-1",
		"scope":     "read:user_data openid",
		"iat":       now.Unix(),
		"exp":       now.Add(5 * time.Minute).Unix(),
		"jti":       "0123456789abcdefghijkl",
	}
}

func with(c map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(c))
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

// unsigned builds header.payload.signature by hand, for algorithms no
// library will sign with ("none") or that it signs with a key of our choosing.
func unsigned(header, claims map[string]any, sig []byte) string {
	h, _ := json.Marshal(header)
	p, _ := json.Marshal(claims)
	b64 := base64.RawURLEncoding
	return b64.EncodeToString(h) + "." + b64.EncodeToString(p) + "." + b64.EncodeToString(sig)
}

// hs256WithPublicKey is the classic algorithm-confusion forgery: HMAC-SHA256
// keyed with the public key's PEM, which a verifier that lets the token pick
// the algorithm would accept.
func hs256WithPublicKey(tb testing.TB, k *gatewayKey, claims map[string]any) string {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(k.priv.Public())
	if err != nil {
		tb.Fatal(err)
	}
	secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: secret},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", k.kid))
	if err != nil {
		tb.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	obj, err := s.Sign(payload)
	if err != nil {
		tb.Fatal(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// jwksServer serves a JWKS of settable keys over real HTTP and counts
// fetches.
type jwksServer struct {
	URL     string
	fetches atomic.Int64
	mu      sync.Mutex
	keys    []*gatewayKey
	down    bool
}

func newJWKSServer(tb testing.TB, keys ...*gatewayKey) *jwksServer {
	tb.Helper()
	js := &jwksServer{keys: keys}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		js.fetches.Add(1)
		js.mu.Lock()
		defer js.mu.Unlock()
		if js.down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		set := jose.JSONWebKeySet{}
		for _, k := range js.keys {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	tb.Cleanup(srv.Close)
	js.URL = srv.URL + "/.well-known/jwks.json"
	return js
}

func (js *jwksServer) set(keys ...*gatewayKey) {
	js.mu.Lock()
	defer js.mu.Unlock()
	js.keys = keys
}

func (js *jwksServer) setDown(down bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	js.down = down
}

// clock is a settable clock for Verifier.now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().Truncate(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
