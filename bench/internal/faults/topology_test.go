package faults

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/bench/internal/devauth"
	"github.com/mcpauthz/mcpauthz/bench/internal/load"
	"github.com/mcpauthz/mcpauthz/bench/internal/tokens"
	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// invalidationChannel is authz's default pub/sub channel
// (tokencache.DefaultChannel; internal to the authz module).
const invalidationChannel = "mcpauthz:invalidate"

// TestRedisFailoverUnderLoad kills the Redis primary that two authz replicas
// and the gateway's rate limiter share, in the middle of a load that keeps
// bringing new tokens, and lets the topology fail over on its own: a
// Sentinel-managed primary (one replica, three Sentinels) and the Cluster
// primary that serves the invalidation channel's slot (a 3-primary Cluster,
// one replica each). Rules: not one MCP request fails (cache misses are
// allowed), and after the failover the replicas share results through Redis
// again, an invalidation made at one replica reaches the other again, and
// the rate limiter decides in Redis again.
func TestRedisFailoverUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("fault injection under load takes about a minute: go test without -short (make test) runs it")
	}
	t.Parallel()
	type topology struct {
		url  string
		kill func(ctx context.Context) (wait func(ctx context.Context) error, err error)
	}
	tests := []struct {
		name  string
		start func(t *testing.T) topology
	}{
		{"sentinel", func(t *testing.T) topology {
			rs := testenv.StartRedisSentinel(t, 1, 3)
			return topology{rs.URL(), func(ctx context.Context) (func(context.Context) error, error) {
				old, err := rs.Primary(ctx)
				if err != nil {
					return nil, err
				}
				old.Stop()
				return func(ctx context.Context) error { _, err := rs.WaitPromoted(ctx, old); return err }, nil
			}}
		}},
		{"cluster", func(t *testing.T) topology {
			rc := testenv.StartRedisCluster(t, 3, 1)
			return topology{rc.URL(), func(ctx context.Context) (func(context.Context) error, error) {
				// The node every subscription is on: the subscribers must
				// move to the promoted replica.
				old, err := rc.PrimaryOf(ctx, invalidationChannel)
				if err != nil {
					return nil, err
				}
				old.Stop()
				return func(ctx context.Context) error {
					_, err := rc.WaitPromoted(ctx, invalidationChannel, old)
					return err
				}, nil
			}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			topo := tt.start(t)
			redisFailover(t, tt.name, topo.url, topo.kill)
		})
	}
}

func redisFailover(t *testing.T, name, redisURL string, kill func(context.Context) (func(context.Context) error, error)) {
	c := startCluster(t, options{replicas: 2, gateways: 1,
		authzEnv: []string{"REDIS_URL=" + redisURL},
		// A budget no test client reaches: a 429 would be a failed request.
		gatewayEnv: []string{"REDIS_URL=" + redisURL, "RATE_LIMIT=1000000/s"},
	})
	const conc = 6
	src := tokens.NewChurn(c.mintN(t, 24), c.mintN(t, 240))
	op := mcpOp(c.gateways[0], conc, src)
	a, b := c.authz[0], c.authz[1]
	if !c.sharedViaL2(t, a, b) {
		t.Fatal("replicas do not share results through Redis even before the fault")
	}
	if !c.invalidationReaches(t, a, b, 2*time.Second) {
		t.Fatal("an invalidation does not reach the other replica even before the fault")
	}
	g := c.gateways[0]
	limitedInRedis := func() float64 {
		return metric(t, g.metricsURL, "mcp_gateway_rate_limit_decisions_total", `store="redis"`)
	}
	if r := call(t.Context(), g, c.mint(t, nil)); r.outcome != load.OK || limitedInRedis() == 0 {
		t.Fatalf("a call through the gateway: %s; want ok, decided by the rate limiter in Redis", r.outcome)
	}

	// At 1s the primary dies. Once the topology has promoted a replica,
	// probes measure, under the load, how long until the replicas share
	// results through Redis again and an invalidation made at either replica
	// reaches the other again.
	type recovery struct {
		failover, shared, invalidation time.Duration
		err                            error
	}
	recovered := make(chan recovery, 1)
	var introStart, addedStart, introAtKill, addedAtKill int64
	stats := func() int64 {
		st, err := c.dev.Stats(t.Context())
		if err != nil {
			t.Error(err)
		}
		return st.Introspections
	}
	events := []event{{at: 0, do: func() {
		introStart, addedStart = stats(), int64(src.Added())
	}}, {at: time.Second, do: func() {
		introAtKill, addedAtKill = stats(), int64(src.Added())
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		wait, err := kill(ctx)
		killed := time.Now()
		if err != nil {
			cancel()
			recovered <- recovery{err: fmt.Errorf("killing the primary: %w", err)}
			return
		}
		go func() {
			defer cancel()
			if err := wait(ctx); err != nil {
				recovered <- recovery{err: err}
				return
			}
			promoted := time.Now()
			r := recovery{failover: promoted.Sub(killed)}
			until := func(what string, ok func() bool) time.Duration {
				for ctx.Err() == nil {
					if ok() {
						return time.Since(promoted)
					}
					time.Sleep(20 * time.Millisecond)
				}
				r.err = fmt.Errorf("%s: not again within 30s of the kill", what)
				return -1
			}
			r.shared = until("results shared through Redis", func() bool { return c.sharedViaL2(t, a, b) })
			r.invalidation = until("invalidation reaching the other replica", func() bool {
				return c.invalidationReaches(t, a, b, time.Second) && c.invalidationReaches(t, b, a, time.Second)
			})
			recovered <- r
		}()
	}}}
	for at := time.Duration(0); at < 5*time.Second; at += 100 * time.Millisecond {
		events = append(events, event{at: at, do: func() { src.Rotate(3) }})
	}
	slices.SortStableFunc(events, func(a, b event) int { return int(a.at - b.at) })
	res := runLoad(t.Context(), conc, 500*time.Millisecond, 5*time.Second, op.Do, events...)
	introEnd, addedEnd := c.introspections(t), int64(src.Added())
	// Introspections per new token, before the kill and from the kill on:
	// the cost of the misses the failover caused (one per token is the
	// least; the probes after the promotion add a few).
	t.Logf("figure: redis failover (%s): %s; introspections per new token: %.2f before the kill (%d for %d), %.2f from the kill on (%d for %d)",
		name, summary(res),
		float64(introAtKill-introStart)/float64(max(addedAtKill-addedStart, 1)), introAtKill-introStart, addedAtKill-addedStart,
		float64(introEnd-introAtKill)/float64(max(addedEnd-addedAtKill, 1)), introEnd-introAtKill, addedEnd-addedAtKill)
	if res.Requests < 100 {
		t.Fatalf("only %d requests: the load did not run", res.Requests)
	}
	if res.Errors() != 0 {
		t.Errorf("%d of %d requests failed (%v); want none: a Redis failover must not fail a request", res.Errors(), res.Requests, res.Outcomes)
	}
	rec := <-recovered
	if rec.err != nil {
		t.Fatal(rec.err)
	}

	// The rate limiter, which fell back to its in-process state while the
	// primary was gone, decides in Redis again.
	before := limitedInRedis()
	testenv.Eventually(t, 10*time.Second, "the rate limiter to decide in Redis again", func() bool {
		_ = call(t.Context(), g, c.mint(t, nil))
		return limitedInRedis() > before
	})
	var redisErrs float64
	for _, r := range c.authz {
		redisErrs += metric(t, r.metricsURL, "authz_redis_errors_total")
	}
	limiterErrs := metric(t, g.metricsURL, "mcp_gateway_rate_limit_redis_errors_total")
	if redisErrs == 0 {
		t.Error("authz counted no Redis error: the failover was not felt, so the test proved nothing")
	}
	t.Logf("figure: redis failover (%s): replica promoted %v after the primary died; after the promotion, under load: L2 shared again %v, invalidation across replicas again %v; Redis errors counted: authz %v, rate limiter %v",
		name, rec.failover.Round(time.Millisecond), rec.shared.Round(time.Millisecond), rec.invalidation.Round(time.Millisecond), redisErrs, limiterErrs)
}

// invalidationReaches reports whether a token that replicas from and to both
// allow, once revoked at the authorization server and invalidated at from, is
// refused by to within wait: to holds it in its L1, which only the message
// through Redis pub/sub clears. Each call uses a fresh token; errors on the
// way count as "not yet". It may run outside the test's goroutine.
func (c *cluster) invalidationReaches(t *testing.T, from, to *replica, wait time.Duration) bool {
	tok, err := c.dev.Mint(t.Context(), devauth.TokenRequest{Email: aliceEmail, Scopes: []string{scopeUser}, Resource: c.resource})
	if err != nil {
		t.Error(err)
		return false
	}
	c.remember(tok)
	for _, r := range []*replica{from, to} {
		if res, err := c.authorize(t.Context(), r, tok); err != nil || !res.GetAllowed() {
			return false
		}
	}
	if err := c.revokeErr(t.Context(), tok); err != nil {
		t.Error(err)
		return false
	}
	if _, err := from.client.InvalidateToken(t.Context(), &authzv1.InvalidateTokenRequest{Token: tok}); err != nil {
		return false
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		res, err := c.authorize(t.Context(), to, tok)
		if err == nil && !res.GetAllowed() {
			if got := res.GetDenial().GetReason(); got != authzv1.DenialReason_DENIAL_REASON_TOKEN_INACTIVE {
				t.Errorf("%s: denial %v, want TOKEN_INACTIVE", to.name, got)
			}
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}
