package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The Go upstreams of these tests are go-sdk servers: over HTTP on httptest
// (stateless, which speaks 2026-07-28, or with sessions, which speaks
// 2025-11-25), and over stdio as this test binary run again with
// $UPSTREAM_TEST_SERVER=stdio (see TestMain).

const serverModeEnv = "UPSTREAM_TEST_SERVER"

// legacyEnv makes the stdio server refuse server/discover, as servers of
// protocol versions before 2026-07-28 do.
const legacyEnv = "UPSTREAM_TEST_LEGACY"

func TestMain(m *testing.M) {
	switch os.Getenv(serverModeEnv) {
	case "stdio":
		os.Exit(runStdioServer())
	case "http":
		os.Exit(runHTTPServer())
	}
	os.Exit(m.Run())
}

// lineWriter writes whole lines atomically, so that a tool can write a line of
// its own (garbage, on purpose) between the SDK's messages without splitting
// one.
type lineWriter struct {
	mu  sync.Mutex
	buf []byte
	w   io.Writer
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		if _, err := l.w.Write(l.buf[:i+1]); err != nil {
			return 0, err
		}
		l.buf = l.buf[i+1:]
	}
}

func (l *lineWriter) Close() error { return nil }

func runStdioServer() int {
	out := &lineWriter{w: os.Stdout}
	s := newGoServer(out)
	if os.Getenv(legacyEnv) != "" {
		s.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
			return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
				if method == "server/discover" {
					return nil, &jsonrpc.Error{Code: -32601, Message: "method not found"}
				}
				return next(ctx, method, req)
			}
		})
	}
	t := &mcp.IOTransport{Reader: os.Stdin, Writer: out}
	if err := s.Run(context.Background(), t); err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintln(os.Stderr, "server:", err)
		return 1
	}
	return 0
}

// runHTTPServer serves the Go upstream statelessly (2026-07-28) on a loopback
// port, which it prints as its first line, until stdin closes.
func runHTTPServer() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s := newGoServer(nil)
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s },
		&mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: os.Getenv("UPSTREAM_TEST_JSON") != ""})
	fmt.Println(ln.Addr().String())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	_ = http.Serve(ln, h)
	return 1
}

type addArgs struct {
	A int `json:"a"`
	B int `json:"b"`
}

type countArgs struct {
	N int `json:"n"`
}

type sleepArgs struct {
	MS int `json:"ms"`
}

// cancelled records tools whose context ended before they did (in the HTTP
// servers; the stdio server writes a line to stderr instead).
var cancelled = struct {
	sync.Mutex
	names []string
}{}

func noteCancelled(name string) {
	cancelled.Lock()
	cancelled.names = append(cancelled.names, name)
	cancelled.Unlock()
	if os.Getenv(serverModeEnv) == "stdio" {
		// The stdio tests read this line from the gateway's log.
		fmt.Fprintln(os.Stderr, "cancelled:", name)
	}
}

func sawCancelled(name string) bool {
	cancelled.Lock()
	defer cancelled.Unlock()
	return slices.Contains(cancelled.names, name)
}

func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}

// newGoServer returns the Go upstream. stdout is the stdio server's own
// output, for the tool that writes garbage; nil over HTTP.
func newGoServer(stdout io.Writer) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "go-upstream", Version: "1"}, &mcp.ServerOptions{
		PageSize: 3,
		CompletionHandler: func(_ context.Context, req *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
			return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: []string{req.Params.Argument.Value + "-done"}}}, nil
		},
	})
	mcp.AddTool(s, &mcp.Tool{Name: "add"}, func(_ context.Context, _ *mcp.CallToolRequest, a addArgs) (*mcp.CallToolResult, any, error) {
		return text(fmt.Sprint(a.A + a.B)), nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "progress"}, func(ctx context.Context, req *mcp.CallToolRequest, a countArgs) (*mcp.CallToolResult, any, error) {
		for i := 1; i <= a.N; i++ {
			if tok := req.Params.GetProgressToken(); tok != nil {
				if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: float64(i), Total: float64(a.N)}); err != nil {
					return nil, nil, err
				}
			}
			//lint:ignore SA1019 deprecated in 2026-07-28 but still sent by servers; the gateway must carry it.
			if err := req.Session.Log(ctx, &mcp.LoggingMessageParams{Level: "info", Data: fmt.Sprintf("step %d", i)}); err != nil {
				return nil, nil, err
			}
		}
		return text("done"), nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "sleep"}, func(ctx context.Context, _ *mcp.CallToolRequest, a sleepArgs) (*mcp.CallToolResult, any, error) {
		select {
		case <-time.After(time.Duration(a.MS) * time.Millisecond):
			return text("slept"), nil, nil
		case <-ctx.Done():
			noteCancelled("sleep")
			return nil, nil, ctx.Err()
		}
	})
	mcp.AddTool(s, &mcp.Tool{Name: "poll"}, func(ctx context.Context, req *mcp.CallToolRequest, a countArgs) (*mcp.CallToolResult, any, error) {
		// Ends the answer stream after each progress notification (SEP-1699):
		// the client must resume it to see the rest.
		for i := 1; i <= a.N; i++ {
			if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: req.Params.GetProgressToken(), Progress: float64(i)}); err != nil {
				return nil, nil, err
			}
			if req.Extra != nil && req.Extra.CloseSSEStream != nil {
				req.Extra.CloseSSEStream(mcp.CloseSSEStreamArgs{RetryAfter: 20 * time.Millisecond})
			}
			time.Sleep(50 * time.Millisecond)
		}
		return text("polled"), nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "big"}, func(_ context.Context, _ *mcp.CallToolRequest, a countArgs) (*mcp.CallToolResult, any, error) {
		return text(strings.Repeat("x", a.N)), nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "ask-client"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		pingErr := req.Session.Ping(ctx, nil)
		//lint:ignore SA1019 deprecated in 2026-07-28 but still sent by servers; the gateway must refuse it.
		_, sampleErr := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{MaxTokens: 1})
		return text(fmt.Sprintf("ping: %v; sampling: %v", pingErr, sampleErr)), nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "whoami"}, func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		var env []string
		for _, kv := range os.Environ() {
			k, _, _ := strings.Cut(kv, "=")
			env = append(env, k)
		}
		who := map[string]any{"meta": req.Params.Meta[IdentityMetaKey], "env": env}
		if req.Extra != nil && req.Extra.Header != nil {
			who["header"] = req.Extra.Header.Get(IdentityHeader)
			who["static"] = req.Extra.Header.Get("X-Api-Key")
			who["authorization"] = req.Extra.Header.Get("Authorization")
		}
		b, _ := json.Marshal(who)
		return text(string(b)), nil, nil
	})
	s.AddTool(&mcp.Tool{Name: "region", InputSchema: jsontext.Value(`{"type":"object","properties":{"region":{"type":"string","x-mcp-header":"Region"}}}`)},
		func(_ context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			h := ""
			if req.Extra != nil && req.Extra.Header != nil {
				h = req.Extra.Header.Get("Mcp-Param-Region")
			}
			return text("header " + h), nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "add-tool"}, func(_ context.Context, _ *mcp.CallToolRequest, a countArgs) (*mcp.CallToolResult, any, error) {
		mcp.AddTool(s, &mcp.Tool{Name: fmt.Sprintf("added-%d", a.N)}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return text("added"), nil, nil
		})
		return text("ok"), nil, nil
	})
	if stdout != nil {
		mcp.AddTool(s, &mcp.Tool{Name: "garbage"}, func(_ context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			fmt.Fprintln(stdout, "this is not JSON-RPC")
			return text("after garbage"), nil, nil
		})
		mcp.AddTool(s, &mcp.Tool{Name: "crash"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			os.Exit(3)
			return nil, nil, nil
		})
	}
	s.AddPrompt(&mcp.Prompt{Name: "greet", Arguments: []*mcp.PromptArgument{{Name: "name"}}}, func(_ context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "hello " + req.Params.Arguments["name"]}}}}, nil
	})
	s.AddResource(&mcp.Resource{URI: "test://static/a", Name: "a", MIMEType: "text/plain"}, func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, Text: "content a"}}}, nil
	})
	s.AddResourceTemplate(&mcp.ResourceTemplate{URITemplate: "test://dyn/{id}", Name: "dyn"}, func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, Text: "dynamic"}}}, nil
	})
	return s
}

// mcpAddSleep adds a sleep tool under another name, so that a test can tell
// its own cancellation from others'.
func mcpAddSleep(u *goUpstream, name string) {
	mcp.AddTool(u.Server, &mcp.Tool{Name: name}, func(ctx context.Context, _ *mcp.CallToolRequest, a sleepArgs) (*mcp.CallToolResult, any, error) {
		select {
		case <-time.After(time.Duration(a.MS) * time.Millisecond):
			return text("slept"), nil, nil
		case <-ctx.Done():
			noteCancelled(name)
			return nil, nil, ctx.Err()
		}
	})
}

// goUpstream is a go-sdk server over HTTP.
type goUpstream struct {
	*mcp.Server
	URL string
	// posts counts POSTs by JSON-RPC method; deletes counts DELETEs.
	mu      sync.Mutex
	posts   map[string]int
	deletes atomic.Int64
	// headers holds the headers of the last POST of each method.
	headers map[string]http.Header
}

func (u *goUpstream) count(method string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.posts[method]
}

func (u *goUpstream) lastHeader(method string) http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.headers[method]
}

func (u *goUpstream) sessions() int {
	n := 0
	for range u.Server.Sessions() {
		n++
	}
	return n
}

// startGoUpstream serves a Go upstream: stateless (2026-07-28) or with
// sessions (2025-11-25), answering with SSE or with JSON.
func startGoUpstream(t *testing.T, stateless, jsonResponse bool) *goUpstream {
	t.Helper()
	u := &goUpstream{Server: newGoServer(nil), posts: map[string]int{}, headers: map[string]http.Header{}}
	opts := &mcp.StreamableHTTPOptions{Stateless: stateless, JSONResponse: jsonResponse, PropagateRequestCancellation: true}
	if !stateless {
		// Resumable streams, as 2025-11-25 servers may have.
		opts.EventStore = mcp.NewMemoryEventStore(nil)
	}
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return u.Server }, opts)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPost:
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			var m struct {
				Method string `json:"method"`
			}
			_ = json.Unmarshal(body, &m, json.RejectUnknownMembers(false))
			u.mu.Lock()
			u.posts[m.Method]++
			u.headers[m.Method] = r.Header.Clone()
			u.mu.Unlock()
		case http.MethodDelete:
			u.deletes.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	u.URL = srv.URL + "/mcp"
	return u
}

// metricsRecorder is a Metrics that keeps what it is told.
type metricsRecorder struct {
	mu       sync.Mutex
	outcomes map[string]int
	sessions int
	up       bool
	restarts []time.Time
}

func (m *metricsRecorder) CallDone(method, outcome string, _ time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.outcomes == nil {
		m.outcomes = map[string]int{}
	}
	m.outcomes[method+" "+outcome]++
}

func (m *metricsRecorder) Up(up bool) { m.mu.Lock(); m.up = up; m.mu.Unlock() }
func (m *metricsRecorder) Sessions(n int) {
	m.mu.Lock()
	m.sessions = n
	m.mu.Unlock()
}
func (m *metricsRecorder) Restarted() {
	m.mu.Lock()
	m.restarts = append(m.restarts, time.Now())
	m.mu.Unlock()
}

func (m *metricsRecorder) outcomeCounts() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.outcomes)
}

func (m *metricsRecorder) restartTimes() []time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.restarts)
}

// newTestConn returns a Conn closed when t ends, logging into a buffer.
func newTestConn(t *testing.T, opts Options) (*conn, *testenv.LogBuffer) {
	t.Helper()
	logs := &testenv.LogBuffer{}
	if opts.Name == "" {
		opts.Name = "test"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			t.Logf("--- conn log ---\n%s", logs.String())
		}
	})
	return c.(*conn), logs
}

// stdioServerCommand runs this test binary as the Go stdio upstream.
func stdioServerOptions() Options {
	return Options{Command: []string{os.Args[0]}, Env: []string{serverModeEnv + "=stdio"}}
}

// toolText returns the text of the first content block of a tools/call result.
func toolText(t *testing.T, res jsontext.Value) string {
	t.Helper()
	var r struct {
		Content []struct {
			Text string `json:"text"`
		} `json:"content"`
	}
	if err := json.Unmarshal(res, &r, json.RejectUnknownMembers(false)); err != nil {
		t.Fatalf("result %s: %v", res, err)
	}
	if len(r.Content) == 0 {
		t.Fatalf("result %s has no content", res)
	}
	return r.Content[0].Text
}

// callTool calls a tool with arguments given as JSON.
func callTool(ctx context.Context, c Conn, caller Caller, name, args string, notify func(Message)) (jsontext.Value, error) {
	params := fmt.Sprintf(`{"name":%q,"arguments":%s}`, name, args)
	return c.Call(ctx, caller, "tools/call", jsontext.Value(params), notify)
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// collect gathers notifications.
type collect struct {
	mu   sync.Mutex
	msgs []string
}

func (c *collect) notify(m Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, string(m))
	c.mu.Unlock()
}

func (c *collect) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.msgs)
}
