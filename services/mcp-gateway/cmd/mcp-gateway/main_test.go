package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpauthz/mcpauthz/internal/scopes"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/config"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/stacktest"
)

// runTimeout bounds every runBinary: each run is expected to exit by itself
// (a refused configuration, -list-env, -healthcheck), so one that serves
// instead fails here rather than at the package's timeout.
const runTimeout = 30 * time.Second

// runBinary runs the real mcp-gateway binary to completion with env and args.
// It fails t when the binary has not exited within runTimeout.
func runBinary(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Binary(t, "mcp-gateway"), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("mcp-gateway %q did not exit within %s (killed: %v); stderr:\n%s", args, runTimeout, err, errb.String())
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestListEnv(t *testing.T) {
	t.Parallel()
	out, errOut, code := runBinary(t, nil, "-list-env")
	if code != 0 || errOut != "" {
		t.Fatalf("-list-env: exit %d, stderr %q", code, errOut)
	}
	got := strings.Split(strings.TrimSpace(out), "\n")
	if diff := cmp.Diff(config.EnvNames(), got); diff != "" {
		t.Errorf("-list-env (-want +got):\n%s", diff)
	}
	if !slices.IsSorted(got) {
		t.Errorf("-list-env not sorted: %q", got)
	}
}

// manyScopes returns n distinct scopes, separated by spaces: with the tools'
// own, more than authz accepts in one question.
func manyScopes(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "scope:%d ", i)
	}
	return b.String()
}

func TestBadConfiguration(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	ok := "PROPELAUTH_AUTH_URL=http://127.0.0.1:9"
	tests := []struct {
		name    string
		env     []string
		args    []string
		wantVar string
	}{
		{"no auth server", nil, nil, "PROPELAUTH_AUTH_URL"},
		{"bad scopes", []string{ok, `SCOPES=read"user`}, nil, "SCOPES"},
		{"scope longer than authz takes", []string{ok, "SCOPES=" + strings.Repeat("s", 257)}, nil, "SCOPES"},
		{"more scopes than authz takes", []string{ok, "SCOPES=" + manyScopes(scopes.MaxCount)}, nil, "SCOPES"},
		{"server url with path", []string{ok, "MCP_SERVER_URL=https://mcp.example.com/mcp"}, nil, "MCP_SERVER_URL"},
		{"bad timeout", []string{ok, "AUTHZ_TIMEOUT=fast"}, nil, "AUTHZ_TIMEOUT"},
		{"bad origin", []string{ok, "MCP_ALLOWED_ORIGINS=*"}, nil, "MCP_ALLOWED_ORIGINS"},
		{"bad bool", []string{ok, "TOOLS_LIST_ALL=maybe"}, nil, "TOOLS_LIST_ALL"},
		{"bad log level", []string{ok, "LOG_LEVEL=chatty"}, nil, "LOG_LEVEL"},
		{"decision cache TTL too long", []string{ok, "DECISION_CACHE_TTL=5m"}, nil, "DECISION_CACHE_TTL"},
		{"decision cache TTL without unit", []string{ok, "DECISION_CACHE_TTL=1"}, nil, "DECISION_CACHE_TTL"},
		{"busy port", []string{ok, "MCP_LISTEN=" + busy.Addr().String()}, nil, "MCP_LISTEN"},
		{"busy metrics port", []string{ok, "MCP_LISTEN=127.0.0.1:0", "MCP_METRICS_LISTEN=" + busy.Addr().String()}, nil, "MCP_METRICS_LISTEN"},
		{"bad metrics address", []string{ok, "MCP_METRICS_LISTEN=metrics"}, nil, "MCP_METRICS_LISTEN"},
		{"missing upstreams file", []string{ok, "UPSTREAMS_FILE=/nonexistent/upstreams.yaml"}, nil, "UPSTREAMS_FILE"},
		{"stray argument", []string{ok}, []string{"serve"}, "-list-env"},
		{"relative audit log", []string{ok, "AUDIT_LOG=audit.log"}, nil, "AUDIT_LOG"},
		{"audit log in a missing directory", []string{ok, "MCP_LISTEN=127.0.0.1:0", "MCP_METRICS_LISTEN=127.0.0.1:0", "AUDIT_LOG=/nonexistent-dir-for-mcp-gateway-tests/audit.log"}, nil, "AUDIT_LOG"},
		{"audit arguments without an audit log", []string{ok, "AUDIT_LOG_ARGUMENTS=true"}, nil, "AUDIT_LOG_ARGUMENTS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, errOut, code := runBinary(t, tt.env, tt.args...)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			lines := strings.Split(strings.TrimSpace(errOut), "\n")
			last := lines[len(lines)-1]
			if !strings.HasPrefix(last, "mcp-gateway: ") || !strings.Contains(last, tt.wantVar) {
				t.Errorf("last stderr line %q does not name %s", last, tt.wantVar)
			}
		})
	}
}

// TestUpstreamCollision: two upstreams offering a tool of the same name,
// both unprefixed, stop the binary at start: exit 1 and one line naming
// UPSTREAMS_FILE, the tool and both upstreams.
func TestUpstreamCollision(t *testing.T) {
	t.Parallel()
	var urls []string
	for range 2 {
		s := mcp.NewServer(&mcp.Implementation{Name: "echo-upstream", Version: "1"}, nil)
		mcp.AddTool(s, &mcp.Tool{Name: "echo"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{}, nil, nil
		})
		srv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil))
		t.Cleanup(srv.Close)
		urls = append(urls, srv.URL+"/mcp")
	}
	file := filepath.Join(t.TempDir(), "upstreams.yaml")
	conf := fmt.Sprintf("upstreams:\n  - {name: first, url: %s, prefix: \"\"}\n  - {name: second, url: %s, prefix: \"\"}\n", urls[0], urls[1])
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runBinary(t, []string{"PROPELAUTH_AUTH_URL=http://127.0.0.1:9", "MCP_LISTEN=127.0.0.1:0", "MCP_METRICS_LISTEN=127.0.0.1:0", "UPSTREAMS_FILE=" + file})
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	var errLines []string
	for _, l := range strings.Split(strings.TrimSpace(errOut), "\n") {
		if strings.HasPrefix(l, "mcp-gateway: ") {
			errLines = append(errLines, l)
		}
	}
	if len(errLines) != 1 {
		t.Fatalf("error lines %q, want one\nstderr:\n%s", errLines, errOut)
	}
	for _, want := range []string{"UPSTREAMS_FILE", `"echo"`, `upstream "first"`, `upstream "second"`} {
		if !strings.Contains(errLines[0], want) {
			t.Errorf("error line %q does not name %s", errLines[0], want)
		}
	}
}

// TestBinary starts the real binary against a real devauth and authz, checks
// it serves, then sends SIGTERM while a request is in flight: the request
// completes and the process exits 0.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("drains a slow request at SIGTERM: go test without -short runs it")
	}
	t.Parallel()
	d := stacktest.NewDevauth(t)
	az := stacktest.NewAuthz(t, d, "")
	p := testenv.StartProcess(t, "mcp-gateway", testenv.Binary(t, "mcp-gateway"), testenv.ProcessOptions{
		Env: []string{
			"MCP_LISTEN=127.0.0.1:0",
			"MCP_METRICS_LISTEN=127.0.0.1:0",
			"AUTHZ_ADDR=" + az.Addr,
			"PROPELAUTH_AUTH_URL=" + d.URL,
			"LOG_LEVEL=debug",
			// Above the slow introspection below.
			"AUTHZ_TIMEOUT=5s",
			// The watcher of the decision cache must not hold up shutdown.
			"DECISION_CACHE_TTL=5s",
		},
		ReadyListener: "MCP_LISTEN", ReadyPath: "/healthz",
	})
	addr, opsAddr := listening(t, p, "MCP_LISTEN"), listening(t, p, "MCP_METRICS_LISTEN")
	url, opsURL := "http://"+addr, "http://"+opsAddr
	// MCP_SERVER_URL is unset: the resource names the port bound.
	resource := "http://localhost:" + port(addr) + "/mcp"
	var prm struct{ Resource string }
	if err := json.Unmarshal([]byte(fetchBody(t, url+"/.well-known/oauth-protected-resource/mcp")), &prm); err != nil || prm.Resource != resource {
		t.Errorf("resource %q (%v), want %q", prm.Resource, err, resource)
	}
	for _, tt := range []struct {
		url  string
		want int
	}{
		{url + "/healthz", http.StatusOK},
		{url + "/.well-known/oauth-protected-resource/mcp", http.StatusOK},
		{url + "/.well-known/oauth-authorization-server", http.StatusOK},
		{url + "/metrics", http.StatusNotFound},
		{url + "/readyz", http.StatusNotFound},
		{opsURL + "/healthz", http.StatusOK},
		{opsURL + "/readyz", http.StatusOK},
		{opsURL + "/metrics", http.StatusOK},
		{opsURL + "/mcp", http.StatusNotFound},
	} {
		res, err := http.Get(tt.url)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tt.want {
			t.Errorf("GET %s: %d, want %d", tt.url, res.StatusCode, tt.want)
		}
	}
	if _, _, code := runBinary(t, nil, "-healthcheck", url+"/healthz"); code != 0 {
		t.Errorf("-healthcheck of a live gateway: exit %d", code)
	}
	if _, _, code := runBinary(t, nil, "-healthcheck", url+"/nothing"); code != 1 {
		t.Errorf("-healthcheck of a 404: exit %d, want 1", code)
	}

	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(fetchBody(t, opsURL+"/metrics"), "\nmcp_gateway_decision_cache_stream_up 1\n") {
		if time.Now().After(deadline) {
			t.Fatal("the decision cache's stream is not up after 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}

	token := d.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{"read:user_data"}, Resource: resource})
	d.Fault(t, "ok", 2000) // slow introspection: the next request stays in flight
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, url+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i"}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("in-flight request: %v", err)
			done <- 0
			return
		}
		res.Body.Close()
		done <- res.StatusCode
	}()
	d.WaitIntrospections(t, 1)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The public listener closes and drains the request in flight; the
	// operational one still answers meanwhile, and stops after it.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		res, err := http.Get(url + "/healthz")
		if err != nil {
			break
		}
		res.Body.Close()
		if time.Now().After(deadline) {
			t.Fatal("the public listener still accepts connections 10s after SIGTERM")
		}
	}
	select {
	case status := <-done:
		t.Fatalf("the request in flight ended (%d) before the check of the operational listener; the slow introspection is too short", status)
	default:
	}
	if res, err := http.Get(opsURL + "/metrics"); err != nil {
		t.Errorf("operational listener during the drain: %v", err)
	} else {
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("operational listener during the drain: %d", res.StatusCode)
		}
	}
	if status := <-done; status != http.StatusOK {
		t.Errorf("request in flight at SIGTERM: %d, want 200", status)
	}
	if err := p.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v, want 0", err)
	}

	logs := p.Output()
	if strings.Contains(logs, token) {
		t.Error("the gateway logged a raw token")
	}
	var sawStart, sawStop, sawCache bool
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Errorf("log line is not JSON: %q", line)
			continue
		}
		switch entry["msg"] {
		case "starting mcp-gateway":
			sawStart = true
		case "decision cache on: invalidation stream up":
			sawCache = true
		case "stopped":
			sawStop = true
		}
	}
	if !sawStart || !sawStop || !sawCache {
		t.Errorf("logs lack start (%v), decision cache on (%v) or stop (%v):\n%s", sawStart, sawCache, sawStop, logs)
	}
}

// listening returns the address p logged it listens on for listener.
func listening(t *testing.T, p *testenv.Process, listener string) string {
	t.Helper()
	addr, err := p.Listening(t.Context(), listener)
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func fetchBody(t *testing.T, url string) string {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestGOGCDefault checks the garbage-collection target the running binary
// reports in /metrics: config.DefaultGOGC when GOGC is unset, GOGC's value
// (which the Go runtime applies itself) when it is set.
func TestGOGCDefault(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"unset", nil, config.Defaults().GOGC},
		{"set", []string{"GOGC=150"}, "150"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := testenv.StartProcess(t, "mcp-gateway", testenv.Binary(t, "mcp-gateway"), testenv.ProcessOptions{
				Env: append([]string{
					"MCP_LISTEN=127.0.0.1:0",
					"MCP_METRICS_LISTEN=127.0.0.1:0",
					"AUTHZ_ADDR=127.0.0.1:9", // nobody: /metrics does not need authz
					"PROPELAUTH_AUTH_URL=http://127.0.0.1:9",
				}, tt.env...),
				ReadyListener: "MCP_METRICS_LISTEN", ReadyPath: "/healthz",
			})
			body := fetchBody(t, "http://"+listening(t, p, "MCP_METRICS_LISTEN")+"/metrics")
			if want := "\ngo_gc_gogc_percent " + tt.want + "\n"; !strings.Contains(body, want) {
				i := strings.Index(body, "\ngo_gc_gogc_percent")
				t.Errorf("/metrics lacks %q; has %q", strings.TrimSpace(want), body[max(i, 0):min(max(i, 0)+40, len(body))])
			}
		})
	}
}

// TestOneListener: with MCP_METRICS_LISTEN equal to MCP_LISTEN the binary
// serves the public and the operational routes on that one listener, as
// before the operational ones had a port of their own.
func TestOneListener(t *testing.T) {
	t.Parallel()
	// A port of its own: equal addresses with port 0 are two listeners.
	addr := testenv.FreeAddr(t)
	url := "http://" + addr
	testenv.StartProcess(t, "mcp-gateway", testenv.Binary(t, "mcp-gateway"), testenv.ProcessOptions{
		Env: []string{
			"MCP_LISTEN=" + addr,
			"MCP_METRICS_LISTEN=" + addr,
			"MCP_SERVER_URL=" + url,
			"AUTHZ_ADDR=127.0.0.1:9", // nobody: /readyz answers 503
			"PROPELAUTH_AUTH_URL=http://127.0.0.1:9",
		},
		ReadyURL: url + "/healthz",
	})
	for path, want := range map[string]int{
		"/healthz": http.StatusOK,
		"/metrics": http.StatusOK,
		"/readyz":  http.StatusServiceUnavailable,
		"/.well-known/oauth-protected-resource/mcp": http.StatusOK,
		"/nothing": http.StatusNotFound,
	} {
		res, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, res.StatusCode, want)
		}
	}
}

// TestAuditLogFile: the real binary appends an audit event for a request
// without a token to AUDIT_LOG, created 0600; after the file is moved away,
// SIGHUP makes it write to a new file at the path (logrotate), and SIGTERM
// leaves every event written.
func TestAuditLogFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	p := testenv.StartProcess(t, "mcp-gateway", testenv.Binary(t, "mcp-gateway"), testenv.ProcessOptions{
		Env: []string{
			"MCP_LISTEN=127.0.0.1:0",
			"MCP_METRICS_LISTEN=127.0.0.1:0",
			// Requests without a token are decided without authz.
			"PROPELAUTH_AUTH_URL=http://127.0.0.1:9",
			"AUDIT_LOG=" + path,
		},
		ReadyListener: "MCP_LISTEN", ReadyPath: "/healthz",
	})
	url := "http://" + listening(t, p, "MCP_LISTEN") + "/mcp"
	noToken := func() {
		t.Helper()
		res, err := http.Post(url, "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401", res.StatusCode)
		}
	}
	// lines waits until the file at path holds n lines: the writer is
	// asynchronous.
	lines := func(path string, n int) []string {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			b, _ := os.ReadFile(path)
			got := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(b) > 0 && len(got) == n {
				return got
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s holds %q, want %d lines", path, b, n)
			}
		}
	}

	noToken()
	lines(path, 1)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("audit log mode %v, want 0600", fi.Mode().Perm())
	}
	rotated := filepath.Join(dir, "audit.log.1")
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(p.Output(), "audit log reopened on SIGHUP"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no reopen logged after SIGHUP:\n%s", p.Output())
		}
	}
	noToken()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v, want 0", err)
	}
	for _, f := range []string{rotated, path} {
		var e struct {
			Decision, Reason string
			Status           int
		}
		if err := json.Unmarshal([]byte(lines(f, 1)[0]), &e); err != nil || e.Decision != "deny" || e.Reason != "no_token" || e.Status != 401 {
			t.Errorf("%s: %+v (%v), want the 401 without a token", f, e, err)
		}
	}
}
