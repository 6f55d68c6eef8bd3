package gateway_test

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/stacktest"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	dto "github.com/prometheus/client_model/go"
)

func get(t *testing.T, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, b
}

func TestProtectedResourceMetadata(t *testing.T) {
	t.Parallel()
	g := stack.Gateway
	want := oauthex.ProtectedResourceMetadata{
		Resource:               g.URL + "/mcp",
		AuthorizationServers:   []string{stack.Devauth.Issuer()},
		ScopesSupported:        []string{scopeUser, scopeOrg},
		BearerMethodsSupported: []string{"header"},
		ResourceName:           "mcpauthz MCP gateway",
	}
	for _, path := range []string{"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"} {
		res, b := get(t, g.URL+path, "Origin", "https://inspector.example.com")
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/json" || res.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("%s: %d %q CORS %q", path, res.StatusCode, res.Header.Get("Content-Type"), res.Header.Get("Access-Control-Allow-Origin"))
		}
		var got oauthex.ProtectedResourceMetadata
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", path, diff)
		}
	}
	// The go-sdk client's own validation accepts it for the MCP endpoint.
	if _, err := oauthex.GetProtectedResourceMetadata(t.Context(), g.URL+"/.well-known/oauth-protected-resource/mcp", g.MCP(), http.DefaultClient); err != nil {
		t.Errorf("go-sdk refuses the metadata: %v", err)
	}
}

func TestAuthorizationServerMetadata(t *testing.T) {
	t.Parallel()
	res, viaGateway := get(t, stack.Gateway.URL+"/.well-known/oauth-authorization-server")
	if res.StatusCode != 200 || res.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("status %d, CORS %q: %s", res.StatusCode, res.Header.Get("Access-Control-Allow-Origin"), viaGateway)
	}
	_, direct := get(t, stack.Devauth.URL+"/.well-known/oauth-authorization-server/oauth/2.1")
	var a, b map[string]any
	if err := json.Unmarshal(viaGateway, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(direct, &b); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(b, a); diff != "" {
		t.Errorf("proxied metadata differs from devauth's (-devauth +gateway):\n%s", diff)
	}
	if a["issuer"] != stack.Devauth.Issuer() {
		t.Errorf("issuer %v", a["issuer"])
	}
}

// TestHealthAndMetrics: the operational listener (MCP_METRICS_LISTEN) serves
// /healthz, /readyz and /metrics; the public one only /healthz (load
// balancers and container healthchecks reach no other port), and 404 for
// /metrics and /readyz.
func TestHealthAndMetrics(t *testing.T) {
	t.Parallel()
	g := stack.Gateway
	if g.MetricsURL == g.URL {
		t.Fatal("the shared gateway serves its operational routes on the public listener")
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if res, b := get(t, g.MetricsURL+path); res.StatusCode != 200 {
			t.Errorf("operational %s: %d %s", path, res.StatusCode, b)
		}
	}
	if res, b := get(t, g.URL+"/healthz"); res.StatusCode != 200 || string(b) != "ok\n" {
		t.Errorf("public /healthz: %d %q", res.StatusCode, b)
	}
	for _, path := range []string{"/metrics", "/readyz"} {
		if res, b := get(t, g.URL+path); res.StatusCode != http.StatusNotFound || strings.Contains(string(b), "mcp_gateway_") {
			t.Errorf("public %s: %d %.80s; want 404", path, res.StatusCode, b)
		}
	}
	for _, path := range []string{"/mcp", "/.well-known/oauth-protected-resource/mcp"} {
		if res, _ := get(t, g.MetricsURL+path); res.StatusCode != http.StatusNotFound {
			t.Errorf("operational %s: %d, want 404", path, res.StatusCode)
		}
	}
	token := mint(t, []string{scopeUser})
	callTool(t, g.MCP(), token, "who_am_i", nil)
	post(t, g.MCP(), "", listBody()).Body.Close()
	res, b := get(t, g.MetricsURL+"/metrics")
	if res.StatusCode != 200 {
		t.Fatalf("/metrics: %d", res.StatusCode)
	}
	for _, want := range []string{
		`mcp_gateway_requests_total{method="tools/call",status="200",tool="who_am_i"}`,
		// Refused before its body is read, so its method is not known.
		`mcp_gateway_requests_total{method="unknown",status="401",tool=""}`,
		`mcp_gateway_authz_call_duration_seconds_bucket{code="OK",rpc="Authorize"`,
		`mcp_gateway_authz_decisions_total{decision="allowed"}`,
		`mcp_gateway_request_duration_seconds_count{method="tools/call"}`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if res, _ := get(t, g.URL+"/nothing-here"); res.StatusCode != 404 {
		t.Errorf("unknown path: %d", res.StatusCode)
	}
}

// TestUserPrefetch: who_am_i and list_my_orgs get the user with the Authorize
// decision (include_user), so the gateway never calls GetUser. who_am_i with
// a token granted only read:user_data asks authz once (no orgs); with
// read:org_data too, twice: the decision, then the decision with the orgs
// (include_orgs only where read:org_data is required).
func TestUserPrefetch(t *testing.T) {
	t.Parallel()
	// No decision cache: the test counts the questions each tool asks.
	g := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"DECISION_CACHE_TTL": "0"})
	calls := func() map[string]uint64 {
		mfs, err := g.Metrics.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		calls := map[string]uint64{}
		for _, mf := range mfs {
			if mf.GetName() != "mcp_gateway_authz_call_duration_seconds" {
				continue
			}
			for _, m := range mf.GetMetric() {
				calls[label(m, "rpc")] += m.GetHistogram().GetSampleCount()
			}
		}
		return calls
	}
	userOnly := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: g.MCP()})
	for range 3 {
		callTool(t, g.MCP(), userOnly, "who_am_i", nil)
	}
	if diff := cmp.Diff(map[string]uint64{"Authorize": 3}, calls()); diff != "" {
		t.Errorf("authz calls for 3 who_am_i with read:user_data (-want +got):\n%s", diff)
	}
	token := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser, scopeOrg}, Resource: g.MCP()})
	for range 3 {
		callTool(t, g.MCP(), token, "who_am_i", nil)
		callTool(t, g.MCP(), token, "list_my_orgs", nil)
	}
	if diff := cmp.Diff(map[string]uint64{"Authorize": 3 + 3*2 + 3}, calls()); diff != "" {
		t.Errorf("authz calls for 3 more who_am_i and 3 list_my_orgs with read:org_data (-want +got):\n%s", diff)
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// TestToolsListFiltering: tools/list shows what the token may call, or every
// tool with TOOLS_LIST_ALL=true.
func TestToolsListFiltering(t *testing.T) {
	t.Parallel()
	listAll := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"TOOLS_LIST_ALL": "true"})
	tests := []struct {
		name   string
		url    string
		token  string
		wanted []string
	}{
		{"user", stack.Gateway.MCP(), mint(t, []string{scopeUser}), []string{"who_am_i"}},
		{"user+org", stack.Gateway.MCP(), mint(t, []string{scopeUser, scopeOrg}), []string{"list_my_orgs", "who_am_i"}},
		{"list all", listAll.MCP(), stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: listAll.MCP()}), []string{"list_my_orgs", "who_am_i"}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.wanted, listToolNames(t, tt.url, tt.token)); diff != "" {
			t.Errorf("%s: tools/list (-want +got):\n%s", tt.name, diff)
		}
	}
}

// TestInstructionsNameNoHiddenTool: the server's instructions, the same for
// every caller, name no tool that tools/list hides from some caller; they
// once named list_my_orgs, which a read:user_data token does not see.
func TestInstructionsNameNoHiddenTool(t *testing.T) {
	t.Parallel()
	token := mint(t, []string{scopeUser})
	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}`
	r := readRPC(t, post(t, stack.Gateway.MCP(), token, init))
	var res struct {
		Instructions string `json:"instructions"`
	}
	if err := json.Unmarshal(r.Result, &res); err != nil || res.Instructions == "" {
		t.Fatalf("initialize: %s (%v), want instructions", r.Result, err)
	}
	visible := listToolNames(t, stack.Gateway.MCP(), token)
	for _, tool := range tools.BuiltIn().All() {
		if !slices.Contains(visible, tool.Name) && strings.Contains(res.Instructions, tool.Name) {
			t.Errorf("instructions %q name %s, which tools/list hides from this caller", res.Instructions, tool.Name)
		}
	}
}

// listToolNames sends tools/list to url with token and returns the tool names,
// sorted.
func listToolNames(t *testing.T, url, token string) []string {
	t.Helper()
	r := readRPC(t, post(t, url, token, listBody()))
	var res struct {
		Tools []struct {
			Name string `json:"name"`
		} `json:"tools"`
	}
	if err := json.Unmarshal(r.Result, &res); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tool := range res.Tools {
		out = append(out, tool.Name)
	}
	slices.Sort(out)
	return out
}

// TestCORS: a browser client on an allowed origin (MCP Inspector) can preflight,
// call, and read the challenge; other origins are refused.
func TestCORS(t *testing.T) {
	t.Parallel()
	const inspector = "http://localhost:6274"
	g := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"MCP_ALLOWED_ORIGINS": inspector})

	pre, err := http.NewRequest(http.MethodOptions, g.MCP(), nil)
	if err != nil {
		t.Fatal(err)
	}
	pre.Header.Set("Origin", inspector)
	pre.Header.Set("Access-Control-Request-Method", "POST")
	pre.Header.Set("Access-Control-Request-Headers", "authorization, content-type, mcp-protocol-version, mcp-param-region")
	res, err := http.DefaultClient.Do(pre)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	got := map[string]string{}
	for _, h := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers"} {
		got[h] = res.Header.Get(h)
	}
	want := map[string]string{
		"Access-Control-Allow-Origin":  inspector,
		"Access-Control-Allow-Methods": "POST, OPTIONS",
		"Access-Control-Allow-Headers": "authorization, content-type, mcp-protocol-version, mcp-param-region",
	}
	if res.StatusCode != http.StatusNoContent {
		t.Errorf("preflight status %d", res.StatusCode)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("preflight headers (-want +got):\n%s", diff)
	}

	res = post(t, g.MCP(), "", listBody(), "Origin", inspector)
	res.Body.Close()
	if res.StatusCode != 401 || res.Header.Get("Access-Control-Allow-Origin") != inspector || !strings.Contains(res.Header.Get("Access-Control-Expose-Headers"), "WWW-Authenticate") {
		t.Errorf("401 to the inspector: %d, allow-origin %q, expose %q", res.StatusCode, res.Header.Get("Access-Control-Allow-Origin"), res.Header.Get("Access-Control-Expose-Headers"))
	}
	// Its own origin is always allowed; others are not, not even for preflight.
	res = post(t, g.MCP(), "", listBody(), "Origin", g.URL)
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Errorf("own origin: %d, want 401", res.StatusCode)
	}
	pre.Header.Set("Origin", "https://evil.example.com")
	res, err = http.DefaultClient.Do(pre)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden || res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("foreign preflight: %d, allow-origin %q", res.StatusCode, res.Header.Get("Access-Control-Allow-Origin"))
	}
}

// TestScopeHierarchy: with authz configured so that "admin" implies both tool
// scopes, an admin token sees and calls both tools although neither scope is
// in the token; tools/list and the tool set ask authz rather than compare
// scope strings.
func TestScopeHierarchy(t *testing.T) {
	t.Parallel()
	az := stacktest.NewAuthz(t, stack.Devauth, stack.Redis.URL(), "SCOPE_HIERARCHY=admin=read:user_data,read:org_data")
	g := stacktest.NewGateway(t, az.Addr, stack.Devauth.URL, nil)
	token := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{"admin"}, Resource: g.MCP()})
	if diff := cmp.Diff([]string{"list_my_orgs", "who_am_i"}, listToolNames(t, g.MCP(), token)); diff != "" {
		t.Errorf("tools/list for an admin token (-want +got):\n%s", diff)
	}
	for _, tool := range []string{"who_am_i", "list_my_orgs"} {
		if tr := callTool(t, g.MCP(), token, tool, nil); tr.IsError {
			t.Errorf("%s with admin: %+v", tool, tr)
		}
	}
	// admin implies read:org_data: who_am_i shows the organizations too.
	var who tools.WhoAmI
	callTool(t, g.MCP(), token, "who_am_i", &who)
	if who.User == nil || len(who.User.Orgs) != 1 || who.OrgsWithheld != "" {
		t.Errorf("who_am_i for an admin token: user %+v, orgs_withheld %q; want alice's org", who.User, who.OrgsWithheld)
	}
}

// TestWhoAmIOrgs: who_am_i shows the user's organizations only to a token
// holding read:org_data, the scope list_my_orgs needs for the same data;
// without it the call still succeeds, with no organizations and
// orgs_withheld saying why (TestAuthzQuestions checks that authz is not
// asked for them).
func TestWhoAmIOrgs(t *testing.T) {
	t.Parallel()
	for _, scopes := range [][]string{{scopeUser}, {scopeUser, scopeOrg}} {
		var who tools.WhoAmI
		if tr := callTool(t, stack.Gateway.MCP(), mint(t, scopes), "who_am_i", &who); tr.IsError {
			t.Fatalf("who_am_i with %q: %+v", scopes, tr.Content)
		}
		checkAlice(t, who, scopes)
	}
}

// TestBehindReverseProxy: a TLS-terminating proxy on the same machine forwards
// to the loopback listener with the public Host; the gateway serves it (the
// go-sdk's own loopback check would refuse it) while still refusing other
// hosts, the DNS-rebinding case.
func TestBehindReverseProxy(t *testing.T) {
	t.Parallel()
	const public = "https://mcp.example.com"
	g := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"MCP_SERVER_URL": public})
	token := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: public + "/mcp"})
	for _, tt := range []struct {
		host string
		want int
	}{
		{"mcp.example.com", 200},
		{"mcp.example.com:443", 200},
		{g.Addr, 200},
		{"attacker.example.net", 403},
	} {
		req, err := http.NewRequest(http.MethodPost, "http://"+g.Addr+"/mcp", strings.NewReader(callBody("who_am_i")))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = tt.host
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tt.want {
			t.Errorf("Host %s: %d, want %d: %s", tt.host, res.StatusCode, tt.want, b)
		}
	}
	// The metadata names the public URLs, not the listener.
	res, b := get(t, "http://"+g.Addr+"/.well-known/oauth-protected-resource/mcp")
	if res.StatusCode != 200 || !strings.Contains(string(b), `"resource":"`+public+`/mcp"`) {
		t.Errorf("metadata behind the proxy: %d %s", res.StatusCode, b)
	}
	res = post(t, "http://"+g.Addr+"/mcp", "", listBody())
	res.Body.Close()
	if got := res.Header.Get("WWW-Authenticate"); !strings.Contains(got, `resource_metadata="`+public+`/.well-known/oauth-protected-resource/mcp"`) {
		t.Errorf("challenge behind the proxy: %q", got)
	}
}
