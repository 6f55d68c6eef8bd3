package identity

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"regexp"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
)

var formats = []keyFormat{
	{"EC P-256 PKCS #8", func(tb testing.TB) []byte { return pkcs8PEM(tb, ecKey()) }},
	{"EC P-256 SEC 1", func(tb testing.TB) []byte { return sec1PEM(tb, ecKey()) }},
	{"EC P-256 SEC 1 after EC PARAMETERS", func(tb testing.TB) []byte {
		return append([]byte(ecParamsPEM), sec1PEM(tb, ecKey())...)
	}},
	{"RSA 2048 PKCS #8", func(tb testing.TB) []byte { return pkcs8PEM(tb, rsaKey()) }},
	{"RSA 2048 PKCS #1", func(tb testing.TB) []byte { return pkcs1PEM(rsaKey()) }},
}

var jtiPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{22}$`)

// TestRoundTrip signs with a key in every accepted format and verifies the
// assertion as an upstream would, against the JWKS fetched over HTTP: header
// and claims exactly as the contract says.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			clock := newFakeClock()
			s := newSigner(t, Options{
				KeyFile: writeFile(t, "key.pem", f.pem(t)),
				TTL:     2 * time.Minute,
				Now:     clock.Now,
			})
			wantAlg := "ES256"
			if strings.HasPrefix(f.name, "RSA") {
				wantAlg = "RS256"
			}
			if s.Algorithm() != wantAlg || s.Ephemeral() {
				t.Errorf("Algorithm() = %s, Ephemeral() = %v; want %s, false", s.Algorithm(), s.Ephemeral(), wantAlg)
			}
			jws, err := s.Assertion(Principal{
				Subject:  "user-1",
				ClientID: "client-1",
				Scopes:   []string{"read:user_data", "openid"},
			}, "http://everything:3001/mcp")
			if err != nil {
				t.Fatal(err)
			}
			set, _, _ := fetchJWKS(t, s)
			header, claims := verify(t, set, jws)
			if diff := cmp.Diff(map[string]any{"alg": wantAlg, "kid": s.KeyID(), "typ": "JWT"}, header); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
			jti, _ := claims["jti"].(string)
			if !jtiPattern.MatchString(jti) {
				t.Errorf("jti %q is not 16 random bytes in base64url", jti)
			}
			claims["jti"] = "<random>"
			iat := clock.Now().Unix()
			want := map[string]any{
				"iss":       "https://gateway.example.com/mcp",
				"sub":       "user-1",
				"aud":       "http://everything:3001/mcp",
				"client_id": "client-1",
				"scope":     "read:user_data openid",
				"iat":       float64(iat),
				"exp":       float64(iat + 120),
				"jti":       "<random>",
			}
			if diff := cmp.Diff(want, claims); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
		})
	}
}

// TestClaimsEdgeCases: a token without scopes still has the scope claim (an
// empty string), a stdio upstream's audience is mcpauthz:upstream:<name>, and
// iat is whole seconds, rounded down.
func TestClaimsEdgeCases(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	clock.Advance(999 * time.Millisecond)
	s := newSigner(t, Options{Now: clock.Now})
	jws, err := s.Assertion(Principal{Subject: "u"}, StdioAudience("files"))
	if err != nil {
		t.Fatal(err)
	}
	set, _, _ := fetchJWKS(t, s)
	_, claims := verify(t, set, jws)
	delete(claims, "jti")
	iat := clock.Now().Unix()
	want := map[string]any{
		"iss": "https://gateway.example.com/mcp", "sub": "u", "aud": "mcpauthz:upstream:files",
		"client_id": "", "scope": "", "iat": float64(iat), "exp": float64(iat + 300),
	}
	if diff := cmp.Diff(want, claims); diff != "" {
		t.Errorf("claims (-want +got):\n%s", diff)
	}
}

// TestKeyFileErrors: every unusable key file fails New with one line naming
// the file and what is wrong, and never echoing key material.
func TestKeyFileErrors(t *testing.T) {
	t.Parallel()
	ecPEM := sec1PEM(t, ecKey())
	pkcs8 := pkcs8PEM(t, ecKey())
	cases := []struct {
		name     string
		contents []byte // nil: the file does not exist
		want     string
	}{
		{"missing", nil, "cannot be read: no such file or directory"},
		{"empty", []byte{}, "holds no PEM key block"},
		{"not PEM", []byte("just some text\n"), "holds no PEM key block"},
		{"OpenSSH key", pem.EncodeToMemory(&pem.Block{Type: "OPENSSH PRIVATE KEY", Bytes: []byte("x")}), `PEM block of type "OPENSSH PRIVATE KEY"`},
		{"garbage PKCS #8", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("garbage")}), "PRIVATE KEY block is not a valid PKCS #8 key"},
		{"garbage SEC 1", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("garbage")}), "EC PRIVATE KEY block is not a valid SEC 1 key"},
		{"garbage PKCS #1", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte("garbage")}), "RSA PRIVATE KEY block is not a valid PKCS #1 key"},
		{"PKCS #8 labelled SEC 1", bytes.Replace(pkcs8, []byte("PRIVATE KEY"), []byte("EC PRIVATE KEY"), 2), "EC PRIVATE KEY block is not a valid SEC 1 key"},
		{"encrypted PKCS #8", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("x")}), "holds an encrypted private key"},
		{"encrypted PKCS #1", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00"}, Bytes: []byte("x")}), "holds an encrypted RSA PRIVATE KEY"},
		{"certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("x")}), "holds a CERTIFICATE, not a private key"},
		{"public key", publicPEM(t, &ecKey().PublicKey), "holds a PUBLIC KEY, not a private key"},
		{"two keys", append(append([]byte{}, ecPEM...), pkcs1PEM(rsaKey())...), "holds more than one key"},
		{"P-384", sec1PEM(t, ecP384Key()), "EC key on curve P-384; only P-256 (ES256) is supported"},
		{"RSA 1024", pkcs1PEM(rsa1024Key()), "RSA key of 1024 bits; at least 2048 are needed"},
		{"Ed25519", pkcs8PEM(t, ed25519Key()), "Ed25519 key; only EC P-256 (ES256) and RSA (RS256)"},
		{"too large", bytes.Repeat([]byte("A"), maxKeyFileBytes+1), "is larger than 64 KiB"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, "key.pem", tc.contents)
			if tc.contents == nil {
				path += ".missing"
			}
			_, err := New(Options{Issuer: "https://gw", KeyFile: path})
			if err == nil {
				t.Fatal("New accepted the key file")
			}
			msg := err.Error()
			if !strings.Contains(msg, "signing key file "+path+": ") || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not name %s and say %q", msg, path, tc.want)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error %q is not one line", msg)
			}
			if len(tc.contents) > 40 && strings.Contains(msg, string(tc.contents[30:40])) {
				t.Errorf("error %q shows the file's contents", msg)
			}
		})
	}

	// The same checks apply to previous keys, named as such; a public key is
	// fine there.
	_, err := New(Options{Issuer: "https://gw", PreviousKeyFiles: []string{writeFile(t, "old.pem", pkcs1PEM(rsa1024Key()))}})
	if err == nil || !strings.Contains(err.Error(), "previous key file ") || !strings.Contains(err.Error(), "1024 bits") {
		t.Errorf("a 1024-bit previous key: error %v", err)
	}
	if _, err := New(Options{Issuer: "https://gw", PreviousKeyFiles: []string{writeFile(t, "old.pem", publicPEM(t, &ecKey().PublicKey))}}); err != nil {
		t.Errorf("a public previous key: %v", err)
	}
}

// TestKIDIsRFC7638Thumbprint checks the kid against RFC 7638 §3.1's worked
// example, and a signer's kid against a thumbprint computed here by the
// RFC's recipe, without go-jose.
func TestKIDIsRFC7638Thumbprint(t *testing.T) {
	t.Parallel()
	b64 := base64.RawURLEncoding
	n, err := b64.DecodeString("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
	if err != nil {
		t.Fatal(err)
	}
	rfcKey, err := newKey(&rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537})
	if err != nil {
		t.Fatal(err)
	}
	if want := "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; rfcKey.kid != want {
		t.Errorf("kid of RFC 7638's example key = %s, want %s", rfcKey.kid, want)
	}

	s := newSigner(t, Options{KeyFile: writeFile(t, "key.pem", pkcs8PEM(t, ecKey()))})
	point, err := ecKey().PublicKey.Bytes() // 0x04 || x || y
	if err != nil {
		t.Fatal(err)
	}
	x, y := point[1:33], point[33:65]
	canonical := fmt.Sprintf(`{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}`, b64.EncodeToString(x), b64.EncodeToString(y))
	sum := sha256.Sum256([]byte(canonical))
	if want := b64.EncodeToString(sum[:]); s.KeyID() != want {
		t.Errorf("KeyID() = %s, want the thumbprint of %s = %s", s.KeyID(), canonical, want)
	}
}

// TestTTL: the lifetime defaults to 5m, is bounded by 10s and 10m and whole
// seconds, and exp - iat is exactly the TTL.
func TestTTL(t *testing.T) {
	t.Parallel()
	cases := []struct {
		ttl     time.Duration
		wantErr bool
		wantExp int64
	}{
		{0, false, 300},
		{MinTTL, false, 10},
		{MaxTTL, false, 600},
		{90 * time.Second, false, 90},
		{MinTTL - time.Second, true, 0},
		{MaxTTL + time.Second, true, 0},
		{1500 * time.Millisecond, true, 0},
		{30*time.Second + time.Millisecond, true, 0},
		{-time.Minute, true, 0},
	}
	for _, tc := range cases {
		t.Run(tc.ttl.String(), func(t *testing.T) {
			t.Parallel()
			s, err := New(Options{Issuer: "https://gw", TTL: tc.ttl})
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "ttl "+tc.ttl.String()) {
					t.Errorf("New(TTL %v) error %v, want one naming the ttl", tc.ttl, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			jws, err := s.Assertion(Principal{Subject: "u"}, "https://up")
			if err != nil {
				t.Fatal(err)
			}
			set, _, _ := fetchJWKS(t, s)
			_, claims := verify(t, set, jws)
			if got := int64(claims["exp"].(float64) - claims["iat"].(float64)); got != tc.wantExp {
				t.Errorf("exp - iat = %d, want %d", got, tc.wantExp)
			}
		})
	}
	if _, err := New(Options{}); err == nil || !strings.Contains(err.Error(), "MCP_SERVER_URL") {
		t.Errorf("New without an issuer: %v", err)
	}
}

// TestCacheReuse: the same assertion is handed out while more than half its
// lifetime remains, a new one after; any claim difference is another entry.
func TestCacheReuse(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := newSigner(t, Options{Now: clock.Now, TTL: 4 * time.Minute})
	p := Principal{Subject: "u", ClientID: "c", Scopes: []string{"a", "b"}}
	const aud = "https://up/mcp"
	get := func(p Principal, aud string) string {
		t.Helper()
		jws, err := s.Assertion(p, aud)
		if err != nil {
			t.Fatal(err)
		}
		return jws
	}
	first := get(p, aud)
	if again := get(p, aud); again != first {
		t.Error("a second call signed anew")
	}
	for _, other := range []struct {
		name string
		p    Principal
		aud  string
	}{
		{"audience", p, "https://other/mcp"},
		{"subject", Principal{Subject: "v", ClientID: "c", Scopes: p.Scopes}, aud},
		{"client", Principal{Subject: "u", ClientID: "d", Scopes: p.Scopes}, aud},
		{"scopes", Principal{Subject: "u", ClientID: "c", Scopes: []string{"a"}}, aud},
		{"scope order", Principal{Subject: "u", ClientID: "c", Scopes: []string{"b", "a"}}, aud},
	} {
		if got := get(other.p, other.aud); got == first {
			t.Errorf("another %s got the same assertion", other.name)
		}
	}
	clock.Advance(2*time.Minute - time.Nanosecond)
	if got := get(p, aud); got != first {
		t.Error("a new assertion before half the lifetime passed")
	}
	clock.Advance(time.Nanosecond)
	second := get(p, aud)
	if second == first {
		t.Fatal("the same assertion after half its lifetime")
	}
	set, _, _ := fetchJWKS(t, s)
	_, claims := verify(t, set, second)
	if got, want := int64(claims["iat"].(float64)), clock.Now().Unix(); got != want {
		t.Errorf("the new assertion's iat = %d, want now (%d)", got, want)
	}
	if got := get(p, aud); got != second {
		t.Error("the new assertion is not reused")
	}
}

// TestConcurrentMissesSignOnce: requests that miss for one key while it is
// being signed wait for that signing instead of signing themselves. The
// bubble's synctest.Wait returns once every goroutine is blocked: one in the
// signing (held by the hook), the others waiting for it.
func TestConcurrentMissesSignOnce(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := newSigner(t, Options{})
		release := make(chan struct{})
		var mu sync.Mutex
		signs := 0
		s.signHook = func() {
			mu.Lock()
			signs++
			mu.Unlock()
			<-release
		}
		const n = 16
		got := make([]string, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				jws, err := s.Assertion(Principal{Subject: "u", Scopes: []string{"s"}}, "https://up")
				if err != nil {
					t.Error(err)
				}
				got[i] = jws
			})
		}
		synctest.Wait()
		mu.Lock()
		if signs != 1 {
			t.Errorf("%d concurrent misses signed %d times, want once", n, signs)
		}
		mu.Unlock()
		close(release)
		wg.Wait()
		for i := range got {
			if got[i] != got[0] {
				t.Fatalf("caller %d got another assertion", i)
			}
		}
	})
}

// TestInvalidPrincipal: what Assertion refuses to sign, with ErrInvalidPrincipal.
func TestInvalidPrincipal(t *testing.T) {
	t.Parallel()
	s := newSigner(t, Options{})
	many := make([]string, 65)
	for i := range many {
		many[i] = fmt.Sprint("s", i)
	}
	long := strings.Repeat("x", 1025)
	cases := []struct {
		name string
		p    Principal
		aud  string
	}{
		{"no subject", Principal{ClientID: "c"}, "https://up"},
		{"no audience", Principal{Subject: "u"}, ""},
		{"empty scope", Principal{Subject: "u", Scopes: []string{"a", ""}}, "https://up"},
		{"scope with a quote", Principal{Subject: "u", Scopes: []string{`a"b`}}, "https://up"},
		{"65 scopes", Principal{Subject: "u", Scopes: many}, "https://up"},
		{"long subject", Principal{Subject: long}, "https://up"},
		{"long client", Principal{Subject: "u", ClientID: long}, "https://up"},
		{"long audience", Principal{Subject: "u"}, "https://up/" + long},
	}
	for _, tc := range cases {
		if _, err := s.Assertion(tc.p, tc.aud); !errors.Is(err, ErrInvalidPrincipal) {
			t.Errorf("%s: error %v, want ErrInvalidPrincipal", tc.name, err)
		}
	}
	if _, err := s.Assertion(Principal{Subject: "u", Scopes: many[:64]}, "https://up"); err != nil {
		t.Errorf("64 scopes: %v", err)
	}
}

// TestCacheBounded: signing for many callers keeps at most MaxEntries.
func TestCacheBounded(t *testing.T) {
	t.Parallel()
	s := newSigner(t, Options{MaxEntries: 50})
	for i := range 1000 {
		if _, err := s.Assertion(Principal{Subject: fmt.Sprint("user-", i)}, "https://up"); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.cache.Len(); n > 50 {
		t.Errorf("the cache holds %d assertions, want at most 50", n)
	}
}

// TestEphemeralKey: without a key file a P-256 key is generated, a new one
// per Signer, and New warns that it suits one replica only.
func TestEphemeralKey(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	s := newSigner(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if !s.Ephemeral() || s.Algorithm() != "ES256" {
		t.Errorf("Ephemeral() = %v, Algorithm() = %s; want true, ES256", s.Ephemeral(), s.Algorithm())
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "one replica only") {
		t.Errorf("no warning about the generated key in %q", logs.String())
	}
	if other := newSigner(t, Options{}); other.KeyID() == s.KeyID() {
		t.Error("two signers generated the same key")
	}
	jws, err := s.Assertion(Principal{Subject: "u"}, "https://up")
	if err != nil {
		t.Fatal(err)
	}
	set, _, _ := fetchJWKS(t, s)
	verify(t, set, jws)
}

// TestRotation: an assertion signed with the old key before a rotation
// verifies against the new signer's JWKS when previous_key_files lists the
// old key (its private or public file), and not otherwise; the new key is
// listed first and signs.
func TestRotation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		old, new func(tb testing.TB) []byte
		pub      func(tb testing.TB) []byte
	}{
		{"EC to EC", func(tb testing.TB) []byte { return pkcs8PEM(tb, ecKey()) }, func(tb testing.TB) []byte { return pkcs8PEM(tb, ecKey2()) },
			func(tb testing.TB) []byte { return publicPEM(tb, &ecKey().PublicKey) }},
		{"RSA to EC", func(tb testing.TB) []byte { return pkcs1PEM(rsaKey()) }, func(tb testing.TB) []byte { return sec1PEM(tb, ecKey2()) },
			func(tb testing.TB) []byte { return publicPEM(tb, &rsaKey().PublicKey) }},
		{"RSA to RSA", func(tb testing.TB) []byte { return pkcs8PEM(tb, rsaKey()) }, func(tb testing.TB) []byte { return pkcs1PEM(rsaKey2()) },
			func(tb testing.TB) []byte { return publicPEM(tb, &rsaKey().PublicKey) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			oldFile := writeFile(t, "old.pem", tc.old(t))
			old := newSigner(t, Options{KeyFile: oldFile})
			inFlight, err := old.Assertion(Principal{Subject: "u"}, "https://up")
			if err != nil {
				t.Fatal(err)
			}
			newFile := writeFile(t, "new.pem", tc.new(t))

			without := newSigner(t, Options{KeyFile: newFile})
			set, _, _ := fetchJWKS(t, without)
			if _, _, err := tryVerify(set, inFlight); !errors.Is(err, errUnknownKID) {
				t.Errorf("without previous_key_files: %v, want an unknown kid", err)
			}

			for _, prev := range []string{oldFile, writeFile(t, "old.pub.pem", tc.pub(t))} {
				s := newSigner(t, Options{KeyFile: newFile, PreviousKeyFiles: []string{prev}})
				set, _, _ := fetchJWKS(t, s)
				verify(t, set, inFlight)
				if len(set.Keys) != 2 || set.Keys[0].KeyID != s.KeyID() || set.Keys[1].KeyID != old.KeyID() {
					t.Errorf("JWKS kids %v, want [%s %s]", kids(set), s.KeyID(), old.KeyID())
				}
				fresh, err := s.Assertion(Principal{Subject: "u"}, "https://up")
				if err != nil {
					t.Fatal(err)
				}
				if h, _ := verify(t, set, fresh); h["kid"] != s.KeyID() {
					t.Errorf("signed with kid %v, want the new key's %s", h["kid"], s.KeyID())
				}
			}
		})
	}
}

// TestPreviousKeyDeduplicated: listing the signing key (or a key twice) in
// previous_key_files publishes it once.
func TestPreviousKeyDeduplicated(t *testing.T) {
	t.Parallel()
	cur := writeFile(t, "cur.pem", pkcs8PEM(t, ecKey()))
	old := writeFile(t, "old.pem", pkcs8PEM(t, ecKey2()))
	s := newSigner(t, Options{KeyFile: cur, PreviousKeyFiles: []string{cur, old, old}})
	set, _, _ := fetchJWKS(t, s)
	if len(set.Keys) != 2 {
		t.Errorf("JWKS kids %v, want 2 keys", kids(set))
	}
}

func kids(set jose.JSONWebKeySet) []string {
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.KeyID)
	}
	return out
}
