package app_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/faults"
	"github.com/mcpauthz/mcpauthz/internal/propelauthfake"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/metrics"
)

func mint(as *propelauthfake.Server) string {
	return as.MintToken(propelauthfake.TokenOptions{Subject: "user-1", Scopes: []string{"read:user_data"}, Audience: []string{resourceURL}})
}

func mustAllow(t testing.TB, inst *instance, tok string) {
	t.Helper()
	resp, err := inst.client.Authorize(t.Context(), authorizeReq(tok, "read:user_data"))
	if err != nil {
		t.Fatalf("Authorize: %v", err)
	}
	if !resp.GetAllowed() {
		t.Fatalf("Authorize denied: %v", resp.GetDenial())
	}
}

func lookups(inst *instance, tier, result string) float64 {
	return testutil.ToFloat64(inst.Metrics.CacheLookups.WithLabelValues(metrics.CacheToken, tier, result))
}

// TestSharedCacheAndInvalidation: two replicas on one Redis share introspection
// results, and InvalidateToken on one reaches the other's in-process tier.
func TestSharedCacheAndInvalidation(t *testing.T) {
	t.Parallel()
	as := newAS(t)
	rd := testenv.StartRedis(t)
	a := start(t, "shared-a", env(as, rd.URL(), nil))
	b := start(t, "shared-b", env(as, rd.URL(), nil))
	waitSubscribed(t, a, b)
	tok := mint(as)

	mustAllow(t, a, tok)
	mustAllow(t, b, tok)
	mustAllow(t, b, tok)
	if n := as.IntrospectionsOf(tok); n != 1 {
		t.Fatalf("introspections = %d, want 1: the second replica must answer from Redis", n)
	}
	if hits := lookups(b, metrics.TierL2, metrics.ResultHit); hits != 1 {
		t.Errorf("replica b L2 hits = %v, want 1", hits)
	}
	if hits := lookups(b, metrics.TierL1, metrics.ResultHit); hits != 1 {
		t.Errorf("replica b L1 hits = %v, want 1", hits)
	}
	// Redis holds the hashed key only.
	if v, err := rd.Do(t.Context(), "EXISTS", "mcpauthz:intro:"+hexKey(a, tok)); err != nil || v != ":1" {
		t.Errorf("EXISTS of the hashed key = %q, %v", v, err)
	}

	as.Revoke(tok)
	if _, err := a.client.InvalidateToken(t.Context(), &authzv1.InvalidateTokenRequest{Token: tok}); err != nil {
		t.Fatalf("InvalidateToken: %v", err)
	}
	eventually(t, 2*time.Second, "replica b to see the invalidation", func() bool {
		resp, err := b.client.Authorize(t.Context(), authorizeReq(tok))
		return err == nil && resp.GetDenial().GetReason() == authzv1.DenialReason_DENIAL_REASON_TOKEN_INACTIVE
	})
	resp, err := a.client.Authorize(t.Context(), authorizeReq(tok))
	if err != nil || resp.GetDenial().GetReason() != authzv1.DenialReason_DENIAL_REASON_TOKEN_INACTIVE {
		t.Errorf("replica a after invalidation: %v, %v", resp, err)
	}
	if n := testutil.ToFloat64(b.Metrics.Invalidations.WithLabelValues("remote")); n < 1 {
		t.Errorf("replica b remote invalidations = %v", n)
	}
}

// TestCoalescing: 100 concurrent first requests for one token make one
// introspection per replica.
func TestCoalescing(t *testing.T) {
	t.Parallel()
	as := newAS(t)
	// Slow introspection, so all requests overlap one fetch.
	as.SetFault(faults.OK, 150*time.Millisecond)
	rd := testenv.StartRedis(t)
	solo := start(t, "coalesce-solo", env(as, "", nil))
	a := start(t, "coalesce-a", env(as, rd.URL(), nil))
	b := start(t, "coalesce-b", env(as, rd.URL(), nil))
	waitSubscribed(t, a, b)

	burst := func(insts []*instance, tok string) {
		var wg sync.WaitGroup
		for _, inst := range insts {
			for range 100 {
				wg.Go(func() { mustAllow(t, inst, tok) })
			}
		}
		wg.Wait()
	}
	tok := mint(as)
	burst([]*instance{solo}, tok)
	if n := as.IntrospectionsOf(tok); n != 1 {
		t.Errorf("one replica: %d introspections for 100 concurrent requests, want 1", n)
	}
	if w := testutil.ToFloat64(solo.Metrics.CoalescedWaits.WithLabelValues(metrics.CacheToken)); w < 1 {
		t.Errorf("coalesced waits = %v, want some", w)
	}

	tok2 := mint(as)
	burst([]*instance{a, b}, tok2)
	if n := as.IntrospectionsOf(tok2); n < 1 || n > 2 {
		t.Errorf("two replicas: %d introspections for 2x100 concurrent requests, want 1 or 2 (at most one each)", n)
	}
}

// TestRedisOutage: Redis dying never fails a request; once it is back, replicas use
// it again, including the invalidation channel.
func TestRedisOutage(t *testing.T) {
	t.Parallel()
	as := newAS(t)
	rd := testenv.StartRedis(t)
	a := start(t, "outage-a", env(as, rd.URL(), nil))
	b := start(t, "outage-b", env(as, rd.URL(), nil))
	// Both replicas must have subscribed before the outage (under load the first
	// subscription can lag the start), or the resubscribe below proves nothing.
	waitSubscribed(t, a, b)
	cached := mint(as)
	mustAllow(t, a, cached)

	rd.Stop()
	fresh := mint(as)
	for range 5 {
		mustAllow(t, a, cached) // L1
		mustAllow(t, a, fresh)  // introspection, then L1
		mustAllow(t, b, cached) // Redis down and not in b's L1: introspection
	}
	if n := testutil.ToFloat64(a.Metrics.RedisErrors.WithLabelValues("get")) + testutil.ToFloat64(b.Metrics.RedisErrors.WithLabelValues("get")); n < 1 {
		t.Errorf("redis get errors = %v, want them counted", n)
	}
	// Invalidation cannot reach other replicas now: say so rather than pretend.
	_, err := a.client.InvalidateToken(t.Context(), &authzv1.InvalidateTokenRequest{Token: fresh})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("InvalidateToken with Redis down = %v, want Unavailable", err)
	}

	if err := rd.Start(); err != nil {
		t.Fatal(err)
	}
	// L2 is used again: a token a introspects is answered by b without another
	// introspection. Each attempt uses a fresh token, since attempts made while the
	// clients are still reconnecting fall back to introspection.
	eventually(t, 10*time.Second, "replicas to share Redis again", func() bool {
		tok := mint(as)
		mustAllow(t, a, tok)
		mustAllow(t, b, tok)
		return as.IntrospectionsOf(tok) == 1
	})
	// The subscription came back too (each resubscription flushes L1, since
	// invalidations published meanwhile were lost): an invalidation on a reaches b.
	waitSubscriptions(t, 2, a, b)
	tok := mint(as)
	mustAllow(t, a, tok)
	mustAllow(t, b, tok)
	as.Revoke(tok)
	eventually(t, 10*time.Second, "invalidation to work after the restart", func() bool {
		_, err := a.client.InvalidateToken(t.Context(), &authzv1.InvalidateTokenRequest{Token: tok})
		return err == nil
	})
	eventually(t, 2*time.Second, "replica b to drop the invalidated token", func() bool {
		resp, err := b.client.Authorize(t.Context(), authorizeReq(tok))
		return err == nil && !resp.GetAllowed()
	})
}

// TestRedisTimeout: a frozen Redis (connections open, nothing answers) costs a
// request at most REDIS_TIMEOUT before it goes on to introspection. The contrast
// replica, whose timeout is longer than the caller's deadline, shows the variable
// is what bounds the wait.
func TestRedisTimeout(t *testing.T) {
	t.Parallel()
	as := newAS(t)
	rd := testenv.StartRedis(t)
	short := start(t, "redis-timeout-short", env(as, rd.URL(), map[string]string{"REDIS_TIMEOUT": "50ms"}))
	long := start(t, "redis-timeout-long", env(as, rd.URL(), map[string]string{"REDIS_TIMEOUT": "10s"}))
	waitSubscribed(t, short, long)
	if err := rd.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rd.Resume() })

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	resp, err := short.client.Authorize(ctx, authorizeReq(mint(as), "read:user_data"))
	if err != nil || !resp.GetAllowed() {
		t.Fatalf("REDIS_TIMEOUT=50ms, Redis frozen: %v, %v; want allowed through introspection", resp, err)
	}
	if n := testutil.ToFloat64(short.Metrics.RedisErrors.WithLabelValues("get")); n != 1 {
		t.Errorf("redis get errors = %v, want 1", n)
	}

	ctx, cancel = context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if _, err := long.client.Authorize(ctx, authorizeReq(mint(as), "read:user_data")); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("REDIS_TIMEOUT=10s, Redis frozen, 2s deadline: %v; want DeadlineExceeded", err)
	}
}

// TestAuthorizationServerDown: an outage is UNAVAILABLE for tokens nobody has
// cached, never a denial, while cached tokens keep working.
func TestAuthorizationServerDown(t *testing.T) {
	t.Parallel()
	for _, fault := range []faults.Mode{faults.Error500, faults.Garbage, faults.Hang, faults.Down} {
		t.Run(string(fault), func(t *testing.T) {
			t.Parallel()
			as := newAS(t)
			inst := start(t, "asdown-"+string(fault), env(as, "", map[string]string{"INTROSPECTION_TIMEOUT": "300ms"}))
			cached := mint(as)
			mustAllow(t, inst, cached)
			as.SetFault(fault, 0)
			fresh := mint(as)
			resp, err := inst.client.Authorize(t.Context(), authorizeReq(fresh, "read:user_data"))
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("new token during outage = %v, %v; want Unavailable", resp, err)
			}
			// The answer names the token as every answer about it does.
			if ref := unavailableInfo(t, err, "AUTHORIZATION_SERVER_UNAVAILABLE"); ref != hexKey(inst, fresh) {
				t.Errorf("token_ref of the outage = %q, want the token's %q", ref, hexKey(inst, fresh))
			}
			mustAllow(t, inst, cached)
			as.SetFault(faults.OK, 0)
			mustAllow(t, inst, fresh) // errors are not cached
		})
	}
	t.Run("closed", func(t *testing.T) {
		t.Parallel()
		as := newAS(t)
		inst := start(t, "asdown-closed", env(as, "", nil))
		cached := mint(as)
		mustAllow(t, inst, cached)
		as.Close()
		if _, err := inst.client.Authorize(t.Context(), authorizeReq(mint(as))); status.Code(err) != codes.Unavailable {
			t.Fatalf("new token with the AS gone = %v; want Unavailable", err)
		}
		mustAllow(t, inst, cached)
	})
}
