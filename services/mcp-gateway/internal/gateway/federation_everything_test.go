package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/federation"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/identity"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/stacktest"
)

// TestFederationEverything fronts upstreams nobody here wrote and one that
// verifies the gateway's identity assertions itself, through the real stack,
// with the go-sdk client doing the real OAuth flow:
//
//   - @modelcontextprotocol/server-everything over streamable HTTP (it keeps
//     sessions), behind a capturing proxy;
//   - the same server over stdio, its stdin captured with tee;
//   - examples/identity-upstream, which refuses any request without an
//     assertion that verifies against the gateway's JWKS.
//
// Tools of every kind are listed and called, a long-running tool's progress
// reaches the client, a resource is read and a prompt fetched, a tool needing
// a scope the first login did not grant is hidden and then reached through
// the 403 step-up; server-everything is killed mid-call (a JSON-RPC error
// naming it), restarted (the gateway's session is gone: 404, a new one) and
// works again. Every header and _meta the upstreams received is checked:
// never the client's token, and every assertion verifies with the right
// subject and audience. It starts Node twice: skipped under -short.
func TestFederationEverything(t *testing.T) {
	t.Parallel()
	ev := testenv.StartEverything(t) // skips under -short
	front := newCapture()
	target, _ := url.Parse(ev.URL)
	proxy := httptest.NewServer(front.wrap(httputil.NewSingleHostReverseProxy(&url.URL{Scheme: target.Scheme, Host: target.Host})))
	t.Cleanup(proxy.Close)
	everythingURL := proxy.URL + "/mcp"

	dir := t.TempDir()
	stdin := filepath.Join(dir, "stdio-stdin.jsonl")
	argv := testenv.EverythingCommand(t, "stdio")
	stdioCmd := "tee -a " + testenv.ShellQuote(stdin) + " | exec " + testenv.ShellJoin(argv...)

	identAddr := testenv.FreeAddr(t)
	identURL := identityUpstreamURL(identAddr)
	// The same server twice lists the same resource URIs: refused at
	// start, naming both.
	both := writeFile(t, "both.yaml", fmt.Sprintf(`
start_timeout: 20s
upstreams:
  - {name: everything, url: %s}
  - {name: stdio, command: [sh, -c, %q]}
`, everythingURL, testenv.ShellJoin(argv...)))
	err := stacktest.TryGateway(stack.Authz.Addr, stack.Devauth.URL, map[string]string{"UPSTREAMS_FILE": both})
	var ce *federation.CollisionError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), `upstream "everything"`) || !strings.Contains(err.Error(), `upstream "stdio"`) {
		t.Errorf("one gateway fronting server-everything twice: %v, want a collision naming both", err)
	}
	// What that gateway sent carries assertions of its own key.
	before := len(front.all())

	file := writeFile(t, "upstreams.yaml", fmt.Sprintf(`
start_timeout: 20s
upstreams:
  - name: everything
    url: %s
    tools:
      trigger-long-running-operation: {scopes: [%s]}
  - name: ident
    url: %s
`, everythingURL, scopeOrg, identURL))
	stdioFile := writeFile(t, "stdio.yaml", fmt.Sprintf(`
upstreams:
  - name: stdio
    command: [sh, -c, %q]
    prefix: stdio_
    include: [echo, get-sum]
`, stdioCmd))
	stdioGW := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"UPSTREAMS_FILE": stdioFile})
	gw := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"UPSTREAMS_FILE": file, "LOG_LEVEL": "debug"})

	// identity-upstream starts after the gateway here, so its first catalog
	// request fails and the retry lists it (TestFederationVerifyingUpstreamAtStart
	// starts it first).
	startIdentityUpstream(t, identAddr, gw.URL)

	var progress atomic.Int64
	c := stacktest.NewOAuthClient(t, scopeUser) // the first consent grants read:user_data only
	cs, err := c.ConnectWith(t.Context(), gw.MCP(), "", &mcp.ClientOptions{
		ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) { progress.Add(1) },
	})
	if err != nil {
		t.Fatalf("Connect: %v\nsteps: %q", err, c.Recorder.Steps())
	}
	defer cs.Close()

	listed := func() []string {
		list, err := cs.ListTools(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tl := range list.Tools {
			names = append(names, tl.Name)
		}
		slices.Sort(names)
		return names
	}
	testenv.Eventually(t, 40*time.Second, "ident_whoami listed once identity-upstream answers", func() bool {
		return slices.Contains(listed(), "ident_whoami")
	})
	names := listed()
	for _, want := range []string{"everything_echo", "everything_get-sum", "ident_whoami", "who_am_i"} {
		if !slices.Contains(names, want) {
			t.Errorf("tools/list lacks %s: %q", want, names)
		}
	}
	for _, hidden := range []string{"everything_trigger-long-running-operation", "list_my_orgs"} {
		if slices.Contains(names, hidden) {
			t.Errorf("tools/list shows %s, which needs %s or is excluded", hidden, scopeOrg)
		}
	}

	text := func(res *mcp.CallToolResult) string {
		var b strings.Builder
		for _, c := range res.Content {
			if tc, ok := c.(*mcp.TextContent); ok {
				b.WriteString(tc.Text)
			}
		}
		return b.String()
	}
	call := func(name string, args map[string]any) (*mcp.CallToolResult, error) {
		return cs.CallTool(t.Context(), &mcp.CallToolParams{Name: name, Arguments: args})
	}
	res, err := call("everything_get-sum", map[string]any{"a": 2, "b": 40})
	if err != nil || !strings.Contains(text(res), "42") {
		t.Errorf("everything_get-sum: %v %v", err, res)
	}
	// The stdio upstream, behind a gateway of its own.
	stdioToken := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: stdioGW.MCP()})
	r, _, _ := rpc(t, stdioGW.MCP(), stdioToken, "tools/list", map[string]any{})
	if got := toolNames(t, r); !slices.Equal(got, []string{"list_my_orgs", "stdio_echo", "stdio_get-sum", "who_am_i"}) && !slices.Equal(got, []string{"stdio_echo", "stdio_get-sum", "who_am_i"}) {
		t.Errorf("stdio gateway tools/list: %q", got)
	}
	r, _, _ = rpc(t, stdioGW.MCP(), stdioToken, "tools/call", map[string]any{"name": "stdio_get-sum", "arguments": map[string]any{"a": 2, "b": 40}})
	if r.Error != nil || !strings.Contains(string(r.Result), "42") {
		t.Errorf("stdio_get-sum: %+v %s", r.Error, r.Result)
	}
	r, _, _ = rpc(t, stdioGW.MCP(), stdioToken, "resources/read", map[string]any{"uri": "demo://resource/static/document/architecture.md"})
	if r.Error != nil || !strings.Contains(string(r.Result), "contents") {
		t.Errorf("stdio resources/read: %+v %.200s", r.Error, r.Result)
	}

	res, err = call("ident_whoami", nil)
	if err != nil || res.IsError {
		t.Fatalf("ident_whoami: %v %v", err, res)
	}
	var who struct {
		Sub      string `json:"sub"`
		ClientID string `json:"client_id"`
	}
	b, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(b, &who); err != nil || who.Sub == "" || who.ClientID == "" || who.Sub == federation.GatewaySubject {
		t.Errorf("ident_whoami: the upstream verified %s", b)
	}

	// Step-up: the long-running tool needs read:org_data; the go-sdk client
	// meets the 403, signs in again for it, and the call goes through, its
	// progress notifications arriving on the way.
	res, err = cs.CallTool(t.Context(), &mcp.CallToolParams{
		Name: "everything_trigger-long-running-operation", Arguments: map[string]any{"duration": 0.5, "steps": 5},
		Meta: mcp.Meta{"progressToken": "lro-1"},
	})
	if err != nil || !strings.Contains(text(res), "Long running operation completed") {
		t.Fatalf("long-running operation after step-up: %v %v\nsteps: %q", err, res, c.Recorder.Steps())
	}
	// The go-sdk client hands notifications to their handler
	// asynchronously: the last may land just after the result.
	testenv.Eventually(t, 5*time.Second, "5 progress notifications", func() bool { return progress.Load() >= 5 })
	if n := progress.Load(); n != 5 {
		t.Errorf("%d progress notifications, want 5", n)
	}
	if !slices.Contains(c.Requested, scopeOrg) {
		t.Errorf("the step-up authorization asked for %q, without %s", c.Requested, scopeOrg)
	}

	resources, err := cs.ListResources(t.Context(), nil)
	if err != nil || len(resources.Resources) == 0 {
		t.Fatalf("resources/list: %v", err)
	}
	rr, err := cs.ReadResource(t.Context(), &mcp.ReadResourceParams{URI: resources.Resources[0].URI})
	if err != nil || len(rr.Contents) == 0 {
		t.Errorf("resources/read %s: %v", resources.Resources[0].URI, err)
	}
	pr, err := cs.GetPrompt(t.Context(), &mcp.GetPromptParams{Name: "everything_simple-prompt"})
	if err != nil || len(pr.Messages) == 0 {
		t.Errorf("prompts/get everything_simple-prompt: %v", err)
	}
	cr, err := cs.Complete(t.Context(), &mcp.CompleteParams{
		Ref:      &mcp.CompleteReference{Type: "ref/prompt", Name: "everything_completable-prompt"},
		Argument: mcp.CompleteParamsArgument{Name: "department", Value: "En"},
	})
	if err != nil || !slices.Contains(cr.Completion.Values, "Engineering") {
		t.Errorf("completion/complete: %v %+v", err, cr)
	}

	// Killed mid-call: a JSON-RPC error naming the upstream, at once.
	started := make(chan struct{})
	var once atomic.Bool
	cs2, err := c.ConnectWith(t.Context(), gw.MCP(), "", &mcp.ClientOptions{
		ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) {
			if once.CompareAndSwap(false, true) {
				close(started)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cs2.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := cs2.CallTool(t.Context(), &mcp.CallToolParams{
			Name: "everything_trigger-long-running-operation", Arguments: map[string]any{"duration": 30, "steps": 60},
			Meta: mcp.Meta{"progressToken": "lro-2"},
		})
		errc <- err
	}()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("no progress from the long-running operation")
	}
	ev.Kill()
	select {
	case err := <-errc:
		var rpcErr *jsonrpc.Error
		if !errors.As(err, &rpcErr) || rpcErr.Code != federation.CodeUnavailable || !strings.Contains(rpcErr.Message, `upstream "everything"`) {
			t.Errorf("call when the upstream died: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the call did not fail when the upstream died")
	}
	// Restarted: the gateway's session for this caller is gone (404), a new
	// one is made, and the call works.
	ev.Start(t)
	res, err = call("everything_echo", map[string]any{"message": "back"})
	if err != nil || !strings.Contains(text(res), "back") {
		t.Errorf("everything_echo after the restart: %v %v", err, res)
	}
	if !strings.Contains(gw.Logs(), "upstream session expired") {
		t.Error("no session expiry logged after the restart")
	}

	// What the upstreams received.
	jwks := fetchJWKS(t, gw.URL+identity.JWKSPath)
	stdioJWKS := fetchJWKS(t, stdioGW.URL+identity.JWKSPath)
	// The client's tokens, as sent (the first login's and the step-up's),
	// and the one minted for the stdio gateway: none may reach an upstream,
	// in any header, body or _meta, with or without "Bearer".
	tokens := append(c.Recorder.Tokens(), stdioToken)
	if len(tokens) < 3 {
		t.Fatalf("the client sent %d tokens, want the first login's and the step-up's", len(tokens)-1)
	}
	checkNoToken := func(where, dump string) {
		t.Helper()
		if strings.Contains(strings.ToLower(dump), "bearer") {
			t.Errorf("%s received a bearer token: %.500s", where, dump)
		}
		for _, tok := range tokens {
			if strings.Contains(dump, tok) {
				t.Errorf("%s received a client token: %.500s", where, dump)
			}
		}
	}
	asserted := 0
	for i, r := range front.all() {
		checkNoToken("server-everything (HTTP)", fmt.Sprint(r.header)+string(r.body))
		if i < before {
			continue
		}
		if r.header.Get("Authorization") != "" || r.header.Get("Cookie") != "" {
			t.Errorf("server-everything received Authorization or Cookie: %v", r.header)
		}
		if a := r.header.Get(identity.HeaderName); a != "" {
			asserted++
			claims := verifyAssertion(t, jwks, a)
			if claims.Audience != everythingURL || claims.Issuer != gw.URL || (claims.Subject != who.Sub && claims.Subject != federation.GatewaySubject) {
				t.Errorf("server-everything: assertion %+v; want aud %s, sub %s", claims, everythingURL, who.Sub)
			}
		}
	}
	if asserted == 0 {
		t.Error("server-everything never received an identity assertion")
	}
	lines := 0
	fh, err := os.Open(stdin)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		checkNoToken("server-everything (stdio)", sc.Text())
		var msg struct {
			Method string `json:"method"`
			Params struct {
				Meta map[string]any `json:"_meta"`
			} `json:"params"`
		}
		if json.Unmarshal(sc.Bytes(), &msg) != nil || msg.Method != "tools/call" {
			continue
		}
		lines++
		a, _ := msg.Params.Meta[identity.MetaKey].(string)
		if a == "" {
			t.Errorf("stdio tools/call without an identity: %s", sc.Text())
			continue
		}
		claims := verifyAssertion(t, stdioJWKS, a)
		if claims.Subject != who.Sub || claims.Audience != identity.StdioAudience("stdio") || claims.Issuer != stdioGW.URL {
			t.Errorf("stdio assertion %+v; want sub %s, aud %s", claims, who.Sub, identity.StdioAudience("stdio"))
		}
	}
	if lines == 0 {
		t.Error("the stdio upstream received no tools/call")
	}
	if !strings.Contains(gw.Logs(), `"upstream":"everything"`) {
		t.Error("no log line names the upstream")
	}
}

func newCapture() *capture { return &capture{} }
