package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Keys are generated once per test binary: RSA generation takes a good part
// of a second.
var (
	ecKey   = sync.OnceValue(func() *ecdsa.PrivateKey { return mustEC(elliptic.P256()) })
	ecKey2  = sync.OnceValue(func() *ecdsa.PrivateKey { return mustEC(elliptic.P256()) })
	rsaKey  = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA(2048) })
	rsaKey2 = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA(2048) })
)

// Keys of the wrong kind, for the error cases.
var (
	ecP384Key  = sync.OnceValue(func() *ecdsa.PrivateKey { return mustEC(elliptic.P384()) })
	rsa1024Key = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA(1024) })
	ed25519Key = sync.OnceValue(func() ed25519.PrivateKey {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	})
)

func mustEC(c elliptic.Curve) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func mustRSA(bits int) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		panic(err)
	}
	return k
}

// keyFormat is one way of writing a private key to PEM.
type keyFormat struct {
	name string
	pem  func(tb testing.TB) []byte
}

func pkcs8PEM(tb testing.TB, k any) []byte {
	tb.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func sec1PEM(tb testing.TB, k *ecdsa.PrivateKey) []byte {
	tb.Helper()
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func pkcs1PEM(k *rsa.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}

func publicPEM(tb testing.TB, k crypto.PublicKey) []byte {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// ecParamsPEM is what `openssl ecparam -name prime256v1 -genkey` writes
// before the key unless told -noout: the curve's OID.
const ecParamsPEM = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"

// writeFile writes b to a new file in a temporary directory of tb.
func writeFile(tb testing.TB, name string, b []byte) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// fakeClock is a settable clock for [Options.Now].
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newSigner(tb testing.TB, opts Options) *Signer {
	tb.Helper()
	if opts.Issuer == "" {
		opts.Issuer = "https://gateway.example.com/mcp"
	}
	s, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// fetchJWKS GETs the JWKS s serves over real HTTP.
func fetchJWKS(tb testing.TB, s *Signer) (jose.JSONWebKeySet, []byte, http.Header) {
	tb.Helper()
	srv := httptest.NewServer(s.JWKSHandler())
	tb.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + JWKSPath)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET jwks: %s %s", resp.Status, body)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		tb.Fatalf("decoding the JWKS %s: %v", body, err)
	}
	return set, body, resp.Header
}

// verify checks jws against set as an upstream would (allow-listed
// algorithms, key by kid) and returns its protected header and claims, both
// as generic JSON objects, so that every member is compared.
func verify(tb testing.TB, set jose.JSONWebKeySet, jws string) (header, claims map[string]any) {
	tb.Helper()
	header, claims, err := tryVerify(set, jws)
	if err != nil {
		tb.Fatal(err)
	}
	return header, claims
}

func tryVerify(set jose.JSONWebKeySet, jws string) (header, claims map[string]any, err error) {
	sig, err := jose.ParseSignedCompact(jws, []jose.SignatureAlgorithm{jose.ES256, jose.RS256})
	if err != nil {
		return nil, nil, err
	}
	keys := set.Key(sig.Signatures[0].Header.KeyID)
	if len(keys) != 1 {
		return nil, nil, errUnknownKID
	}
	payload, err := sig.Verify(keys[0].Key)
	if err != nil {
		return nil, nil, err
	}
	rawHeader, err := base64.RawURLEncoding.DecodeString(strings.Split(jws, ".")[0])
	if err != nil {
		return nil, nil, err
	}
	if err := json.Unmarshal(rawHeader, &header); err != nil {
		return nil, nil, err
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, nil, err
	}
	return header, claims, nil
}

var errUnknownKID = errors.New("no key in the JWKS has this kid")
