package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

func TestExposition(t *testing.T) {
	t.Parallel()
	m := New()
	m.ObserveRequest("tools/call", "who_am_i", "200", 3*time.Millisecond)
	m.ObserveAuthz("/authz.v1.AuthzService/Authorize", codes.Unavailable, time.Millisecond)
	m.Decision("insufficient_scope")
	m.DecisionCacheLookup("hit")
	m.DecisionCacheInvalidation()
	m.DecisionCacheReset("stream_end")
	m.DecisionCacheRefresh("denied")
	m.DecisionCacheEvictions(2)
	m.DecisionCacheEntries(7)
	m.DecisionCacheStreamUp(true)
	m.ObserveInFlight(func() int64 { return 3 })
	m.InFlightRejected()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Result().Body)
	for _, want := range []string{
		`mcp_gateway_requests_total{method="tools/call",status="200",tool="who_am_i"} 1`,
		`mcp_gateway_request_duration_seconds_count{method="tools/call"} 1`,
		`mcp_gateway_authz_call_duration_seconds_count{code="Unavailable",rpc="Authorize"} 1`,
		`mcp_gateway_authz_decisions_total{decision="insufficient_scope"} 1`,
		`mcp_gateway_decision_cache_lookups_total{result="hit"} 1`,
		`mcp_gateway_decision_cache_invalidations_total 1`,
		`mcp_gateway_decision_cache_resets_total{cause="stream_end"} 1`,
		`mcp_gateway_decision_cache_refreshes_total{result="denied"} 1`,
		`mcp_gateway_decision_cache_evictions_total 2`,
		`mcp_gateway_decision_cache_entries 7`,
		`mcp_gateway_decision_cache_stream_up 1`,
		`mcp_gateway_in_flight_requests 3`,
		`mcp_gateway_in_flight_rejected_total 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
}
