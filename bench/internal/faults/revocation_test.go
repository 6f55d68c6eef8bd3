package faults

import (
	"net/http"
	"strings"
	"testing"
	"time"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// refused reports whether r refuses tok as inactive.
func (c *cluster) refused(t *testing.T, r *replica, tok string) bool {
	t.Helper()
	res, err := c.authorize(t.Context(), r, tok)
	if err != nil {
		t.Fatalf("%s: Authorize: %v", r.name, err)
	}
	if res.GetAllowed() {
		return false
	}
	if got := res.GetDenial().GetReason(); got != authzv1.DenialReason_DENIAL_REASON_TOKEN_INACTIVE {
		t.Fatalf("%s: denial %v, want TOKEN_INACTIVE", r.name, got)
	}
	return true
}

// wantInvalidToken fails t unless every one of n calls through g is refused
// with 401 invalid_token (the gateway balances over every replica).
func (c *cluster) wantInvalidToken(t *testing.T, g *gatewayProc, tok string, n int) {
	t.Helper()
	for range n {
		r := call(t.Context(), g, tok)
		if r.status != http.StatusUnauthorized || !strings.Contains(r.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Fatalf("revoked token through the gateway: %s (WWW-Authenticate %q); want 401 invalid_token", r.outcome, r.header.Get("WWW-Authenticate"))
		}
	}
}

// TestRevocationWindow measures how long a revoked token stays usable.
//
// With InvalidateToken (after revoking at the authorization server), the
// rule is: the replica called refuses the token on its next request, every
// other replica as soon as the invalidation message reaches it through
// Redis pub/sub.
//
// Without it (the authorization server revoked the token and nobody told
// authz), the rule is: the token stays usable until its cache entry ends —
// at most CACHE_TTL (here 2s) after it was introspected, on every replica,
// since a replica filling its L1 from Redis keeps the L2 entry's expiry.
func TestRevocationWindow(t *testing.T) {
	t.Parallel()
	t.Run("InvalidateToken", func(t *testing.T) {
		c := startCluster(t, options{replicas: 2, gateways: 1, redis: true, decisionCache: true})
		a, b := c.authz[0], c.authz[1]
		var worst time.Duration
		var tok string
		const rounds = 5
		for range rounds {
			tok = c.mint(t, nil)
			c.mustAllow(t, a, tok)
			c.mustAllow(t, b, tok)
			c.revoke(t, tok)
			// Revoked at the authorization server, but cached everywhere: this
			// is the window InvalidateToken closes.
			c.mustAllow(t, b, tok)
			start := time.Now()
			if _, err := a.client.InvalidateToken(t.Context(), &authzv1.InvalidateTokenRequest{Token: tok}); err != nil {
				t.Fatalf("InvalidateToken: %v", err)
			}
			if !c.refused(t, a, tok) {
				t.Fatal("the replica that invalidated still allows the token")
			}
			testenv.Eventually(t, 2*time.Second, "the other replica to refuse the token", func() bool { return c.refused(t, b, tok) })
			worst = max(worst, time.Since(start))
		}
		c.wantInvalidToken(t, c.gateways[0], tok, 10)
		t.Logf("figure: revocation with InvalidateToken: refused on both replicas at most %v after the call (worst of %d)", worst.Round(10*time.Microsecond), rounds)
	})

	t.Run("CACHE_TTL", func(t *testing.T) {
		const cacheTTL = 2 * time.Second
		c := startCluster(t, options{replicas: 2, gateways: 1, redis: true, authzEnv: []string{"CACHE_TTL=2s"}, decisionCache: true})
		tok := c.mint(t, nil)
		asked := time.Now()
		c.mustAllow(t, c.authz[0], tok) // introspected: L1 here, L2 for the other
		cached := time.Now()
		c.mustAllow(t, c.authz[1], tok)
		time.Sleep(300 * time.Millisecond)
		c.revoke(t, tok)
		revoked := time.Now()

		// Poll both replicas until both refuse.
		var lastAllowed time.Time
		var refusedAt [2]time.Time
		for refusedAt[0].IsZero() || refusedAt[1].IsZero() {
			if time.Since(revoked) > cacheTTL+2*time.Second {
				t.Fatalf("the revoked token is still allowed %v after revocation (CACHE_TTL %v)", time.Since(revoked), cacheTTL)
			}
			for i, r := range c.authz {
				if !refusedAt[i].IsZero() {
					continue
				}
				if c.refused(t, r, tok) {
					refusedAt[i] = time.Now()
				} else {
					lastAllowed = time.Now()
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		for i, at := range refusedAt {
			// The entry ends CACHE_TTL after the introspection, which happened
			// between asked and cached.
			if at.Before(asked.Add(cacheTTL)) {
				t.Errorf("replica %d refused %v after the introspection, before CACHE_TTL %v: the cache did not serve the token", i+1, at.Sub(asked), cacheTTL)
			}
			if at.After(cached.Add(cacheTTL + 500*time.Millisecond)) {
				t.Errorf("replica %d refused %v after the introspection; want within CACHE_TTL %v (+0.5s)", i+1, at.Sub(asked), cacheTTL)
			}
		}
		if !lastAllowed.After(revoked) {
			t.Error("the token was never allowed after revocation: the window was not observed")
		}
		c.wantInvalidToken(t, c.gateways[0], tok, 10)
		t.Logf("figure: revocation without InvalidateToken (CACHE_TTL 2s): usable %v after revocation, refused on the replicas %v and %v after revocation (%v and %v after the introspection)",
			lastAllowed.Sub(revoked).Round(time.Millisecond), refusedAt[0].Sub(revoked).Round(time.Millisecond), refusedAt[1].Sub(revoked).Round(time.Millisecond),
			refusedAt[0].Sub(asked).Round(time.Millisecond), refusedAt[1].Sub(asked).Round(time.Millisecond))
	})
}
