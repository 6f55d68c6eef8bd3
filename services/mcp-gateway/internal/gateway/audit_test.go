package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/protobuf/encoding/protojson"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/audit"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/gateway"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/stacktest"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
)

// auditClientID is the client_id of the tokens the audit tests mint.
const auditClientID = "audit-test-client"

// readAudit decodes the audit log at path strictly: every line one event,
// no member the Event type does not declare. It also returns the raw bytes,
// for the checks that no secret appears anywhere.
func readAudit(t *testing.T, path string) ([]audit.Event, []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var events []audit.Event
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		var e audit.Event
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		events = append(events, e)
	}
	return events, b
}

// checkTimes checks the fields that vary from run to run (time, duration,
// token_ref) for sanity, then zeroes them so that the rest compares exactly.
func checkTimes(t *testing.T, events []audit.Event, from, to time.Time) {
	t.Helper()
	for i := range events {
		e := &events[i]
		if e.Time.Before(from) || e.Time.After(to) || e.Time.Location() != time.UTC {
			t.Errorf("event %d: time %v not in UTC within [%v, %v]", i, e.Time, from, to)
		}
		if e.DurationMS < 0 || e.DurationMS > float64(to.Sub(from).Milliseconds()+1) {
			t.Errorf("event %d: duration_ms %v out of range", i, e.DurationMS)
		}
		e.Time, e.DurationMS = time.Time{}, 0
	}
}

// sortEvents orders events whatever order their requests finished in: an
// event is written after its answer is sent.
var sortEvents = cmpopts.SortSlices(func(a, b audit.Event) bool {
	return fmt.Sprint(a.Status, a.Reason, a.Method, a.Tool, a.Prompt, a.Resource) < fmt.Sprint(b.Status, b.Reason, b.Method, b.Tool, b.Prompt, b.Resource)
})

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// TestAuditLog: through the real stack (devauth, authz, the gateway), every
// kind of decided request is written once with every field: allowed (a tool
// with arguments, under a traceparent; a prompt; a resource), 400 for a
// token in the URL, 401 without a token, with a malformed one and with one
// for another resource, 403 for insufficient scope. The file holds no
// token, no client secret or API key, and not the arguments themselves.
func TestAuditLog(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "audit.log")
	gw := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"AUDIT_LOG": path})
	mintAlice := func(resource string, scopes ...string) string {
		return stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: scopes, Resource: resource, ClientID: auditClientID})
	}
	userTok := mintAlice(gw.MCP(), scopeUser)
	elsewhereTok := mintAlice("http://elsewhere.example/mcp", scopeUser)
	secretArg := "secret-argument-" + rand.Text()
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	args := `{"note":"` + secretArg + `","n":1.0}`
	canonicalArgs := `{"n":1,"note":"` + secretArg + `"}`

	alice := func(e audit.Event) audit.Event {
		e.Subject, e.ClientID, e.ClientIP = stacktest.AliceID, auditClientID, "127.0.0.1"
		return e
	}
	anon := func(e audit.Event) audit.Event { e.ClientIP = "127.0.0.1"; return e }
	reqs := []struct {
		name        string
		url, token  string
		body        string
		hdr         []string
		wantStatus  int
		want        audit.Event // Status is the answer's
		wantTokenRe bool        // authz named the token
	}{
		{"no token", gw.MCP(), "", listBody(), nil, 401,
			anon(audit.Event{Decision: "deny", Reason: "no_token"}), false},
		{"malformed token", gw.MCP(), "not a token", listBody(), nil, 401,
			anon(audit.Event{Decision: "deny", Reason: "malformed_token"}), false},
		{"token in the URL", gw.MCP() + "?access_token=" + userTok, "", listBody(), nil, 400,
			anon(audit.Event{Decision: "deny", Reason: "invalid_request"}), false},
		{"token for another resource", gw.MCP(), elsewhereTok, listBody(), nil, 401,
			anon(audit.Event{Method: "tools/list", Decision: "deny", Reason: "audience_mismatch"}), true},
		{"insufficient scope", gw.MCP(), userTok, callBody("list_my_orgs"), nil, 403,
			alice(audit.Event{Method: "tools/call", Tool: "list_my_orgs", Decision: "deny", Reason: "insufficient_scope", ArgumentsSHA256: sha256Hex("{}")}), true},
		{"allowed tool with arguments and a traceparent", gw.MCP(), userTok,
			`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","arguments":` + args + `}}`,
			[]string{"traceparent", "00-" + traceID + "-00f067aa0ba902b7-01"}, 200,
			alice(audit.Event{Method: "tools/call", Tool: "who_am_i", Decision: "allow", TraceID: traceID, ArgumentsSHA256: sha256Hex(canonicalArgs)}), true},
		{"allowed prompt", gw.MCP(), userTok, `{"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":"greet","arguments":{"who":"x"}}}`, nil, 200,
			alice(audit.Event{Method: "prompts/get", Prompt: "greet", Decision: "allow", ArgumentsSHA256: sha256Hex(`{"who":"x"}`)}), true},
		{"allowed resource", gw.MCP(), userTok, `{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"file:///etc/motd"}}`, nil, 200,
			alice(audit.Event{Method: "resources/read", Resource: "file:///etc/motd", Decision: "allow"}), true},
	}
	from := time.Now().UTC()
	var want []audit.Event
	for _, r := range reqs {
		res := post(t, r.url, r.token, r.body, r.hdr...)
		res.Body.Close()
		if res.StatusCode != r.wantStatus {
			t.Fatalf("%s: status %d, want %d", r.name, res.StatusCode, r.wantStatus)
		}
		w := r.want
		w.Status = res.StatusCode
		want = append(want, w)
	}
	gw.Stop() // the file is complete
	to := time.Now().UTC()

	got, raw := readAudit(t, path)
	checkTimes(t, got, from, to)
	for i := range got {
		// token_ref is authz's SHA-256 over the token, cut to twelve hex
		// digits as in the operational log; present once authz answered.
		ref := got[i].TokenRef
		if ref != "" && (len(ref) != 12 || strings.Trim(ref, "0123456789abcdef") != "") {
			t.Errorf("event %d: token_ref %q is not 12 hex digits", i, ref)
		}
		got[i].TokenRef = ""
	}
	if diff := cmp.Diff(want, got, sortEvents); diff != "" {
		t.Errorf("audit events (-want +got):\n%s", diff)
	}
	for name, secret := range map[string]string{"token": userTok, "other token": elsewhereTok, "argument": secretArg,
		"client secret": stacktest.ClientSecret, "API key": stacktest.APIKey} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("the audit log holds the %s", name)
		}
	}
	if bytes.Contains(raw, []byte("Bearer")) {
		t.Error("the audit log holds an Authorization value")
	}
}

// TestAuditLogTokenRef: allowed and denied requests of one token carry the
// same token_ref, the short one the operational log carries.
func TestAuditLogTokenRef(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "audit.log")
	gw := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"AUDIT_LOG": path})
	tok := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: gw.MCP()})
	for _, body := range []string{listBody(), callBody("list_my_orgs")} {
		res := post(t, gw.MCP(), tok, body)
		res.Body.Close()
	}
	gw.Stop()
	got, _ := readAudit(t, path)
	if len(got) != 2 || got[0].TokenRef == "" || got[0].TokenRef != got[1].TokenRef {
		t.Fatalf("events %+v, want two with one token_ref", got)
	}
	// The 403's "denied" line in the operational log names the token the
	// same way: an operator can go from one log to the other.
	if !strings.Contains(gw.Logs(), `"token_ref":"`+got[0].TokenRef+`"`) {
		t.Errorf("the operational log does not name token_ref %s:\n%s", got[0].TokenRef, gw.Logs())
	}
}

// TestAuditLogSDKClient: a real go-sdk client, through discovery, dynamic
// client registration and the authorization code flow, leaves the 401 of its
// first request and then allowed events with its user and registered client.
func TestAuditLogSDKClient(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "audit.log")
	gw := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"AUDIT_LOG": path})
	c := stacktest.NewOAuthClient(t)
	cs, err := c.Connect(t.Context(), gw.MCP(), "")
	if err != nil {
		t.Fatalf("Connect: %v\nsteps: %q", err, c.Recorder.Steps())
	}
	if _, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "who_am_i", Arguments: map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	cs.Close()
	gw.Stop()

	got, _ := readAudit(t, path)
	if len(got) < 2 {
		t.Fatalf("%d events, want the 401 and at least the tool call: %+v", len(got), got)
	}
	if first := got[0]; first.Decision != "deny" || first.Reason != "no_token" || first.Status != 401 {
		t.Errorf("first event %+v, want the 401 without a token", first)
	}
	var call *audit.Event
	for i, e := range got[1:] {
		if e.Decision != "allow" || e.Subject != stacktest.AliceID || e.ClientID == "" || e.TokenRef == "" {
			t.Errorf("event %d: %+v, want allowed for alice with the registered client and a token_ref", i+1, e)
		}
		if e.ClientID != got[1].ClientID {
			t.Errorf("event %d: client_id %q, want the registered client's %q throughout", i+1, e.ClientID, got[1].ClientID)
		}
		if e.Method == "tools/call" {
			call = &got[i+1]
		}
	}
	if call == nil || call.Tool != "who_am_i" || call.Status != 200 || call.ArgumentsSHA256 != sha256Hex("{}") {
		t.Errorf("tools/call event %+v, want who_am_i, 200, the hash of {}", call)
	}
}

// TestAuditLogRateLimitedAndUnavailable: a request over its budget is
// denied as rate_limited (429) with its caller; one authz cannot decide is
// denied as authz_unavailable (503: fail closed).
func TestAuditLogRateLimitedAndUnavailable(t *testing.T) {
	t.Parallel()
	t.Run("rate limited", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "audit.log")
		gw := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"AUDIT_LOG": path, "RATE_LIMIT": "1/h", "RATE_LIMIT_BURST": "1"})
		tok := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: gw.MCP(), ClientID: auditClientID})
		var statuses []int
		for range 2 {
			res := post(t, gw.MCP(), tok, listBody())
			res.Body.Close()
			statuses = append(statuses, res.StatusCode)
		}
		if diff := cmp.Diff([]int{200, 429}, statuses); diff != "" {
			t.Fatalf("statuses (-want +got):\n%s", diff)
		}
		gw.Stop()
		got, _ := readAudit(t, path)
		checkTimes(t, got, time.Time{}, time.Now().UTC())
		want := []audit.Event{
			{Subject: stacktest.AliceID, ClientID: auditClientID, ClientIP: "127.0.0.1", Method: "tools/list", Decision: "allow", Status: 200},
			{Subject: stacktest.AliceID, ClientID: auditClientID, ClientIP: "127.0.0.1", Method: "tools/list", Decision: "deny", Reason: "rate_limited", Status: 429},
		}
		if diff := cmp.Diff(want, got, sortEvents, cmpopts.IgnoreFields(audit.Event{}, "TokenRef")); diff != "" {
			t.Errorf("audit events (-want +got):\n%s", diff)
		}
	})
	t.Run("authz unavailable", func(t *testing.T) {
		t.Parallel()
		// A port nothing listens on: authz is down.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := ln.Addr().String()
		ln.Close()
		path := filepath.Join(t.TempDir(), "audit.log")
		gw := stacktest.NewGateway(t, dead, stack.Devauth.URL, map[string]string{"AUDIT_LOG": path, "AUTHZ_TIMEOUT": "300ms"})
		res := post(t, gw.MCP(), "some-token", callBody("who_am_i"))
		res.Body.Close()
		if res.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503", res.StatusCode)
		}
		gw.Stop()
		got, raw := readAudit(t, path)
		checkTimes(t, got, time.Time{}, time.Now().UTC())
		want := []audit.Event{{ClientIP: "127.0.0.1", Method: "tools/call", Tool: "who_am_i", Decision: "deny", Reason: "authz_unavailable", Status: 503, ArgumentsSHA256: sha256Hex("{}")}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("audit events (-want +got):\n%s", diff)
		}
		if bytes.Contains(raw, []byte("some-token")) {
			t.Error("the audit log holds the token")
		}
	})
}

// TestAuditLogArguments: with AUDIT_LOG_ARGUMENTS=true the arguments appear,
// as canonical JSON, beside their hash.
func TestAuditLogArguments(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "audit.log")
	gw := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"AUDIT_LOG": path, "AUDIT_LOG_ARGUMENTS": "true"})
	tok := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: gw.MCP()})
	secretArg := "opted-in-argument-" + rand.Text()
	res := post(t, gw.MCP(), tok, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","arguments":{ "z" : [2.50, "`+secretArg+`"], "a": {} }}}`)
	res.Body.Close()
	gw.Stop()
	got, raw := readAudit(t, path)
	canonical := `{"a":{},"z":[2.5,"` + secretArg + `"]}`
	if len(got) != 1 || string(got[0].Arguments) != canonical || got[0].ArgumentsSHA256 != sha256Hex(canonical) {
		t.Fatalf("events %+v, want one with arguments %s and their hash", got, canonical)
	}
	if bytes.Contains(raw, []byte(tok)) {
		t.Error("the audit log holds the token")
	}
}

// TestAuditUpstream: code on an allowed request's path names the upstream
// through the request's context (as federation's routing will), and the
// event carries it. The tool here stands in for a routed one.
func TestAuditUpstream(t *testing.T) {
	t.Parallel()
	routed, err := tools.New(tools.Definition{
		Spec:        tools.Spec{Name: "everything.echo", Description: "Routed.", Scopes: []string{scopeUser}},
		InputSchema: json.RawMessage(`{"type":"object"}`),
	}, func(ctx context.Context, _ *tools.Call, _ json.RawMessage) (*mcp.CallToolResult, error) {
		audit.SetUpstream(ctx, "everything")
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ok"}}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	set, err := tools.NewSet(routed)
	if err != nil {
		t.Fatal(err)
	}
	az := &scriptAuthz{}
	res := &authzv1.AuthorizeResponse{}
	if err := protojson.Unmarshal([]byte(`{"allowed": true, "principal": {"subject": "user-1", "clientId": "c-1", "scopes": ["read:user_data"]}, "tokenRef": "0123456789abcdef0123"}`), res); err != nil {
		t.Fatal(err)
	}
	az.set(res, nil)
	var buf bytes.Buffer
	l := audit.New(&buf, audit.Options{})
	g, err := gateway.New(gateway.Options{Config: loadConfig(t, nil), Authz: az, Tools: set, Audit: l})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	defer srv.Close()
	r := post(t, srv.URL+"/mcp", "tok", callBody("everything.echo"))
	r.Body.Close()
	if r.StatusCode != http.StatusOK {
		t.Fatalf("status %d", r.StatusCode)
	}
	srv.Close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var e audit.Event
	if err := json.Unmarshal(buf.Bytes(), &e); err != nil {
		t.Fatalf("%v: %q", err, buf.String())
	}
	if e.Upstream != "everything" || e.Tool != "everything.echo" || e.Subject != "user-1" || e.ClientID != "c-1" || e.TokenRef != "0123456789ab" {
		t.Errorf("event %+v, want upstream everything for user-1's everything.echo, token_ref cut to 12", e)
	}
}

// TestAuditFederated: the audit event of a routed call names the upstream
// and the tool as the client called it (the prefixed name), allowed or
// refused for a scope the upstream's tool needs; an unknown tool names no
// upstream.
func TestAuditFederated(t *testing.T) {
	t.Parallel()
	up := newGoUpstream(t, "audited")
	file := writeFile(t, "upstreams.yaml", fmt.Sprintf(`
upstreams:
  - name: billing
    url: %s
    prefix: billing_
    tools:
      echo: {scopes: [%s]}
`, up.url(), scopeOrg))
	auditFile := filepath.Join(t.TempDir(), "audit.jsonl")
	gw := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"UPSTREAMS_FILE": file, "AUDIT_LOG": auditFile})
	mintFor := func(scopes ...string) string {
		return stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: scopes, Resource: gw.MCP()})
	}
	full, narrow := mintFor(scopeUser, scopeOrg), mintFor(scopeUser)

	r, _, res := rpc(t, gw.MCP(), full, "tools/call", map[string]any{"name": "billing_echo", "arguments": map[string]any{"text": "hi"}})
	if res.StatusCode != http.StatusOK || r.Error != nil {
		t.Fatalf("echo: %d %+v", res.StatusCode, r.Error)
	}
	_, _, res = rpc(t, gw.MCP(), narrow, "tools/call", map[string]any{"name": "billing_echo", "arguments": map[string]any{"text": "hi"}})
	if res.StatusCode != http.StatusForbidden {
		t.Fatalf("echo without %s: status %d, want 403", scopeOrg, res.StatusCode)
	}
	rpc(t, gw.MCP(), full, "tools/call", map[string]any{"name": "no_such_tool", "arguments": map[string]any{}})

	var events []audit.Event
	testenv.Eventually(t, 10*time.Second, "three audit events", func() bool {
		b, _ := os.ReadFile(auditFile)
		return bytes.Count(b, []byte("\n")) >= 3
	})
	events, _ = readAudit(t, auditFile)
	type summary struct{ Tool, Upstream, Decision, Reason string }
	var got []summary
	for _, e := range events {
		if e.Method == "tools/call" {
			got = append(got, summary{e.Tool, e.Upstream, e.Decision, e.Reason})
		}
	}
	want := []summary{
		{"billing_echo", "billing", "allow", ""},
		{"billing_echo", "billing", "deny", "insufficient_scope"},
		{"no_such_tool", "", "allow", ""},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tools/call events (-want +got):\n%s", diff)
	}
}
