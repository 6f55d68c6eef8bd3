package gateway_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/stacktest"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestOAuthFlow drives the go-sdk client with its AuthorizationCodeHandler
// against the real stack, from no token to who_am_i, once per protocol era:
// 401 -> protected resource metadata -> authorization server metadata ->
// dynamic client registration -> PKCE authorization -> token -> tools/list ->
// who_am_i.
func TestOAuthFlow(t *testing.T) {
	t.Parallel()
	for _, version := range []string{"2026-07-28", "2025-11-25", "2025-06-18"} {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			c := stacktest.NewOAuthClient(t)
			cs, err := c.Connect(t.Context(), stack.Gateway.MCP(), version)
			if err != nil {
				t.Fatalf("Connect: %v\nsteps: %q", err, c.Recorder.Steps())
			}
			defer cs.Close()
			if got := cs.InitializeResult().ProtocolVersion; got != version {
				t.Errorf("negotiated protocol %q, want %q", got, version)
			}

			// The flow, in order; the first request may be server/discover or
			// initialize, depending on the version.
			wantSteps := []string{
				"POST /mcp -> 401",
				"GET /.well-known/oauth-protected-resource/mcp -> 200",
				"GET /.well-known/oauth-authorization-server/oauth/2.1 -> 200",
				"POST /oauth/2.1/register -> 201",
				"GET /oauth/2.1/authorize -> 302",
				"POST /oauth/2.1/token -> 200",
				"POST /mcp -> 200",
			}
			if missing := subsequence(c.Recorder.Steps(), wantSteps); missing != "" {
				t.Errorf("OAuth flow lacks %q in order\ngot: %q", missing, c.Recorder.Steps())
			}
			// The 401 names every supported scope, so a first login asks
			// for them all and every tool is usable at once.
			// The go-sdk client requests them in no set order (a map union with
			// the scopes granted before, authutil.UnionScopes).
			if diff := cmp.Diff([]string{scopeOrg, scopeUser}, slices.Sorted(slices.Values(c.Requested))); diff != "" {
				t.Errorf("requested scopes (from the 401 challenge) (-want +got):\n%s", diff)
			}

			list, err := cs.ListTools(t.Context(), nil)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, tool := range list.Tools {
				names = append(names, tool.Name)
				if tool.Name == "who_am_i" && tool.OutputSchema == nil {
					t.Error("who_am_i has no output schema")
				}
			}
			slices.Sort(names)
			if diff := cmp.Diff([]string{"list_my_orgs", "who_am_i"}, names); diff != "" {
				t.Errorf("tools/list after the first login (-want +got):\n%s", diff)
			}
			if list.CacheScope != tools.CacheScopePrivate {
				t.Errorf("tools/list cacheScope %q, want %q: the list depends on the token", list.CacheScope, tools.CacheScopePrivate)
			}

			res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "who_am_i"})
			if err != nil {
				t.Fatal(err)
			}
			if res.IsError {
				t.Fatalf("who_am_i failed: %+v", res.Content)
			}
			var who tools.WhoAmI
			b, _ := json.Marshal(res.StructuredContent)
			if err := json.Unmarshal(b, &who); err != nil {
				t.Fatal(err)
			}
			checkAlice(t, who, []string{scopeUser, scopeOrg})
			if who.ClientID == "" || who.ClientID == "devauth-test-client" {
				t.Errorf("client_id %q, want the dynamically registered client", who.ClientID)
			}

			res, err = cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "list_my_orgs"})
			if err != nil {
				t.Fatalf("list_my_orgs: %v\nsteps: %q", err, c.Recorder.Steps())
			}
			var orgs tools.MyOrgs
			b, _ = json.Marshal(res.StructuredContent)
			if err := json.Unmarshal(b, &orgs); err != nil || res.IsError || len(orgs.Orgs) != 1 || orgs.Orgs[0].OrgID != stacktest.AcmeOrgID {
				t.Errorf("list_my_orgs = %s (isError %v, %v), want alice's org", b, res.IsError, err)
			}
		})
	}
}

// checkAlice checks a who_am_i result for alice with scopes: her
// organizations only when the token holds read:org_data, otherwise none and
// orgs_withheld saying why.
func checkAlice(t *testing.T, who tools.WhoAmI, scopes []string) {
	t.Helper()
	if who.Subject != stacktest.AliceID {
		t.Errorf("subject %q, want %q", who.Subject, stacktest.AliceID)
	}
	// Granted in the order requested, which the go-sdk client does not fix.
	if !slices.Equal(slices.Sorted(slices.Values(who.Scopes)), slices.Sorted(slices.Values(scopes))) {
		t.Errorf("scopes %q, want %q", who.Scopes, scopes)
	}
	if !slices.Contains(who.Audience, stack.Gateway.MCP()) {
		t.Errorf("audience %q lacks %q", who.Audience, stack.Gateway.MCP())
	}
	if who.Issuer != stack.Devauth.Issuer() {
		t.Errorf("issuer %q, want %q", who.Issuer, stack.Devauth.Issuer())
	}
	var claims map[string]any
	if err := json.Unmarshal(who.Claims, &claims); err != nil || who.ExpiresAt == "" || claims["sub"] != stacktest.AliceID {
		t.Errorf("expires_at %q, claims %s (%v)", who.ExpiresAt, who.Claims, err)
	}
	if who.UserError != "" || who.User == nil {
		t.Fatalf("no user: user_error %q", who.UserError)
	}
	u := who.User
	if u.Email != stacktest.AliceEmail || u.FirstName != "Alice" || u.LastName != "Liddell" || u.Username != "alice" {
		t.Errorf("user %+v", u)
	}
	want, wantWithheld := []tools.Org{}, tools.OrgsWithheld([]string{scopeOrg})
	if slices.Contains(scopes, scopeOrg) {
		want, wantWithheld = []tools.Org{aliceAcme}, ""
	}
	if diff := cmp.Diff(want, u.Orgs); diff != "" {
		t.Errorf("orgs for scopes %q (-want +got):\n%s", scopes, diff)
	}
	if who.OrgsWithheld != wantWithheld {
		t.Errorf("orgs_withheld for scopes %q = %q, want %q", scopes, who.OrgsWithheld, wantWithheld)
	}
}

// aliceAcme is alice's membership of devauth's seeded org.
var aliceAcme = tools.Org{OrgID: stacktest.AcmeOrgID, OrgName: "Acme", URLSafeOrgName: "acme", Role: "Admin", InheritedRoles: []string{"Admin", "Member"}, Permissions: []string{"read:org", "write:org"}}

// subsequence returns the first element of want missing from got in order, or "".
func subsequence(got, want []string) string {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	if i < len(want) {
		return want[i]
	}
	return ""
}

// TestStepUp: a client whose first login got read:user_data only (the user
// granted less than the 401 asked for) calls list_my_orgs, gets 403
// insufficient_scope naming both scopes, re-authorizes with their union and
// the call succeeds; tools/list then shows both tools.
func TestStepUp(t *testing.T) {
	t.Parallel()
	c := stacktest.NewOAuthClient(t, scopeUser)
	cs, err := c.Connect(t.Context(), stack.Gateway.MCP(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	before := len(c.Recorder.Steps())

	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "list_my_orgs"})
	if err != nil {
		t.Fatalf("list_my_orgs after step-up: %v\nsteps: %q", err, c.Recorder.Steps())
	}
	if res.IsError {
		t.Fatalf("list_my_orgs failed: %+v", res.Content)
	}
	steps := c.Recorder.Steps()[before:]
	want := []string{"POST /mcp -> 403", "GET /oauth/2.1/authorize -> 302", "POST /oauth/2.1/token -> 200", "POST /mcp -> 200"}
	if missing := subsequence(steps, want); missing != "" {
		t.Errorf("step-up lacks %q\ngot: %q", missing, steps)
	}
	requested := slices.Sorted(slices.Values(c.Requested))
	if diff := cmp.Diff([]string{scopeOrg, scopeUser}, requested); diff != "" {
		t.Errorf("step-up requested (-want +got):\n%s", diff)
	}
	var orgs tools.MyOrgs
	b, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(b, &orgs); err != nil {
		t.Fatal(err)
	}
	if len(orgs.Orgs) != 1 || orgs.Orgs[0].OrgID != stacktest.AcmeOrgID || orgs.Orgs[0].Role != "Admin" {
		t.Errorf("list_my_orgs = %+v", orgs)
	}

	list, err := cs.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range list.Tools {
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	if diff := cmp.Diff([]string{"list_my_orgs", "who_am_i"}, names); diff != "" {
		t.Errorf("tools/list after step-up (-want +got):\n%s", diff)
	}
}

// TestLegacyRawHTTP speaks protocol 2025-06-18 by hand, as an older client
// would: initialize, notifications/initialized, tools/call, each with the token.
func TestLegacyRawHTTP(t *testing.T) {
	t.Parallel()
	token := mint(t, []string{scopeUser})
	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}`
	r := readRPC(t, post(t, stack.Gateway.MCP(), token, init, "Mcp-Protocol-Version", ""))
	var ir struct {
		ProtocolVersion string `json:"protocolVersion"`
	}
	if err := json.Unmarshal(r.Result, &ir); err != nil || ir.ProtocolVersion != "2025-06-18" {
		t.Fatalf("initialize: %s, %v", r.Result, err)
	}
	res := post(t, stack.Gateway.MCP(), token, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	res.Body.Close()
	if res.StatusCode != 202 {
		t.Errorf("notifications/initialized: %d, want 202", res.StatusCode)
	}
	var who tools.WhoAmI
	if tr := callTool(t, stack.Gateway.MCP(), token, "who_am_i", &who); tr.IsError {
		t.Fatalf("who_am_i: %+v", tr)
	}
	checkAlice(t, who, []string{scopeUser})
	if who.ClientID != "devauth-test-client" {
		t.Errorf("client_id %q", who.ClientID)
	}
	// The trailing-slash endpoint is served the same, without a redirect.
	if tr := callTool(t, stack.Gateway.MCP()+"/", token, "who_am_i", nil); tr.IsError {
		t.Errorf("/mcp/: %+v", tr)
	}
	if strings.Contains(stack.Gateway.Logs(), token) {
		t.Error("the gateway logged a raw token")
	}
}

// bearerTransport adds a fixed bearer token to every request.
type bearerTransport string

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+string(b))
	return http.DefaultTransport.RoundTrip(r)
}

// TestToolsListCacheScope: with a real go-sdk client of each protocol era, a
// tools/list filtered for the caller's token is marked private (no shared
// cache may keep it for another user), and a TOOLS_LIST_ALL list, the same for
// everyone, public.
func TestToolsListCacheScope(t *testing.T) {
	t.Parallel()
	listAll := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"TOOLS_LIST_ALL": "true"})
	for _, version := range []string{"2026-07-28", "2025-11-25", "2025-06-18"} {
		for _, tt := range []struct {
			name  string
			g     *stacktest.Gateway
			scope string
			tools int
		}{
			{"filtered", stack.Gateway, tools.CacheScopePrivate, 1},
			{"TOOLS_LIST_ALL", listAll, tools.CacheScopePublic, 2},
		} {
			t.Run(version+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				token := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: tt.g.MCP()})
				client := mcp.NewClient(&mcp.Implementation{Name: "cache-scope-test", Version: "1.0.0"}, nil)
				cs, err := client.Connect(t.Context(), &mcp.StreamableClientTransport{
					Endpoint:             tt.g.MCP(),
					HTTPClient:           &http.Client{Transport: bearerTransport(token)},
					DisableStandaloneSSE: true,
					MaxRetries:           -1,
				}, &mcp.ClientSessionOptions{ProtocolVersion: version})
				if err != nil {
					t.Fatal(err)
				}
				defer cs.Close()
				if got := cs.InitializeResult().ProtocolVersion; got != version {
					t.Fatalf("negotiated %q, want %q", got, version)
				}
				list, err := cs.ListTools(t.Context(), nil)
				if err != nil {
					t.Fatal(err)
				}
				if list.CacheScope != tt.scope || len(list.Tools) != tt.tools {
					t.Errorf("tools/list: cacheScope %q with %d tools, want %q with %d", list.CacheScope, len(list.Tools), tt.scope, tt.tools)
				}
			})
		}
	}
}
