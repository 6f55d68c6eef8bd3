package gateway_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/metrics"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/stacktest"
)

// sharedServerURL is the public URL two gateways of one deployment share, so a
// token's audience is valid at both.
const sharedServerURL = "http://127.0.0.1:8000"

// TestRateLimitSharedAcrossGateways: two gateways on one Redis share each
// principal's budget (RATE_LIMIT=6/m, burst 4): requests alternating between
// them are allowed four times in all, then get 429 with a sane Retry-After and a
// JSON body; another principal is unaffected; a denied request (403) spends
// nothing.
func TestRateLimitSharedAcrossGateways(t *testing.T) {
	t.Parallel()
	rd := testenv.StartRedis(t)
	env := map[string]string{"MCP_SERVER_URL": sharedServerURL, "REDIS_URL": rd.URL(), "RATE_LIMIT": "6/m", "RATE_LIMIT_BURST": "4"}
	gws := []*stacktest.Gateway{
		stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, env),
		stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, env),
	}
	endpoint := func(i int) string { return "http://" + gws[i%2].Addr + "/mcp" }
	resource := sharedServerURL + "/mcp"
	alice := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: resource})
	bob := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.BobEmail, Scopes: []string{scopeUser}, Resource: resource})

	// Insufficient scope (list_my_orgs needs read:org_data) and a bad token are
	// refused before the limiter: they must not spend alice's budget.
	for i := range 6 {
		res := post(t, endpoint(i), alice, callBody("list_my_orgs"))
		if res.StatusCode != http.StatusForbidden {
			t.Fatalf("list_my_orgs without read:org_data: %d, want 403", res.StatusCode)
		}
		res.Body.Close()
		res = post(t, endpoint(i), "not-a-valid-token", listBody())
		if res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("invalid token: %d, want 401", res.StatusCode)
		}
		res.Body.Close()
	}

	var codes []int
	for i := range 8 {
		res := post(t, endpoint(i), alice, listBody())
		codes = append(codes, res.StatusCode)
		if res.StatusCode == http.StatusOK {
			res.Body.Close()
			continue
		}
		if res.StatusCode != http.StatusTooManyRequests {
			res.Body.Close()
			t.Fatalf("request %d: status %d, want 200 or 429", i+1, res.StatusCode)
		}
		// One request per 10s once the burst is spent.
		ra, err := strconv.Atoi(res.Header.Get("Retry-After"))
		if err != nil || ra < 1 || ra > 10 {
			t.Errorf("request %d: Retry-After %q, want whole seconds in [1, 10]", i+1, res.Header.Get("Retry-After"))
		}
		if ct := res.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("429 Content-Type %q", ct)
		}
		if b := errorBody(t, res); b.Error != "rate_limited" || !strings.Contains(b.ErrorDescription, "6/m") {
			t.Errorf("429 body %+v", b)
		}
	}
	if want := "[200 200 200 200 429 429 429 429]"; fmtInts(codes) != want {
		t.Errorf("statuses of 8 requests alternating between two gateways: %v, want %s (one shared burst of 4)", codes, want)
	}
	if r := readRPC(t, post(t, endpoint(1), bob, listBody())); r.Error != nil {
		t.Errorf("bob after alice's budget is spent: %+v", r.Error)
	}
	for i, g := range gws {
		limited := counterValue(t, g.Metrics, "mcp_gateway_rate_limit_decisions_total", map[string]string{"decision": "limited", "store": "redis"})
		if limited != 2 {
			t.Errorf("gateway %d: rate_limit_decisions{limited,redis} = %v, want 2", i, limited)
		}
	}
}

// TestRateLimitRedisDown: with the limiter's Redis gone, requests are still
// served (the replica limits in process), and the failure is logged and counted.
func TestRateLimitRedisDown(t *testing.T) {
	t.Parallel()
	rd := testenv.StartRedis(t)
	g := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"REDIS_URL": rd.URL(), "RATE_LIMIT": "600/m"})
	token := mint(t, []string{scopeUser}, g.MCP())
	if r := readRPC(t, post(t, g.MCP(), token, listBody())); r.Error != nil {
		t.Fatalf("with Redis up: %+v", r.Error)
	}
	rd.Stop()
	for i := range 10 {
		if r := readRPC(t, post(t, g.MCP(), token, listBody())); r.Error != nil {
			t.Fatalf("request %d with Redis down: %+v", i+1, r.Error)
		}
	}
	if n := counterValue(t, g.Metrics, "mcp_gateway_rate_limit_redis_errors_total", nil); n < 1 {
		t.Errorf("rate_limit_redis_errors = %v, want >= 1", n)
	}
	if n := counterValue(t, g.Metrics, "mcp_gateway_rate_limit_decisions_total", map[string]string{"decision": "allowed", "store": "local"}); n < 10 {
		t.Errorf("rate_limit_decisions{allowed,local} = %v, want >= 10", n)
	}
	if !strings.Contains(g.Logs(), "redis unavailable") {
		t.Errorf("no log line about the Redis outage:\n%s", g.Logs())
	}
}

// TestRateLimitPerReplica: without REDIS_URL each gateway limits on its own.
func TestRateLimitPerReplica(t *testing.T) {
	t.Parallel()
	g := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"RATE_LIMIT": "2/h"})
	token := mint(t, []string{scopeUser}, g.MCP())
	var got []int
	for range 3 {
		res := post(t, g.MCP(), token, listBody())
		got = append(got, res.StatusCode)
		if res.StatusCode == http.StatusTooManyRequests {
			if ra, _ := strconv.Atoi(res.Header.Get("Retry-After")); ra < 1700 || ra > 1800 {
				t.Errorf("Retry-After %q, want about 1800 (one request per 30 minutes)", res.Header.Get("Retry-After"))
			}
		}
		res.Body.Close()
	}
	if fmtInts(got) != "[200 200 429]" {
		t.Errorf("statuses %v, want [200 200 429]", got)
	}
}

func fmtInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// counterValue sums the counter name over the series whose labels include
// labels.
func counterValue(t *testing.T, m *metrics.Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.GetMetric() {
			match := true
			for k, v := range labels {
				if label(mt, k) != v {
					match = false
				}
			}
			if match {
				sum += mt.GetCounter().GetValue()
			}
		}
	}
	return sum
}
