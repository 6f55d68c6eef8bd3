package faults

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/bench/internal/load"
	"github.com/mcpauthz/mcpauthz/bench/internal/target"
	"github.com/mcpauthz/mcpauthz/bench/internal/tokens"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// wantUnavailable fails t unless r is the gateway's outage answer: 503 with
// Retry-After. A 401 would make clients throw their good tokens away.
func wantUnavailable(t *testing.T, what string, r reply) {
	t.Helper()
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Errorf("%s: %s (Retry-After %q, WWW-Authenticate %q); want 503 with Retry-After",
			what, r.outcome, r.header.Get("Retry-After"), r.header.Get("WWW-Authenticate"))
	}
}

// TestAuthorizationServerDown breaks devauth's introspection and user API in
// three ways — connections closed without an answer ("down"), 500s, and 200s
// whose body is not JSON ("garbage") — while tokens authz has cached are under
// load. Rule: cached tokens keep working until their cache entry ends
// (CACHE_TTL, here 3s); new tokens, and cached ones after that, get 503 with
// Retry-After, never 401; once the authorization server answers again
// everything works without a restart (failures are never cached).
func TestAuthorizationServerDown(t *testing.T) {
	t.Parallel()
	const cacheTTL = 3 * time.Second
	c := startCluster(t, options{replicas: 1, gateways: 1, authzEnv: []string{"CACHE_TTL=3s", "INTROSPECTION_TIMEOUT=500ms"}})
	g := c.gateways[0]
	for _, mode := range []string{"down", "error500", "garbage"} {
		t.Run(mode, func(t *testing.T) {
			ctx := t.Context()
			warm := c.mintN(t, 16)
			warmed := time.Now()
			for _, tok := range warm {
				if r := call(ctx, g, tok); r.outcome != load.OK {
					t.Fatalf("warming: %s", r.outcome)
				}
			}
			c.fault(t, mode, 0)
			defer c.fault(t, "ok", 0)

			before := c.introspections(t)
			res := runLoad(ctx, 4, 0, time.Second, mcpOp(g, 4, tokens.NewCycle(warm)).Do)
			if time.Since(warmed) >= cacheTTL {
				t.Fatalf("the load ended %v after warming, past CACHE_TTL: the machine is too slow for this test", time.Since(warmed))
			}
			if res.Requests == 0 || res.Errors() != 0 {
				t.Errorf("cached tokens during the outage: %s; want every request ok", summary(res))
			}
			if n := c.introspections(t) - before; n != 0 {
				t.Errorf("cached tokens caused %d introspections", n)
			}

			const probes = 5
			before = c.introspections(t)
			var worst time.Duration
			for range probes {
				r := call(ctx, g, c.mint(t, nil))
				wantUnavailable(t, "new token during the outage", r)
				worst = max(worst, r.elapsed)
			}
			perRequest := float64(c.introspections(t)-before) / probes
			if perRequest > 1 {
				t.Errorf("%.1f introspections per refused request; want 1: retrying an outage of the AS on every replica multiplies its load", perRequest)
			}

			time.Sleep(time.Until(warmed.Add(cacheTTL + 300*time.Millisecond)))
			for _, tok := range warm[:4] {
				wantUnavailable(t, "cached token after CACHE_TTL during the outage", call(ctx, g, tok))
			}

			c.fault(t, "ok", 0)
			fresh := c.mint(t, nil)
			took := testenv.Eventually(t, 5*time.Second, "recovery", func() bool { return call(ctx, g, fresh).outcome == load.OK })
			for _, tok := range warm[:4] {
				if r := call(ctx, g, tok); r.outcome != load.OK {
					t.Errorf("cached token after recovery: %s", r.outcome)
				}
			}
			t.Logf("figure: AS %s: cached tokens under load %s; new tokens 503 in at most %v, %.1f introspections per refused request; recovered %v after the AS returned",
				mode, summary(res), worst.Round(time.Millisecond), perRequest, took.Round(time.Millisecond))
		})
	}
}

// TestSlowAuthorizationServer makes every introspection outlast
// INTROSPECTION_TIMEOUT (300ms): devauth either never answers ("hang") or
// answers after 1.5s. Rule: a request with a token authz has not cached ends
// with 503 once the timeout passes — its latency is bounded by the timeouts,
// not by the authorization server — and nothing piles up: authz's and the
// gateway's goroutines and open descriptors return to where they were.
func TestSlowAuthorizationServer(t *testing.T) {
	const introspectionTimeout = 300 * time.Millisecond
	c := startCluster(t, options{replicas: 1, gateways: 1,
		authzEnv:   []string{"INTROSPECTION_TIMEOUT=300ms"},
		gatewayEnv: []string{"AUTHZ_TIMEOUT=2s"}})
	g, az := c.gateways[0], c.authz[0]
	const conc = 8

	// Open the pools the way normal traffic does, then take the baseline. The
	// load keeps one client (one keep-alive connection per worker) throughout,
	// so the gateway's connection count changes only if the gateway leaks.
	hc := target.NewHTTPClient(conc)
	warm := c.mintN(t, conc)
	runLoad(t.Context(), conc, 0, 300*time.Millisecond, (&target.MCPCall{URL: g.mcp(), Client: hc, Tokens: tokens.NewCycle(warm)}).Do)
	time.Sleep(200 * time.Millisecond)
	type usage struct {
		authzG, gatewayG   float64
		authzFD, gatewayFD int
	}
	measure := func() usage {
		return usage{
			authzG:    metric(t, az.metricsURL, "go_goroutines"),
			gatewayG:  metric(t, g.metricsURL, "go_goroutines"),
			authzFD:   openFDs(t, az.proc.Pid()),
			gatewayFD: openFDs(t, g.proc.Pid()),
		}
	}
	base := measure()

	for _, tc := range []struct {
		mode    string
		latency time.Duration
	}{{"hang", 0}, {"ok", 1500 * time.Millisecond}} {
		name := tc.mode
		if tc.latency > 0 {
			name = "slow"
		}
		t.Run(name, func(t *testing.T) {
			fresh := tokens.NewOnce(c.mintN(t, 200))
			c.fault(t, tc.mode, tc.latency)
			var peak usage
			res := runLoad(t.Context(), conc, 0, 2*time.Second, (&target.MCPCall{URL: g.mcp(), Client: hc, Tokens: fresh}).Do,
				event{at: time.Second, do: func() {
					// Mid-load: sample from the load goroutine, without t.Fatal.
					peak.authzFD, _ = countFDs(az.proc.Pid())
					peak.gatewayFD, _ = countFDs(g.proc.Pid())
				}})
			c.fault(t, "ok", 0)
			if res.Requests == 0 || res.Outcomes["http 503"] != res.Requests {
				t.Errorf("new tokens with a slow AS: %s; want every request 503", summary(res))
			}
			// The bound: authz gives up on the AS after INTROSPECTION_TIMEOUT and
			// answers UNAVAILABLE without inviting a retry, so the gateway answers
			// 503 then; AUTHZ_TIMEOUT (2s) would bound it anyway.
			if max := res.Latency.Max(); max > introspectionTimeout+500*time.Millisecond {
				t.Errorf("slowest request took %v; want it bounded by INTROSPECTION_TIMEOUT %v (+0.5s)", max, introspectionTimeout)
			}
			if min := res.Latency.Min(); min < introspectionTimeout*9/10 {
				t.Errorf("fastest request took %v, under INTROSPECTION_TIMEOUT %v: the AS was not slow, the test proved nothing", min, introspectionTimeout)
			}

			// Connections to the AS that timed out are closed, and the handlers
			// that waited are gone: give the processes a moment, then compare.
			var after usage
			settle := time.Now()
			for {
				after = measure()
				ok := after.authzG <= base.authzG+10 && after.gatewayG <= base.gatewayG+10 &&
					after.authzFD <= base.authzFD+8 && after.gatewayFD <= base.gatewayFD+8
				if ok {
					break
				}
				if time.Since(settle) > 5*time.Second {
					t.Errorf("5s after the load: goroutines authz %v gateway %v, fds authz %d gateway %d; baseline %v %v %d %d (+10 goroutines, +8 fds allowed)",
						after.authzG, after.gatewayG, after.authzFD, after.gatewayFD, base.authzG, base.gatewayG, base.authzFD, base.gatewayFD)
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			settled := time.Since(settle)
			t.Logf("figure: AS %s: %s; %d tokens; goroutines authz %v->%v gateway %v->%v; fds authz %d->(mid-load %d)->%d gateway %d->(mid-load %d)->%d; settled in %v",
				name, summary(res), fresh.Used(), base.authzG, after.authzG, base.gatewayG, after.gatewayG,
				base.authzFD, peak.authzFD, after.authzFD, base.gatewayFD, peak.gatewayFD, after.gatewayFD, settled.Round(time.Millisecond))

			// And the service is fine afterwards.
			if r := call(context.Background(), g, c.mint(t, nil)); r.outcome != load.OK {
				t.Errorf("after the slow AS recovered: %s", r.outcome)
			}
		})
	}
}
