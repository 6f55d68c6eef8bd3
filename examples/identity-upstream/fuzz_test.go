package main

import (
	"strings"
	"testing"
	"time"
)

// FuzzVerify feeds arbitrary header values to the verifier: it must never
// panic, and it may accept only what the gateway's key signed (the seeds'
// subject), never a forgery built from pieces of them.
func FuzzVerify(f *testing.F) {
	c := newClock()
	es, rs := esKey(), rsKey()
	js := newJWKSServer(f, es, rs)
	v := newTestVerifier(f, js.URL, c)
	good := claimsAt(c.Now())
	for _, seed := range []string{
		es.sign(f, good, nil),
		rs.sign(f, good, nil),
		es.sign(f, with(good, "aud", []string{testAudience, "x"}), nil),
		rogueKey().sign(f, good, nil),
		unsigned(map[string]any{"alg": "none", "typ": "JWT", "kid": es.kid}, good, nil),
		hs256WithPublicKey(f, es, good),
		"", ".", "..", "a.b.c", "e30.e30.", strings.Repeat("A", 100),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, assertion string) {
		id, err := v.Verify(t.Context(), assertion)
		if err != nil {
			return
		}
		if id.Subject != "user-1" || id.ClientID != "client-1" || id.ExpiresAt.Sub(c.Now()) > 5*time.Minute {
			t.Fatalf("accepted a forged identity %+v from %q", id, assertion)
		}
	})
}
