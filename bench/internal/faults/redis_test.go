package faults

import (
	"slices"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/bench/internal/devauth"
	"github.com/mcpauthz/mcpauthz/bench/internal/tokens"
)

// TestRedisRestartUnderLoad kills the Redis two authz replicas share in the
// middle of a load that keeps bringing new tokens (so introspection results
// are being written to and read from L2), and restarts it 1.5s later. Rule:
// not one request fails (Redis is a cache: any Redis error is a miss), and
// once Redis is back the replicas share results through it again.
func TestRedisRestartUnderLoad(t *testing.T) {
	c := startCluster(t, options{replicas: 2, gateways: 1, redis: true})
	const conc = 6
	src := tokens.NewChurn(c.mintN(t, 24), c.mintN(t, 240))
	op := mcpOp(c.gateways[0], conc, src)

	a, b := c.authz[0], c.authz[1]
	// sharedViaL2 reports whether a token replica a introspects is answered by
	// replica b without another introspection. Each attempt uses a fresh
	// token, since attempts made while clients reconnect fall back to
	// introspection.
	sharedViaL2 := func() bool {
		tok, err := c.dev.Mint(t.Context(), devauth.TokenRequest{Email: aliceEmail, Scopes: []string{scopeUser}, Resource: c.resource})
		if err != nil {
			t.Error(err)
			return false
		}
		c.remember(tok)
		if res, err := c.authorize(t.Context(), a, tok); err != nil || !res.GetAllowed() {
			t.Errorf("replica 1: Authorize = %v, %v", res, err)
			return false
		}
		before, err := c.dev.Stats(t.Context())
		if err != nil {
			t.Error(err)
			return false
		}
		if res, err := c.authorize(t.Context(), b, tok); err != nil || !res.GetAllowed() {
			t.Errorf("replica 2: Authorize = %v, %v", res, err)
			return false
		}
		after, err := c.dev.Stats(t.Context())
		if err != nil {
			t.Error(err)
			return false
		}
		return after.Introspections == before.Introspections
	}
	if !sharedViaL2() {
		t.Fatal("replicas do not share results through Redis even before the fault")
	}

	var killed, restarted time.Time
	recovered := make(chan time.Duration, 1)
	events := []event{
		{at: time.Second, do: func() { c.redis.Stop(); killed = time.Now() }},
		{at: 2500 * time.Millisecond, do: func() {
			if err := c.redis.Start(); err != nil {
				t.Errorf("restarting redis: %v", err)
			}
			restarted = time.Now()
			// Measure, under the load, how long until L2 is shared again.
			go func() {
				for time.Since(restarted) < 10*time.Second {
					if sharedViaL2() {
						recovered <- time.Since(restarted)
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
				recovered <- -1
			}()
		}},
	}
	// New tokens every 100ms: misses keep reaching L2 (and, while it is
	// down, the authorization server).
	for at := time.Duration(0); at < 4*time.Second; at += 100 * time.Millisecond {
		events = append(events, event{at: at, do: func() { src.Rotate(3) }})
	}
	slices.SortStableFunc(events, func(a, b event) int { return int(a.at - b.at) })

	res := runLoad(t.Context(), conc, 500*time.Millisecond, 4*time.Second, op.Do, events...)
	t.Logf("figure: redis restart: %s; Redis down %v; %d new tokens during the run",
		summary(res), restarted.Sub(killed).Round(time.Millisecond), src.Added())
	if res.Requests < 100 {
		t.Fatalf("only %d requests: the load did not run", res.Requests)
	}
	if res.Errors() != 0 {
		t.Errorf("%d of %d requests failed (%v); want none: a Redis outage must not fail a request", res.Errors(), res.Requests, res.Outcomes)
	}
	var redisErrs float64
	for _, r := range c.authz {
		redisErrs += metric(t, r.metricsURL, "authz_redis_errors_total")
	}
	if redisErrs == 0 {
		t.Error("authz counted no Redis error: the outage was not felt, so the test proved nothing")
	}

	rec := <-recovered
	if rec < 0 {
		t.Fatal("replicas did not share results through Redis again within 10s of its restart")
	}
	t.Logf("figure: redis restart: L2 shared again %v after the restart, under load; %v Redis errors counted", rec.Round(time.Millisecond), redisErrs)
}
