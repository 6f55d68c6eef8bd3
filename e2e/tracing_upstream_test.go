package e2e

import (
	"bytes"
	"context"
	"encoding/json"
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

	"github.com/modelcontextprotocol/go-sdk/mcp"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	procstack "github.com/mcpauthz/mcpauthz/internal/stack"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// upstreamModeEnv, set to "stdio" in a child's environment, makes the e2e
// test binary a stdio MCP upstream (TestMain) instead of running tests.
const upstreamModeEnv = "MCPAUTHZ_E2E_UPSTREAM"

func TestMain(m *testing.M) {
	if os.Getenv(upstreamModeEnv) == "stdio" {
		if err := metaServer().Run(context.Background(), &mcp.StdioTransport{}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// metaServer is an MCP server whose tool "meta" answers with the params._meta
// of the call as it arrived, as JSON text.
func metaServer() *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "meta-upstream", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "meta", Description: "answers with the call's _meta"}, func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		b, err := json.Marshal(req.Params.Meta)
		if err != nil {
			return nil, nil, err
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: string(b)}}}, nil, nil
	})
	return s
}

// headerLog keeps the traceparent header of every tools/call an HTTP
// upstream received.
type headerLog struct {
	mu           sync.Mutex
	traceparents []string
	identities   []string // X-Mcpauthz-Identity
}

func (l *headerLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if bytes.Contains(body, []byte(`"tools/call"`)) {
			l.mu.Lock()
			l.traceparents = append(l.traceparents, r.Header.Get("Traceparent"))
			l.identities = append(l.identities, r.Header.Get("X-Mcpauthz-Identity"))
			l.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}

// identityAssertions returns the X-Mcpauthz-Identity header of every
// tools/call.
func (l *headerLog) identityAssertions() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.identities)
}

func (l *headerLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.traceparents)
}

// TestTracingUpstreams runs the gateway, exporting spans, in front of two
// upstreams: a go-sdk server over streamable HTTP in this process, and this
// test binary as a stdio server. A tools/call of each, with the client's
// trace context in params._meta, is one trace: the gateway's request span,
// under it a client span of the call to the upstream (named for the
// upstream's own tool, with the upstream's name), and for HTTP the HTTP
// client span under that. The upstream gets the trace context the MCP way,
// in params._meta (traceparent, tracestate), with the gateway's client span
// as parent (never the client's own span, which the gateway's span is the
// child of), and over HTTP in the traceparent header too. The audit event
// of each call names the upstream, the tool as the client called it and the
// trace. No export holds the client's token, the user's email, the stack's
// credentials or the identity assertion.
func TestTracingUpstreams(t *testing.T) {
	slow(t)
	t.Parallel()
	col := startCollector(t)

	hdrs := &headerLog{}
	srv := metaServer()
	web := httptest.NewServer(hdrs.wrap(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil)))
	t.Cleanup(web.Close)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "upstreams.yaml")
	conf := fmt.Sprintf(`upstreams:
  - name: web
    url: %s/mcp
  - name: local
    command: [%q]
    env: {%s: stdio}
`, web.URL, exe, upstreamModeEnv)
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	auditFile := filepath.Join(dir, "audit.jsonl")
	s := procstack.New(t, procstack.Options{
		Authz: 1, Gateways: 1,
		GatewayEnv: []string{
			"OTEL_BSP_SCHEDULE_DELAY=50", "OTEL_EXPORTER_OTLP_ENDPOINT=" + col.httpURL,
			"UPSTREAMS_FILE=" + file, "AUDIT_LOG=" + auditFile,
		},
	})
	token := mintToken(t, s)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "tracing-upstreams-test", Version: "1.0.0"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   "http://" + s.Gateways[0].Addr + "/mcp",
		HTTPClient: &http.Client{Transport: headerTransport{token: token}},
	}, nil)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	defer cs.Close()

	const (
		clientSpan = "00f067aa0ba902b7"
		state      = "congo=t61rcWkgMzE"
	)
	tests := []struct {
		upstream, traceID string
	}{
		{"web", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"local", "5cf92f3577b34da6a3ce929d0e0e4737"},
	}
	for _, tt := range tests {
		t.Run(tt.upstream, func(t *testing.T) {
			tool := tt.upstream + "_meta"
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{}, Meta: mcp.Meta{
				"traceparent": "00-" + tt.traceID + "-" + clientSpan + "-01",
				"tracestate":  state,
				"baggage":     "user=alice",
			}})
			if err != nil || res.IsError || len(res.Content) != 1 {
				t.Fatalf("%s: %v %v", tool, res, err)
			}
			var seen map[string]any
			if err := json.Unmarshal([]byte(res.Content[0].(*mcp.TextContent).Text), &seen); err != nil {
				t.Fatal(err)
			}
			tp, _ := seen["traceparent"].(string)
			parts := strings.Split(tp, "-")
			if len(parts) != 4 || parts[1] != tt.traceID || parts[2] == clientSpan {
				t.Fatalf("the upstream got _meta.traceparent %q; want the client's trace %s under a span of the gateway's", tp, tt.traceID)
			}
			if seen["tracestate"] != state {
				t.Errorf("the upstream got _meta.tracestate %v, want %q", seen["tracestate"], state)
			}
			if _, ok := seen["baggage"]; ok {
				t.Errorf("the client's baggage reached the upstream: %v", seen)
			}

			// The gateway's span ends last, and spans come in batches: wait
			// for the server span, its client span and, over HTTP, the
			// HTTP span under that.
			var (
				tr     []span
				gw, up span
			)
			testenv.Eventually(t, 20*time.Second, "the call's spans", func() bool {
				tr = col.trace(tt.traceID)
				var ok bool
				if gw, ok = findSpan(tr, "mcp-gateway", "tools/call "+tool, clientSpan); !ok {
					return false
				}
				if up, ok = findSpan(tr, "mcp-gateway", "tools/call meta", gw.id()); !ok {
					return false
				}
				_, ok = findSpan(tr, "mcp-gateway", "mcp upstream web", up.id())
				return ok || tt.upstream != "web"
			})
			t.Logf("the call's trace:\n%s", dump(tr))
			if gw.Kind != tracepb.Span_SPAN_KIND_SERVER || up.Kind != tracepb.Span_SPAN_KIND_CLIENT {
				t.Errorf("gateway span kind %s, upstream call span kind %s; want server and client", gw.Kind, up.Kind)
			}
			for k, want := range map[string]string{"mcpauthz.upstream": tt.upstream, "mcp.method.name": "tools/call", "gen_ai.tool.name": "meta"} {
				if got := up.attr(k); got != want {
					t.Errorf("client span attribute %s = %q, want %q", k, got, want)
				}
			}
			if parts[2] != up.id() {
				t.Errorf("_meta.traceparent names span %s, want the client span %s", parts[2], up.id())
			}
			if tt.upstream == "web" {
				// A caller's first call to an upstream with sessions opens
				// one (initialize), so there may be several HTTP spans: the
				// tools/call header names one of them.
				var want []string
				for _, h := range tr {
					if h.service == "mcp-gateway" && h.Name == "mcp upstream web" && h.parentID() == up.id() {
						want = append(want, "00-"+tt.traceID+"-"+h.id()+"-01")
					}
				}
				if len(want) == 0 {
					t.Fatalf("no HTTP span under the client span:\n%s", dump(tr))
				}
				got := hdrs.all()
				if !slices.ContainsFunc(got, func(h string) bool { return slices.Contains(want, h) }) {
					t.Errorf("the upstream got traceparent headers %q, want one of %q", got, want)
				}
			}

			testenv.Eventually(t, 10*time.Second, "the call's audit event", func() bool {
				for _, ev := range auditEvents(t, auditFile) {
					if ev.TraceID == tt.traceID {
						if ev.Upstream != tt.upstream || ev.Tool != tool || ev.Decision != "allow" {
							t.Fatalf("audit event %s", ev.line)
						}
						return true
					}
				}
				return false
			})
		})
	}

	ids := hdrs.identityAssertions()
	if len(ids) == 0 || slices.Contains(ids, "") {
		t.Fatalf("the HTTP upstream got tools/call without an identity assertion: %q", ids)
	}
	col.checkNoSecrets(t, s, token, ids...)
}
