package gateway_test

import (
	"bufio"
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/metrics"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/stacktest"
)

// longTTL is far longer than any test waits, so that only the invalidation
// stream, a token's exp or the stream's end can explain a refusal.
const longTTL = "30s"

// authorizeCalls is how many Authorize calls authz az has answered, whatever
// the outcome (its authz_grpc_requests_total).
func authorizeCalls(t *testing.T, az *stacktest.Authz) int {
	t.Helper()
	body := fetch(t, az.MetricsURL+"/metrics")
	n := 0.0
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "authz_grpc_requests_total{") || !strings.Contains(line, `method="/authz.v1.AuthzService/Authorize"`) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("authz metrics line %q: %v", line, err)
		}
		n += v
	}
	return int(n)
}

// gaugeValue reads one gauge of the gateway's metrics.
func gaugeValue(t *testing.T, m *metrics.Metrics, name string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("the gateway has no gauge %s", name)
	return 0
}

// waitStream waits up to 15s until g's invalidation stream is up (or down).
func waitStream(t *testing.T, g *stacktest.Gateway, up bool) {
	t.Helper()
	want := 0.0
	if up {
		want = 1
	}
	deadline := time.Now().Add(15 * time.Second)
	for gaugeValue(t, g.Metrics, "mcp_gateway_decision_cache_stream_up") != want {
		if time.Now().After(deadline) {
			t.Fatalf("the decision cache's stream is not up=%v after 15s", up)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// statusOf sends body with token and returns the status, draining the answer.
func statusOf(t *testing.T, g *stacktest.Gateway, token, body string) int {
	t.Helper()
	res := post(t, g.MCP(), token, body)
	res.Body.Close()
	return res.StatusCode
}

// revoke revokes token at devauth (RFC 7009), as the request-validation client.
func revoke(t *testing.T, d *stacktest.Devauth, token string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, d.URL+"/oauth/2.1/revoke", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(stacktest.ClientID, stacktest.ClientSecret)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("revoking at devauth: %s", res.Status)
	}
}

// invalidate calls InvalidateToken on az directly, as an operator or another
// service would.
func invalidate(t *testing.T, az *stacktest.Authz, token string) {
	t.Helper()
	conn, err := grpc.NewClient(az.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := authzv1.NewAuthzServiceClient(conn).InvalidateToken(ctx, &authzv1.InvalidateTokenRequest{Token: token}); err != nil {
		t.Fatalf("InvalidateToken: %v", err)
	}
}

// TestDecisionCache runs a gateway with DECISION_CACHE_TTL=30s against two
// authz replicas sharing Redis (the gateway talks to the first) and checks
// what the cache may and may not answer.
func TestDecisionCache(t *testing.T) {
	t.Parallel()
	d := stack.Devauth
	// CLOCK_SKEW=0s: authz refuses a token as soon as its exp has passed.
	az := stacktest.NewAuthz(t, d, stack.Redis.URL(), "CLOCK_SKEW=0s")
	other := stacktest.NewAuthz(t, d, stack.Redis.URL(), "CLOCK_SKEW=0s")
	g := stacktest.NewGateway(t, az.Addr, d.URL, map[string]string{"DECISION_CACHE_TTL": longTTL})
	waitStream(t, g, true)
	mintFor := func(scopes []string, expiresIn ...int64) string {
		req := stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: scopes, Resource: g.MCP()}
		if len(expiresIn) > 0 {
			req.ExpiresIn = &expiresIn[0]
		}
		return d.Mint(t, req)
	}
	hits := func() float64 {
		return counterValue(t, g.Metrics, "mcp_gateway_decision_cache_lookups_total", map[string]string{"result": "hit"})
	}

	// Subtests run in order: each counts authz's calls.
	t.Run("repeated requests skip authz", func(t *testing.T) {
		token := mintFor([]string{scopeUser, scopeOrg})
		before, hitsBefore := authorizeCalls(t, az), hits()
		for range 3 {
			if tr := callTool(t, g.MCP(), token, "who_am_i", nil); tr.IsError {
				t.Fatalf("who_am_i: %+v", tr.Content)
			}
		}
		// who_am_i with read:org_data asks two questions (the decision, then
		// the decision with the orgs), each once.
		if got := authorizeCalls(t, az) - before; got != 2 {
			t.Errorf("3 who_am_i calls made %d Authorize calls, want 2", got)
		}
		// Another operation (other scopes, no user): asked once, then cached too.
		for range 3 {
			readRPC(t, post(t, g.MCP(), token, listBody()))
		}
		if got := authorizeCalls(t, az) - before; got != 3 {
			t.Errorf("3 who_am_i + 3 tools/list made %d Authorize calls, want 3", got)
		}
		if got := hits() - hitsBefore; got != 6 {
			t.Errorf("decision cache hits = %v, want 6", got)
		}
	})

	t.Run("the cached user reaches the tool", func(t *testing.T) {
		token := mintFor([]string{scopeUser})
		for i := range 2 {
			var who struct {
				Subject string `json:"subject"`
				User    *struct {
					Email string `json:"email"`
				} `json:"user"`
			}
			callTool(t, g.MCP(), token, "who_am_i", &who)
			if who.Subject != stacktest.AliceID || who.User == nil || who.User.Email != stacktest.AliceEmail {
				t.Errorf("who_am_i #%d = %+v, want alice with her user", i+1, who)
			}
		}
	})

	t.Run("another operation's decision is not reused", func(t *testing.T) {
		token := mintFor([]string{scopeUser})
		callTool(t, g.MCP(), token, "who_am_i", nil) // cached for SCOPES + read:user_data
		before := authorizeCalls(t, az)
		for i := range 2 {
			res := post(t, g.MCP(), token, callBody("list_my_orgs"))
			checkChallenge(t, res, wantChallenge{status: http.StatusForbidden, params: map[string]string{"resource_metadata": g.URL + "/.well-known/oauth-protected-resource/mcp", "scope": scopeUser + " " + scopeOrg, "error": "insufficient_scope"}, desc: true, bodyError: "insufficient_scope"})
			// Denials are not kept: authz is asked every time.
			if got := authorizeCalls(t, az) - before; got != i+1 {
				t.Errorf("after %d list_my_orgs: %d Authorize calls, want %d", i+1, got, i+1)
			}
		}
	})

	t.Run("InvalidateToken on another replica refuses at once", func(t *testing.T) {
		token := mintFor([]string{scopeUser})
		callTool(t, g.MCP(), token, "who_am_i", nil)
		revoke(t, d, token)
		// Revoked at the authorization server only: both caches still allow it,
		// which is the delay DECISION_CACHE_TTL documents.
		before := authorizeCalls(t, az)
		if st := statusOf(t, g, token, callBody("who_am_i")); st != http.StatusOK {
			t.Fatalf("before InvalidateToken: %d, want 200 from the cache", st)
		}
		if got := authorizeCalls(t, az) - before; got != 0 {
			t.Fatalf("the cached decision still called authz %d times", got)
		}

		start := time.Now()
		invalidate(t, other, token)
		deadline := start.Add(2 * time.Second)
		st := 0
		for {
			if st = statusOf(t, g, token, callBody("who_am_i")); st != http.StatusOK || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if st != http.StatusUnauthorized {
			t.Fatalf("2s after InvalidateToken on the other replica: %d, want 401 (TTL is %s)", st, longTTL)
		}
		t.Logf("refused %v after InvalidateToken", time.Since(start).Round(time.Millisecond))
		if st := statusOf(t, g, token, listBody()); st != http.StatusUnauthorized {
			t.Errorf("tools/list after the invalidation: %d, want 401", st)
		}
		if n := counterValue(t, g.Metrics, "mcp_gateway_decision_cache_invalidations_total", nil); n < 1 {
			t.Errorf("invalidations received = %v, want at least 1", n)
		}
	})

	t.Run("refused once the token expires", func(t *testing.T) {
		token := mintFor([]string{scopeUser}, 2)
		minted := time.Now()
		if st := statusOf(t, g, token, listBody()); st != http.StatusOK {
			t.Fatalf("fresh token: %d", st)
		}
		// exp is a whole second: the token lives 1 to 2 more seconds.
		deadline := minted.Add(5 * time.Second)
		st := 0
		for {
			if st = statusOf(t, g, token, listBody()); st != http.StatusOK || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if st != http.StatusUnauthorized {
			t.Fatalf("5s after minting a 2s token: %d, want 401 (TTL is %s)", st, longTTL)
		}
		if elapsed := time.Since(minted); elapsed < time.Second {
			t.Errorf("refused %v after minting a 2s token: served less than its life", elapsed)
		}
	})
}

// TestDecisionCacheAuthzDown: when authz dies the stream ends and nothing is
// served from the cache (503, as without it); when authz is back requests
// recover and the cache is used again.
func TestDecisionCacheAuthzDown(t *testing.T) {
	t.Parallel()
	d := stack.Devauth
	az := stacktest.NewAuthz(t, d, "")
	g := stacktest.NewGateway(t, az.Addr, d.URL, map[string]string{"DECISION_CACHE_TTL": longTTL, "AUTHZ_TIMEOUT": "1s"})
	waitStream(t, g, true)
	token := d.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: g.MCP()})
	callTool(t, g.MCP(), token, "who_am_i", nil)
	callTool(t, g.MCP(), token, "who_am_i", nil) // from the cache

	az.Proc.Kill()
	waitStream(t, g, false)
	for _, body := range []string{callBody("who_am_i"), listBody()} {
		checkUnavailable(t, post(t, g.MCP(), token, body))
	}

	// The same address again.
	back := stacktest.NewAuthz(t, d, "", "AUTHZ_LISTEN="+az.Addr)
	deadline := time.Now().Add(20 * time.Second)
	for statusOf(t, g, token, callBody("who_am_i")) != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("no 200 within 20s of authz coming back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitStream(t, g, true)
	// A fresh token: the polling above may already have cached the first one
	// if the stream came up before its last request.
	fresh := d.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: g.MCP()})
	before := authorizeCalls(t, back)
	for range 3 {
		callTool(t, g.MCP(), fresh, "who_am_i", nil)
	}
	if got := authorizeCalls(t, back) - before; got != 1 {
		t.Errorf("3 calls after the stream came back made %d Authorize calls, want 1", got)
	}
}

// TestDecisionCacheDefault: with DECISION_CACHE_TTL unset the decision cache
// is on, and a decision lives no longer than authz's own cached answer: a
// token revoked at the authorization server (without InvalidateToken) is
// refused once authz's CACHE_TTL (2s here) has passed, not the gateway's 60s
// later, as if the gateway had asked authz every time.
func TestDecisionCacheDefault(t *testing.T) {
	t.Parallel()
	d := stack.Devauth
	az := stacktest.NewAuthz(t, d, "", "CACHE_TTL=2s")
	g := stacktest.NewGateway(t, az.Addr, d.URL, nil)
	waitStream(t, g, true)
	// Both scopes: tools/list asks authz nothing more to show list_my_orgs.
	token := d.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser, scopeOrg}, Resource: g.MCP()})
	before := authorizeCalls(t, az)
	start := time.Now()
	for i := range 3 {
		if st := statusOf(t, g, token, listBody()); st != http.StatusOK {
			t.Fatalf("tools/list #%d: status %d", i+1, st)
		}
	}
	if got := authorizeCalls(t, az) - before; got != 1 {
		t.Errorf("3 tools/list made %d Authorize calls, want 1 (the decision cache is on by default)", got)
	}
	revoke(t, d, token)
	deadline := start.Add(2*time.Second + 5*time.Second) // CACHE_TTL, and slack for a busy machine
	for {
		st := statusOf(t, g, token, listBody())
		if st == http.StatusUnauthorized {
			break
		}
		if st != http.StatusOK {
			t.Fatalf("tools/list of a revoked token: status %d, want 200 (cached) then 401", st)
		}
		if time.Now().After(deadline) {
			t.Fatalf("a token revoked at the authorization server was still allowed %v after authz cached it (CACHE_TTL 2s): the decision outlived authz's answer", time.Since(start).Round(time.Millisecond))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if elapsed := time.Since(start); elapsed < 2*time.Second {
		t.Errorf("refused %v after the first call, before authz's cached answer ended (2s): was it cached at all?", elapsed.Round(time.Millisecond))
	}
}

// TestDecisionCacheOff: with DECISION_CACHE_TTL=0 every request asks authz,
// and no stream is opened.
func TestDecisionCacheOff(t *testing.T) {
	t.Parallel()
	az := stacktest.NewAuthz(t, stack.Devauth, "")
	g := stacktest.NewGateway(t, az.Addr, stack.Devauth.URL, map[string]string{"DECISION_CACHE_TTL": "0"})
	token := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: g.MCP()})
	before := authorizeCalls(t, az)
	for range 3 {
		callTool(t, g.MCP(), token, "who_am_i", nil)
	}
	if got := authorizeCalls(t, az) - before; got != 3 {
		t.Errorf("3 calls made %d Authorize calls, want 3", got)
	}
	if n := counterValue(t, g.Metrics, "mcp_gateway_decision_cache_lookups_total", nil); n != 0 {
		t.Errorf("decision cache lookups = %v with the cache off", n)
	}
	if body := fetch(t, az.MetricsURL+"/metrics"); !strings.Contains(body, "\nauthz_watch_streams 0\n") {
		t.Error("a gateway without a decision cache opened WatchInvalidations (authz_watch_streams is not 0)")
	}
}

// TestDecisionCacheRefreshAhead: with DECISION_CACHE_TTL=2s, shorter than
// authz's own cached answers (CACHE_TTL and USER_CACHE_TTL 30s), a token in
// steady use is refreshed in the background and never misses after its first
// request; InvalidateToken still refuses at once. (A decision never outlives
// authz's cached answer: TestDecisionCacheDefault.)
func TestDecisionCacheRefreshAhead(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out cache lifetimes: go test without -short runs it")
	}
	t.Parallel()
	d := stack.Devauth
	az := stacktest.NewAuthz(t, d, "", "CACHE_TTL=30s", "USER_CACHE_TTL=30s", "NEGATIVE_CACHE_TTL=0s")
	g := stacktest.NewGateway(t, az.Addr, d.URL, map[string]string{"DECISION_CACHE_TTL": "2s"})
	waitStream(t, g, true)
	lookups := func(result string) float64 {
		return counterValue(t, g.Metrics, "mcp_gateway_decision_cache_lookups_total", map[string]string{"result": result})
	}
	refreshes := func(result string) float64 {
		return counterValue(t, g.Metrics, "mcp_gateway_decision_cache_refreshes_total", map[string]string{"result": result})
	}
	mintUser := func() string {
		return d.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: g.MCP()})
	}

	t.Run("steady use never misses after the first request", func(t *testing.T) {
		token := mintUser()
		missesBefore, callsBefore := lookups("miss"), authorizeCalls(t, az)
		n := 0
		// 3.5s: past the TTL of the first decision and of its first refresh.
		for end := time.Now().Add(3500 * time.Millisecond); time.Now().Before(end); n++ {
			if st := statusOf(t, g, token, callBody("who_am_i")); st != http.StatusOK {
				t.Fatalf("request %d: %d, want 200", n+1, st)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if got := lookups("miss") - missesBefore; got != 1 {
			t.Errorf("%d requests over 3.5s missed %v times, want 1 (the first)", n, got)
		}
		calls := authorizeCalls(t, az) - callsBefore
		if calls < 3 || calls > 10 || calls >= n {
			t.Errorf("%d requests over 3.5s made %d Authorize calls, want about one per TTL/2 (3 to 10)", n, calls)
		}
		if refreshes("stored") < 2 {
			t.Errorf("refreshes{stored} = %v, want at least 2", refreshes("stored"))
		}
	})

	t.Run("InvalidateToken still refuses at once", func(t *testing.T) {
		token := mintUser()
		deniedBefore := refreshes("denied")
		for range 2 {
			if st := statusOf(t, g, token, callBody("who_am_i")); st != http.StatusOK {
				t.Fatalf("fresh token: %d", st)
			}
		}
		// Revoked at the authorization server too, or authz would allow it again.
		// Within 500ms no refresh is due (TTL/2 is 1s): only the invalidation
		// can explain a refusal.
		revoke(t, d, token)
		invalidate(t, az, token)
		deadline := time.Now().Add(500 * time.Millisecond)
		st := 0
		for {
			if st = statusOf(t, g, token, callBody("who_am_i")); st != http.StatusOK || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if st != http.StatusUnauthorized {
			t.Fatalf("500ms after InvalidateToken: %d, want 401", st)
		}
		if got := refreshes("denied") - deniedBefore; got != 0 {
			t.Errorf("refreshes{denied} grew by %v: a refresh, not the invalidation, refused the token", got)
		}
	})
}
