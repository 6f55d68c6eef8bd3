package main

import (
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
)

func newTestVerifier(tb testing.TB, jwksURL string, c *clock) *Verifier {
	tb.Helper()
	v := NewVerifier(jwksURL, testIssuer, testAudience)
	v.now = c.Now
	return v
}

// TestVerify: what the verifier accepts and refuses, each refusal with a
// reason that names what is wrong.
func TestVerify(t *testing.T) {
	t.Parallel()
	c := newClock()
	now := c.Now()
	es, rs, rogue := esKey(), rsKey(), rogueKey()
	js := newJWKSServer(t, es, rs)
	good := claimsAt(now)
	wantID := &Identity{Subject: "user-1", ClientID: "client-1", Scopes: []string{"read:user_data", "openid"}, ExpiresAt: now.Add(5 * time.Minute)}

	// A token re-signed by a key the gateway does not have, under the
	// gateway's kid.
	impostor := &gatewayKey{priv: rogue.priv, alg: jose.ES256, kid: es.kid}
	tampered := func() string {
		parts := strings.Split(es.sign(t, good, nil), ".")
		other := strings.Split(es.sign(t, with(good, "sub", "admin"), nil), ".")
		return parts[0] + "." + other[1] + "." + parts[2]
	}()

	cases := []struct {
		name    string
		token   string
		wantErr string // "" to accept
		want    *Identity
	}{
		{"ES256", es.sign(t, good, nil), "", wantID},
		{"RS256", rs.sign(t, good, nil), "", wantID},
		{"audience as a list", es.sign(t, with(good, "aud", []string{"other", testAudience}), nil), "", wantID},
		{"no scopes", es.sign(t, with(good, "scope", ""), nil), "", &Identity{Subject: "user-1", ClientID: "client-1", Scopes: []string{}, ExpiresAt: wantID.ExpiresAt}},
		{"expired within the leeway", es.sign(t, with(good, "iat", now.Add(-5*time.Minute-10*time.Second).Unix(), "exp", now.Add(-10*time.Second).Unix()), nil), "",
			&Identity{Subject: "user-1", ClientID: "client-1", Scopes: wantID.Scopes, ExpiresAt: now.Add(-10 * time.Second)}},

		{"missing", "", "no X-Mcpauthz-Identity header", nil},
		{"not a JWS", "not.a.jws", "malformed assertion", nil},
		{"too large", strings.Repeat("a", maxAssertionBytes+1), "too large", nil},
		{"expired", es.sign(t, with(good, "iat", now.Add(-6*time.Minute).Unix(), "exp", now.Add(-time.Minute).Unix()), nil), "expired", nil},
		{"issued in the future", es.sign(t, with(good, "iat", now.Add(2*time.Minute).Unix(), "exp", now.Add(7*time.Minute).Unix()), nil), "future", nil},
		{"wrong audience", es.sign(t, with(good, "aud", "http://other.example.com/mcp"), nil), "audience", nil},
		{"no audience", es.sign(t, with(good, "aud", nil), nil), "audience", nil},
		{"wrong issuer", es.sign(t, with(good, "iss", "https://evil.example.com"), nil), "issuer", nil},
		{"no exp", es.sign(t, with(good, "exp", nil), nil), "exp or iat missing", nil},
		{"no iat", es.sign(t, with(good, "iat", nil), nil), "exp or iat missing", nil},
		{"no sub", es.sign(t, with(good, "sub", nil), nil), "sub, exp or iat missing", nil},
		{"lives an hour", es.sign(t, with(good, "exp", now.Add(time.Hour).Unix()), nil), "longer than 10m", nil},
		{"unknown kid", rogue.sign(t, good, nil), "no key", nil},
		{"no kid", unsignedKID(t, es, good), "no key", nil},
		{"signed by another key under the gateway's kid", impostor.sign(t, good, nil), "bad signature", nil},
		{"payload swapped", tampered, "bad signature", nil},
		{"alg none", unsigned(map[string]any{"alg": "none", "typ": "JWT", "kid": es.kid}, good, nil), "malformed assertion", nil},
		{"HS256 keyed with the public key", hs256WithPublicKey(t, es, good), "malformed assertion", nil},
		{"ES256 header on the RSA key's kid", unsigned(map[string]any{"alg": "ES256", "typ": "JWT", "kid": rs.kid}, good, make([]byte, 64)), "is for RS256, not ES256", nil},
		{"typ missing", es.sign(t, good, map[string]any{"typ": nil}), `typ ""`, nil},
		{"typ at+jwt", es.sign(t, good, map[string]any{"typ": "at+jwt"}), `typ "at+jwt"`, nil},
	}
	v := newTestVerifier(t, js.URL, c)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := v.Verify(t.Context(), tc.token)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Verify: %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("identity (-want +got):\n%s", diff)
			}
		})
	}
}

// unsignedKID is a good ES256 token whose header has no kid.
func unsignedKID(t *testing.T, k *gatewayKey, claims map[string]any) string {
	t.Helper()
	noKID := &gatewayKey{priv: k.priv, alg: k.alg, kid: ""}
	return noKID.sign(t, claims, nil)
}

// TestJWKSRefetch: the JWKS is fetched once for many verifications; an
// unknown kid (the gateway rotated) fetches it again at once, but not twice
// within the floor; a stale JWKS is refetched, and while the gateway's JWKS
// is down the keys already known keep working.
func TestJWKSRefetch(t *testing.T) {
	t.Parallel()
	c := newClock()
	old, next, rogue := esKey(), nextKey(), rogueKey()
	js := newJWKSServer(t, old)
	v := newTestVerifier(t, js.URL, c)
	verify := func(k *gatewayKey) error {
		_, err := v.Verify(t.Context(), k.sign(t, claimsAt(c.Now()), nil))
		return err
	}
	fetches := func(want int64) {
		t.Helper()
		if got := js.fetches.Load(); got != want {
			t.Errorf("%d JWKS fetches, want %d", got, want)
		}
	}

	for range 3 {
		if err := verify(old); err != nil {
			t.Fatal(err)
		}
	}
	fetches(1)

	js.set(next, old) // the gateway restarted with a new key, the old one listed as previous
	c.Advance(refetchFloor)
	if err := verify(next); err != nil {
		t.Fatalf("the new key after a rotation: %v", err)
	}
	fetches(2)
	if err := verify(old); err != nil {
		t.Errorf("the previous key after a rotation: %v", err)
	}

	// Made-up kids cannot make the verifier hammer the gateway.
	for range 5 {
		if err := verify(rogue); err == nil {
			t.Fatal("accepted an unknown key")
		}
	}
	fetches(2)
	c.Advance(refetchFloor)
	if err := verify(rogue); err == nil {
		t.Fatal("accepted an unknown key")
	}
	fetches(3)

	// Stale keys are refetched; a failed refetch keeps the known ones.
	js.setDown(true)
	c.Advance(jwksMaxAge)
	if err := verify(next); err != nil {
		t.Errorf("a known key while the JWKS is down: %v", err)
	}
	fetches(4)
	if err := verify(rogue); err == nil || !strings.Contains(err.Error(), "no key") {
		t.Errorf("an unknown key while the JWKS is down, within the floor: %v", err)
	}
	fetches(4)
	c.Advance(refetchFloor)
	if err := verify(rogue); err == nil || !strings.Contains(err.Error(), "JWKS unavailable") {
		t.Errorf("an unknown key while the JWKS is down: %v", err)
	}
	fetches(5)

	// A key the gateway no longer publishes is refused once the JWKS is refetched.
	js.setDown(false)
	js.set(next)
	c.Advance(jwksMaxAge)
	if err := verify(old); err == nil {
		t.Error("accepted a key the gateway dropped")
	}
}
