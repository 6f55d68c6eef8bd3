package faults

import (
	"slices"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/bench/internal/devauth"
	"github.com/mcpauthz/mcpauthz/bench/internal/tokens"
)

// TestRedisFaultsUnderLoad breaks the Redis two authz replicas share in the
// middle of a load that keeps bringing new tokens (so introspection results
// are being written to and read from L2), and repairs it 1.5s later: killed
// (SIGKILL, its data lost) then restarted, or frozen (SIGSTOP: connections
// open, nothing answered) then thawed. Rule: not one request fails (Redis is a
// cache: any Redis error or timeout is a miss), and once Redis is back the
// replicas share results through it again.
func TestRedisFaultsUnderLoad(t *testing.T) {
	tests := []struct {
		name           string
		break_, repair func(c *cluster) error
	}{
		{"killed and restarted",
			func(c *cluster) error { c.redis.Stop(); return nil },
			func(c *cluster) error { return c.redis.Start() }},
		{"frozen and thawed",
			func(c *cluster) error { return c.redis.Pause() },
			func(c *cluster) error { return c.redis.Resume() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { redisFault(t, tt.name, tt.break_, tt.repair) })
	}
}

func redisFault(t *testing.T, name string, break_, repair func(c *cluster) error) {
	c := startCluster(t, options{replicas: 2, gateways: 1, redis: true})
	const conc = 6
	src := tokens.NewChurn(c.mintN(t, 24), c.mintN(t, 240))
	op := mcpOp(c.gateways[0], conc, src)

	a, b := c.authz[0], c.authz[1]
	if !c.sharedViaL2(t, a, b) {
		t.Fatal("replicas do not share results through Redis even before the fault")
	}

	var broken, repaired time.Time
	recovered := make(chan time.Duration, 1)
	events := []event{
		{at: time.Second, do: func() {
			if err := break_(c); err != nil {
				t.Errorf("breaking redis: %v", err)
			}
			broken = time.Now()
		}},
		{at: 2500 * time.Millisecond, do: func() {
			if err := repair(c); err != nil {
				t.Errorf("repairing redis: %v", err)
			}
			repaired = time.Now()
			// Measure, under the load, how long until L2 is shared again.
			go func() {
				for time.Since(repaired) < 10*time.Second {
					if c.sharedViaL2(t, a, b) {
						recovered <- time.Since(repaired)
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
	t.Logf("figure: redis %s: %s; Redis out %v; %d new tokens during the run",
		name, summary(res), repaired.Sub(broken).Round(time.Millisecond), src.Added())
	if res.Requests < 100 {
		t.Fatalf("only %d requests: the load did not run", res.Requests)
	}
	if res.Errors() != 0 {
		t.Errorf("%d of %d requests failed (%v); want none: a Redis fault must not fail a request", res.Errors(), res.Requests, res.Outcomes)
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
		t.Fatal("replicas did not share results through Redis again within 10s of its repair")
	}
	t.Logf("figure: redis %s: L2 shared again %v after the repair, under load; %v Redis errors counted", name, rec.Round(time.Millisecond), redisErrs)
}

// sharedViaL2 reports whether a token replica a introspects is answered by
// replica b without another introspection. Each attempt uses a fresh token,
// since attempts made while clients reconnect fall back to introspection.
// It may run outside the test's goroutine.
func (c *cluster) sharedViaL2(t *testing.T, a, b *replica) bool {
	tok, err := c.dev.Mint(t.Context(), devauth.TokenRequest{Email: aliceEmail, Scopes: []string{scopeUser}, Resource: c.resource})
	if err != nil {
		t.Error(err)
		return false
	}
	c.remember(tok)
	if res, err := c.authorize(t.Context(), a, tok); err != nil || !res.GetAllowed() {
		t.Errorf("%s: Authorize = %v, %v", a.name, res, err)
		return false
	}
	before, err := c.dev.Stats(t.Context())
	if err != nil {
		t.Error(err)
		return false
	}
	if res, err := c.authorize(t.Context(), b, tok); err != nil || !res.GetAllowed() {
		t.Errorf("%s: Authorize = %v, %v", b.name, res, err)
		return false
	}
	after, err := c.dev.Stats(t.Context())
	if err != nil {
		t.Error(err)
		return false
	}
	return after.Introspections == before.Introspections
}
