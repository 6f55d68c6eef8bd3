package faults

import (
	"context"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/bench/internal/load"
	"github.com/mcpauthz/mcpauthz/bench/internal/target"
	"github.com/mcpauthz/mcpauthz/bench/internal/tokens"
)

// TestAuthzReplicaKilledUnderLoad kills (SIGKILL) one of the two authz
// replicas a gateway balances over, in the middle of a load. Rule: at most the
// requests in flight on the dead replica may fail — the gateway retries an
// UNAVAILABLE call on the other replica, and round robin stops picking the
// dead one once its connection breaks — and the survivor serves everything
// from then on.
func TestAuthzReplicaKilledUnderLoad(t *testing.T) {
	c := startCluster(t, options{replicas: 2, gateways: 1, redis: true})
	const conc = 8
	op := mcpOp(c.gateways[0], conc, tokens.NewCycle(c.mintN(t, 32)))
	survivor, victim := c.authz[0], c.authz[1]

	var before [2]float64
	var killed time.Time
	res := runLoad(t.Context(), conc, 500*time.Millisecond, 3*time.Second, op.Do,
		event{at: 1500 * time.Millisecond, do: func() {
			for i, r := range c.authz {
				n, err := authzCalls(r.metricsURL)
				if err != nil {
					t.Error(err)
				}
				before[i] = n
			}
			victim.proc.Kill()
			killed = time.Now()
		}})
	if before[0] == 0 || before[1] == 0 {
		t.Fatalf("authz calls per replica before the kill %v: want both replicas serving, or the test proves nothing", before)
	}
	failed := res.Errors()
	t.Logf("figure: authz replica killed: %s; %d failed; replica calls before the kill %v", summary(res), failed, before)
	if failed > conc {
		t.Errorf("%d requests failed (%v); want at most the %d that can be in flight", failed, res.Outcomes, conc)
	}
	after, err := authzCalls(survivor.metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	if after <= before[0] {
		t.Errorf("the surviving replica served no call after the kill (%v -> %v)", before[0], after)
	}

	// From then on, the survivor alone serves without a failure.
	res = runLoad(t.Context(), conc, 0, time.Second, op.Do)
	if res.Requests == 0 || res.Errors() != 0 {
		t.Errorf("after the kill: %s; want every request ok", summary(res))
	}
	t.Logf("figure: authz replica killed: %v later, on one replica: %s", time.Since(killed).Round(time.Millisecond), summary(res))
}

// TestGatewayKilledUnderLoad kills (SIGKILL) one of two gateways while
// clients are spread over both. Rule: the other gateway keeps serving every
// request — its own clients see no failure, and a client whose gateway died
// succeeds by retrying on the other one, as a load balancer in front of the
// gateways would; the gateways share no state, so nothing is lost.
func TestGatewayKilledUnderLoad(t *testing.T) {
	c := startCluster(t, options{replicas: 1, gateways: 2})
	const conc = 8
	src := tokens.NewCycle(c.mintN(t, 32))
	hc := target.NewHTTPClient(conc)
	gw := []*target.MCPCall{
		{URL: c.gateways[0].mcp(), Client: hc, Tokens: src},
		{URL: c.gateways[1].mcp(), Client: hc, Tokens: src},
	}
	var direct atomic.Int64 // requests the dead gateway failed
	// Worker w's home gateway is w%2; a request its home fails without an
	// answer (connection refused or reset) is sent once to the other.
	op := func(ctx context.Context, w int) string {
		home := w % 2
		name := []string{"gateway-1", "gateway-2"}[home]
		out := gw[home].Do(ctx, w)
		if out != "transport" {
			return name + " " + out
		}
		direct.Add(1)
		return name + " failed over, " + gw[1-home].Do(ctx, w)
	}
	res := runLoad(t.Context(), conc, 500*time.Millisecond, 3*time.Second, op,
		event{at: time.Second, do: c.gateways[1].proc.Kill})

	t.Logf("figure: gateway killed: %s; %d requests reached the dead gateway and were retried on the other", summary(res), direct.Load())
	if res.Outcomes["gateway-1 "+load.OK] == 0 || res.Outcomes["gateway-2 "+load.OK] == 0 {
		t.Fatalf("outcomes %v: want both gateways serving before the kill", res.Outcomes)
	}
	if direct.Load() == 0 {
		t.Error("no request reached the killed gateway: the kill was not felt, so the test proved nothing")
	}
	for label, n := range res.Outcomes {
		if !strings.HasSuffix(label, " "+load.OK) {
			t.Errorf("%d requests: %q; want every request answered ok by a live gateway", n, label)
		}
	}
}

// TestAuthzReplicaFrozenUnderLoad freezes (SIGSTOP) one of two authz replicas
// in the middle of a load: its connections stay open but nothing answers, the
// case a kill does not cover. Rule: calls routed to it fail by deadline
// (AUTHZ_TIMEOUT, 503) only until the gateway's keepalive ping to the silent
// connection goes unanswered (10s + 2s) and round robin drops the replica; from
// then on the survivor serves every request.
func TestAuthzReplicaFrozenUnderLoad(t *testing.T) {
	c := startCluster(t, options{replicas: 2, gateways: 1, redis: true})
	const conc = 8
	op := mcpOp(c.gateways[0], conc, tokens.NewCycle(c.mintN(t, 32)))
	victim := c.authz[1]
	t.Cleanup(func() { _ = victim.proc.Signal(syscall.SIGCONT) })

	var frozen time.Time
	res := runLoad(t.Context(), conc, 500*time.Millisecond, 6*time.Second, op.Do,
		event{at: time.Second, do: func() {
			if err := victim.proc.Signal(syscall.SIGSTOP); err != nil {
				t.Error(err)
			}
			frozen = time.Now()
		}})
	t.Logf("figure: authz replica frozen: %s; %d failed", summary(res), res.Errors())
	if res.Errors() == 0 {
		t.Errorf("no request failed while a replica was frozen: %v; the freeze did not reach the gateway's calls, so the test proves nothing", res.Outcomes)
	}

	// Past keepalive's detection (about 12s, plus margin for a loaded machine), the
	// frozen replica is out of the set.
	if wait := 15*time.Second - time.Since(frozen); wait > 0 {
		time.Sleep(wait)
	}
	res = runLoad(t.Context(), conc, 0, time.Second, op.Do)
	if res.Requests == 0 || res.Errors() != 0 {
		t.Errorf("%v after the freeze: %s; want every request ok (the frozen replica dropped by keepalive)", time.Since(frozen).Round(time.Millisecond), summary(res))
	}
	t.Logf("figure: authz replica frozen: %v later, on one replica: %s", time.Since(frozen).Round(time.Millisecond), summary(res))
}
