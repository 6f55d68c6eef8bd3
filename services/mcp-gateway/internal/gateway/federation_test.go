package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/federation"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/identity"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/stacktest"
)

// capture records every request an upstream received: headers and body.
type capture struct {
	mu   sync.Mutex
	reqs []captured
}

type captured struct {
	header http.Header
	body   []byte
}

func (c *capture) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		c.mu.Lock()
		c.reqs = append(c.reqs, captured{header: r.Header.Clone(), body: body})
		c.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (c *capture) all() []captured {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.reqs)
}

// goUpstream is a go-sdk MCP server over streamable HTTP with sessions: a
// real server the gateway fronts, with a tool of each kind the tests need.
type goUpstream struct {
	srv    *httptest.Server
	cap    *capture
	server *mcp.Server
	// blocked and cancelled are signalled when the block tool starts, and
	// when its context ends.
	blocked, cancelled chan struct{}
}

func newGoUpstream(t *testing.T, tag string) *goUpstream {
	t.Helper()
	s := mcp.NewServer(&mcp.Implementation{Name: "go-upstream", Version: "1"}, nil)
	type echoIn struct {
		Text string `json:"text"`
	}
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "echoes text"}, func(_ context.Context, _ *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "echo: " + in.Text}}}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "slow", Description: "reports progress three times"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		for i := 1; i <= 3; i++ {
			if tok := req.Params.GetProgressToken(); tok != nil {
				if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: float64(i), Total: 3}); err != nil {
					return nil, nil, err
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "odd name!"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "odd"}}}, nil, nil
	})
	s.AddResource(&mcp.Resource{URI: "test://" + tag + "/doc", Name: "doc", MIMEType: "text/plain"}, func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, Text: "the doc"}}}, nil
	})
	s.AddResourceTemplate(&mcp.ResourceTemplate{URITemplate: "test://" + tag + "/items/{id}", Name: "item"}, func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, Text: "item " + strings.TrimPrefix(req.Params.URI, "test://"+tag+"/items/")}}}, nil
	})
	s.AddPrompt(&mcp.Prompt{Name: "greet", Arguments: []*mcp.PromptArgument{{Name: "who"}}}, func(_ context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "hello " + req.Params.Arguments["who"]}}}}, nil
	})
	u := &goUpstream{cap: &capture{}, server: s, blocked: make(chan struct{}, 1), cancelled: make(chan struct{}, 1)}
	mcp.AddTool(s, &mcp.Tool{Name: "block", Description: "waits until cancelled"}, func(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		u.blocked <- struct{}{}
		select {
		case <-ctx.Done():
			u.cancelled <- struct{}{}
			return nil, nil, ctx.Err()
		case <-time.After(time.Minute):
			return nil, nil, errors.New("never cancelled")
		}
	})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
	u.srv = httptest.NewServer(u.cap.wrap(h))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *goUpstream) url() string { return u.srv.URL + "/mcp" }

// identityUpstreamURL is the MCP endpoint of an identity-upstream listening
// on addr, and the audience it accepts.
func identityUpstreamURL(addr string) string { return "http://" + addr + "/mcp" }

// startIdentityUpstream starts examples/identity-upstream on addr, verifying
// every request's identity assertion against the JWKS of the gateway at
// gwURL (issuer gwURL, audience identityUpstreamURL(addr)), and waits until
// it serves. It is stopped when t ends.
func startIdentityUpstream(t *testing.T, addr, gwURL string) {
	t.Helper()
	testenv.StartProcess(t, "identity-upstream", testenv.Binary(t, "identity-upstream"), testenv.ProcessOptions{
		Args:     []string{"-listen", addr, "-jwks", gwURL + identity.JWKSPath, "-issuer", gwURL, "-audience", identityUpstreamURL(addr)},
		ReadyURL: "http://" + addr + "/healthz",
	})
}

func writeFile(t testing.TB, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// rpc posts one JSON-RPC request and returns the response and every SSE
// notification before it.
func rpc(t *testing.T, url, token, method string, params any) (resp rpcResult, notes []json.RawMessage, res *http.Response) {
	t.Helper()
	p, _ := json.Marshal(params)
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":%q,"params":%s}`, rpcID.Add(1), method, p)
	res = post(t, url, token, body)
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Logf("%s: status %d: %s", method, res.StatusCode, b)
		return resp, nil, res
	}
	var msgs []json.RawMessage
	if strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				msgs = append(msgs, json.RawMessage(d))
			}
		}
	} else {
		b, _ := io.ReadAll(res.Body)
		msgs = append(msgs, b)
	}
	if len(msgs) == 0 {
		t.Fatalf("%s: no message in the answer", method)
	}
	if err := json.Unmarshal(msgs[len(msgs)-1], &resp); err != nil {
		t.Fatalf("%s: %v: %s", method, err, msgs[len(msgs)-1])
	}
	return resp, msgs[:len(msgs)-1], res
}

func toolNames(t *testing.T, r rpcResult) []string {
	t.Helper()
	var list struct {
		Tools []struct {
			Name string `json:"name"`
		} `json:"tools"`
	}
	if err := json.Unmarshal(r.Result, &list); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range list.Tools {
		names = append(names, tl.Name)
	}
	slices.Sort(names)
	return names
}

// TestFederation fronts two real go-sdk upstreams over streamable HTTP
// (sessions) and checks the whole data path through the real stack: the
// merged, per-caller list, calls, progress on the request's own stream, a
// resource, a template, a prompt, a completion refused upstream, the 403
// step-up, what the upstreams saw (never the client's token; a verifiable
// identity) and an upstream that went away.
func TestFederation(t *testing.T) {
	t.Parallel()
	alpha, beta, gamma := newGoUpstream(t, "alpha"), newGoUpstream(t, "beta"), newGoUpstream(t, "gamma")
	file := writeFile(t, "upstreams.yaml", fmt.Sprintf(`
upstreams:
  - name: alpha
    url: %s
  - name: beta
    url: %s
    sessions: shared
    tools:
      echo: {scopes: [%s]}
    exclude: [slow]
  - name: gamma
    url: %s
    identity: none
    headers: {X-Api-Key: static-key}
    scopes: [%s]
    include: [echo]
`, alpha.url(), beta.url(), scopeOrg, gamma.url(), scopeOrg))
	gw := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"UPSTREAMS_FILE": file})
	mintFor := func(scopes ...string) string {
		return stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: scopes, Resource: gw.MCP()})
	}
	full, narrow := mintFor(scopeUser, scopeOrg), mintFor(scopeUser)

	r, _, _ := rpc(t, gw.MCP(), full, "tools/list", map[string]any{})
	want := []string{"alpha_block", "alpha_echo", "alpha_odd_name_", "alpha_slow", "beta_block", "beta_echo", "beta_odd_name_", "gamma_echo", "list_my_orgs", "who_am_i"}
	if diff := cmp.Diff(want, toolNames(t, r)); diff != "" {
		t.Errorf("tools/list, every scope (-want +got):\n%s", diff)
	}
	r, _, _ = rpc(t, gw.MCP(), narrow, "tools/list", map[string]any{})
	want = []string{"alpha_block", "alpha_echo", "alpha_odd_name_", "alpha_slow", "beta_block", "beta_odd_name_", "who_am_i"}
	if diff := cmp.Diff(want, toolNames(t, r)); diff != "" {
		t.Errorf("tools/list without %s (-want +got):\n%s", scopeOrg, diff)
	}

	r, _, _ = rpc(t, gw.MCP(), full, "tools/call", map[string]any{"name": "beta_echo", "arguments": map[string]any{"text": "hi"}})
	if r.Error != nil || !strings.Contains(string(r.Result), "echo: hi") {
		t.Errorf("beta_echo: %+v %s", r.Error, r.Result)
	}
	r, _, _ = rpc(t, gw.MCP(), full, "tools/call", map[string]any{"name": "alpha_odd_name_", "arguments": map[string]any{}})
	if r.Error != nil || !strings.Contains(string(r.Result), "odd") {
		t.Errorf("alpha_odd_name_: %+v %s", r.Error, r.Result)
	}

	// An upstream's own scopes cover its prompts and resources too: hidden
	// from lists, and refused with the step-up challenge.
	r, _, _ = rpc(t, gw.MCP(), narrow, "prompts/list", map[string]any{})
	if strings.Contains(string(r.Result), "gamma_greet") || !strings.Contains(string(r.Result), "alpha_greet") {
		t.Errorf("prompts/list without %s: %s", scopeOrg, r.Result)
	}
	r, _, _ = rpc(t, gw.MCP(), narrow, "resources/list", map[string]any{})
	if strings.Contains(string(r.Result), "test://gamma/doc") || !strings.Contains(string(r.Result), "test://alpha/doc") || !strings.Contains(string(r.Result), `"cacheScope":"private"`) {
		t.Errorf("resources/list without %s: %s", scopeOrg, r.Result)
	}
	_, _, res := rpc(t, gw.MCP(), narrow, "resources/read", map[string]any{"uri": "test://gamma/doc"})
	if res.StatusCode != http.StatusForbidden || !strings.Contains(res.Header.Get("WWW-Authenticate"), scopeOrg) {
		t.Errorf("resources/read of gamma without its scope: %d %q", res.StatusCode, res.Header.Get("WWW-Authenticate"))
	}
	r, _, _ = rpc(t, gw.MCP(), full, "resources/read", map[string]any{"uri": "test://gamma/doc"})
	if r.Error != nil || !strings.Contains(string(r.Result), "the doc") {
		t.Errorf("resources/read of gamma: %+v %s", r.Error, r.Result)
	}

	// Step-up: the tool's scope is missing.
	_, _, res = rpc(t, gw.MCP(), narrow, "tools/call", map[string]any{"name": "beta_echo", "arguments": map[string]any{"text": "hi"}})
	if res.StatusCode != http.StatusForbidden || !strings.Contains(res.Header.Get("WWW-Authenticate"), `error="insufficient_scope"`) || !strings.Contains(res.Header.Get("WWW-Authenticate"), scopeOrg) {
		t.Errorf("beta_echo without its scope: %d %q", res.StatusCode, res.Header.Get("WWW-Authenticate"))
	}

	// Progress goes to the client on the request's own stream, then the result.
	r, notes, res := rpc(t, gw.MCP(), full, "tools/call", map[string]any{"name": "alpha_slow", "arguments": map[string]any{}, "_meta": map[string]any{"progressToken": "p-1"}})
	if r.Error != nil || !strings.Contains(string(r.Result), "done") {
		t.Errorf("alpha_slow: %+v %s", r.Error, r.Result)
	}
	if len(notes) != 3 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		t.Errorf("alpha_slow: %d notifications (Content-Type %q), want 3 progress events", len(notes), res.Header.Get("Content-Type"))
	}
	for i, n := range notes {
		var note struct {
			Method string `json:"method"`
			Params struct {
				ProgressToken string  `json:"progressToken"`
				Progress      float64 `json:"progress"`
			} `json:"params"`
		}
		if err := json.Unmarshal(n, &note); err != nil || note.Method != "notifications/progress" || note.Params.ProgressToken != "p-1" || note.Params.Progress != float64(i+1) {
			t.Errorf("notification %d: %s", i, n)
		}
	}

	r, _, _ = rpc(t, gw.MCP(), full, "resources/read", map[string]any{"uri": "test://beta/doc"})
	if r.Error != nil || !strings.Contains(string(r.Result), "the doc") {
		t.Errorf("resources/read: %+v %s", r.Error, r.Result)
	}
	r, _, _ = rpc(t, gw.MCP(), full, "resources/read", map[string]any{"uri": "test://alpha/items/42"})
	if r.Error != nil || !strings.Contains(string(r.Result), "item 42") {
		t.Errorf("resources/read through a template: %+v %s", r.Error, r.Result)
	}
	r, _, _ = rpc(t, gw.MCP(), full, "prompts/get", map[string]any{"name": "beta_greet", "arguments": map[string]any{"who": "bob"}})
	if r.Error != nil || !strings.Contains(string(r.Result), "hello bob") {
		t.Errorf("prompts/get: %+v %s", r.Error, r.Result)
	}
	r, _, _ = rpc(t, gw.MCP(), full, "prompts/list", map[string]any{})
	if r.Error != nil || !strings.Contains(string(r.Result), `"alpha_greet"`) || !strings.Contains(string(r.Result), `"beta_greet"`) {
		t.Errorf("prompts/list: %+v %s", r.Error, r.Result)
	}
	r, _, _ = rpc(t, gw.MCP(), full, "resources/templates/list", map[string]any{})
	if r.Error != nil || !strings.Contains(string(r.Result), "test://alpha/items/{id}") {
		t.Errorf("resources/templates/list: %+v %s", r.Error, r.Result)
	}
	// The go-sdk upstream has no completion handler: its JSON-RPC error
	// comes back unchanged, on HTTP 200.
	r, _, res = rpc(t, gw.MCP(), full, "completion/complete", map[string]any{"ref": map[string]any{"type": "ref/prompt", "name": "alpha_greet"}, "argument": map[string]any{"name": "who", "value": "b"}})
	if res.StatusCode != http.StatusOK || r.Error == nil {
		t.Errorf("completion/complete: status %d, error %+v, result %s", res.StatusCode, r.Error, r.Result)
	}

	// What the upstreams saw: never the client's token, and an identity
	// assertion that verifies against the gateway's JWKS, for alice and for
	// that upstream.
	jwks := fetchJWKS(t, gw.URL+identity.JWKSPath)
	for name, u := range map[string]*goUpstream{"alpha": alpha, "beta": beta} {
		reqs := u.cap.all()
		if len(reqs) == 0 {
			t.Fatalf("%s received nothing", name)
		}
		asserted := 0
		for _, c := range reqs {
			dump := fmt.Sprint(c.header) + string(c.body)
			for _, tok := range []string{full, narrow} {
				if strings.Contains(dump, tok) {
					t.Errorf("%s received the client's token: %s", name, dump)
				}
			}
			if c.header.Get("Authorization") != "" || c.header.Get("Cookie") != "" {
				t.Errorf("%s received Authorization or Cookie: %v", name, c.header)
			}
			if a := c.header.Get(identity.HeaderName); a != "" {
				asserted++
				claims := verifyAssertion(t, jwks, a)
				if claims.Subject == "" || claims.Audience != u.url() || claims.Issuer != gw.URL {
					t.Errorf("%s: assertion claims %+v; want aud %s, iss %s", name, claims, u.url(), gw.URL)
				}
			}
		}
		if asserted == 0 {
			t.Errorf("%s never received an identity assertion", name)
		}
	}
	// identity: none and static headers.
	for _, c := range gamma.cap.all() {
		if c.header.Get(identity.HeaderName) != "" || c.header.Get("X-Api-Key") != "static-key" || c.header.Get("Authorization") != "" {
			t.Errorf("gamma (identity: none, a static header) received %v", c.header)
		}
	}

	// A tool added upstream: list_changed on the gateway's own session's
	// stream refreshes the catalog.
	alpha.server.AddTool(&mcp.Tool{Name: "late", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "late"}}}, nil
	})
	testenv.Eventually(t, 10*time.Second, "alpha_late listed after list_changed", func() bool {
		r, _, _ := rpc(t, gw.MCP(), full, "tools/list", map[string]any{})
		return slices.Contains(toolNames(t, r), "alpha_late")
	})

	// A client that goes away cancels the call upstream.
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, gw.MCP(), strings.NewReader(`{"jsonrpc":"2.0","id":99,"method":"tools/call","params":{"name":"alpha_block","arguments":{}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+full)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
		}
	}()
	select {
	case <-alpha.blocked:
	case <-time.After(10 * time.Second):
		t.Fatal("alpha_block never started")
	}
	cancel()
	select {
	case <-alpha.cancelled:
	case <-time.After(10 * time.Second):
		t.Error("the upstream call was not cancelled when the client went away")
	}
	<-done

	// Per-upstream metrics.
	mres, err := http.Get(gw.MetricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(mres.Body)
	mres.Body.Close()
	for _, want := range []string{
		`mcp_gateway_upstream_calls_total{method="tools/call",outcome="ok",upstream="beta"}`,
		`mcp_gateway_upstream_catalog_entries{kind="tool",upstream="gamma"} 1`,
		`mcp_gateway_upstream_up{upstream="alpha"} 1`,
		`mcp_gateway_upstream_sessions{upstream="alpha"}`,
	} {
		if !strings.Contains(string(mb), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// An upstream that went away: a JSON-RPC error naming it, HTTP 200; the
	// other one still answers.
	beta.srv.CloseClientConnections()
	beta.srv.Close()
	r, _, res = rpc(t, gw.MCP(), full, "tools/call", map[string]any{"name": "beta_echo", "arguments": map[string]any{"text": "hi"}})
	if res.StatusCode != http.StatusOK || r.Error == nil || r.Error.Code != federation.CodeUnavailable || !strings.Contains(r.Error.Message, `upstream "beta"`) {
		t.Errorf("call to a closed upstream: status %d, error %+v", res.StatusCode, r.Error)
	}
	r, _, _ = rpc(t, gw.MCP(), full, "tools/call", map[string]any{"name": "alpha_echo", "arguments": map[string]any{"text": "still"}})
	if r.Error != nil || !strings.Contains(string(r.Result), "echo: still") {
		t.Errorf("alpha_echo after beta went away: %+v %s", r.Error, r.Result)
	}
	if !strings.Contains(gw.Logs(), `"upstream":"beta"`) {
		t.Errorf("no log line names the failing upstream:\n%s", gw.Logs())
	}
}

func fetchJWKS(t *testing.T, url string) jose.JSONWebKeySet {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(res.Body).Decode(&set); err != nil || len(set.Keys) == 0 {
		t.Fatalf("JWKS at %s: %v (%d keys)", url, err, len(set.Keys))
	}
	return set
}

func verifyAssertion(t *testing.T, set jose.JSONWebKeySet, a string) identity.Claims {
	t.Helper()
	jws, err := jose.ParseSignedCompact(a, []jose.SignatureAlgorithm{jose.ES256, jose.RS256})
	if err != nil {
		t.Fatalf("assertion does not parse: %v", err)
	}
	keys := set.Key(jws.Signatures[0].Header.KeyID)
	if len(keys) == 0 {
		t.Fatalf("assertion kid %q not in the JWKS", jws.Signatures[0].Header.KeyID)
	}
	payload, err := jws.Verify(keys[0].Key)
	if err != nil {
		t.Fatalf("assertion does not verify: %v", err)
	}
	var c identity.Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestFederationCollision: two upstreams offering a tool of the same name
// (no prefix) are refused at start, naming both.
func TestFederationCollision(t *testing.T) {
	t.Parallel()
	a, b := newGoUpstream(t, "same"), newGoUpstream(t, "same")
	file := writeFile(t, "upstreams.yaml", fmt.Sprintf(`
upstreams:
  - {name: one, url: %s, prefix: ""}
  - {name: two, url: %s, prefix: ""}
`, a.url(), b.url()))
	err := stacktest.TryGateway(stack.Authz.Addr, stack.Devauth.URL, map[string]string{"UPSTREAMS_FILE": file})
	if err == nil {
		t.Fatal("gateway started with two upstreams offering echo")
	}
	var ce *federation.CollisionError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), `"one"`) || !strings.Contains(err.Error(), `"two"`) {
		t.Errorf("error %v does not name both upstreams", err)
	}
}
