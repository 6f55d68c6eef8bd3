package gateway_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/gateway"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
)

const (
	spanToken = "tok-3f9a1c0e5b"
	spanRef   = "abababababababababababababababababababababababababababababababab"
)

// spanAuthz answers as fixedAuthz does and records the span context of
// each call, to check that the call is made inside the request's span.
type spanAuthz struct {
	fixedAuthz
	calls chan trace.SpanContext
}

func (a spanAuthz) Authorize(ctx context.Context, req *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) {
	a.calls <- trace.SpanContextFromContext(ctx)
	return a.fixedAuthz.Authorize(ctx, req)
}

// TestRequestSpan: with a tracer, each MCP request is one server span named
// as the MCP semantic conventions name it, with bounded attributes and never
// the token; authz is asked inside it; a request refused before its body is
// read still gets one.
func TestRequestSpan(t *testing.T) {
	t.Parallel()
	principal := &authzv1.Principal{Subject: "user-1", ClientId: "client-1", Scopes: []string{scopeUser}, ClaimsJson: []byte(`{"active":true,"sub":"user-1"}`)}
	allowed := &authzv1.AuthorizeResponse{Allowed: true, Principal: principal, User: &authzv1.User{UserId: "user-1"}, TokenRef: spanRef}
	tests := []struct {
		name      string
		body      string
		token     string
		wantName  string
		wantAttrs map[string]string
	}{
		{"who_am_i", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","arguments":{}}}`, spanToken, "tools/call who_am_i", map[string]string{
			"http.request.method": "POST", "http.route": "/mcp", "mcp.method.name": "tools/call", "gen_ai.tool.name": "who_am_i",
			"http.response.status_code": "200", "mcpauthz.decision": "allowed", "enduser.id": "user-1", "oauth.client_id": "client-1",
		}},
		{"unknown tool named by the client", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + strings.Repeat("x", 300) + `"}}`, spanToken, "tools/call unknown", map[string]string{
			"http.request.method": "POST", "http.route": "/mcp", "mcp.method.name": "tools/call", "gen_ai.tool.name": "unknown",
			"http.response.status_code": "200", "mcpauthz.decision": "allowed", "enduser.id": "user-1", "oauth.client_id": "client-1",
		}},
		{"no token", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, "", "POST /mcp", map[string]string{
			"http.request.method": "POST", "http.route": "/mcp", "http.response.status_code": "401",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			az := spanAuthz{fixedAuthz{allowed}, make(chan trace.SpanContext, 4)}
			g, err := gateway.New(gateway.Options{Config: loadConfig(t, nil), Authz: az, Tools: tools.BuiltIn(), Tracer: tp.Tracer("test")})
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest(http.MethodPost, "http://mcp.example.com/mcp", strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			g.ServeHTTP(httptest.NewRecorder(), req)
			spans := rec.Ended()
			if len(spans) != 1 {
				t.Fatalf("%d spans, want 1", len(spans))
			}
			sp := spans[0]
			if sp.Name() != tt.wantName || sp.SpanKind() != trace.SpanKindServer {
				t.Errorf("span %q (%v), want %q (server)", sp.Name(), sp.SpanKind(), tt.wantName)
			}
			got := map[string]string{}
			for _, kv := range sp.Attributes() {
				got[string(kv.Key)] = kv.Value.String()
				if strings.Contains(kv.Value.String(), spanToken) || strings.Contains(kv.Value.String(), spanRef) {
					t.Errorf("attribute %s holds the token or its token_ref", kv.Key)
				}
			}
			if diff := cmp.Diff(tt.wantAttrs, got); diff != "" {
				t.Errorf("attributes (-want +got):\n%s", diff)
			}
			close(az.calls)
			for sc := range az.calls {
				if sc.SpanID() != sp.SpanContext().SpanID() {
					t.Errorf("authz asked in span %s, not the request's %s", sc.SpanID(), sp.SpanContext().SpanID())
				}
			}
		})
	}
}

// warmup is how many requests each case serves before it is measured.
const warmup = 500

// discard is a span exporter that drops what it is given: what the
// benchmark measures is the gateway's tracing, not an exporter's I/O.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// BenchmarkServeMCPTracing measures what tracing costs the gateway's request
// path (an allowed who_am_i, in process, authz answering at once, as
// BenchmarkServeMCP), in one run:
//
//   - off: no tracer, what the gateway runs with no OTEL_* variable set; the
//     baseline the others are compared with;
//   - noop: a no-op provider's tracer, what instrumenting unconditionally
//     would cost when off;
//   - unsampled: the SDK, sampler always_off;
//   - sampled: the SDK, every request sampled, spans batched to an exporter
//     that drops them;
//   - sampled-client-parent: the same, with a client traceparent in the
//     headers and in params._meta.
//
// Wall time on a shared machine swings with what else runs; CPU time (this
// process's, from getrusage, GC and the span batcher included) much less. It
// reports cpu-ns/op, and x-off: cpu-ns/op as a multiple of off's in the same
// run.
func BenchmarkServeMCPTracing(b *testing.B) {
	cfg := loadConfig(b, nil)
	principal := &authzv1.Principal{Subject: "user-1", ClientId: "client-1", Scopes: []string{scopeUser}, ClaimsJson: []byte(`{"active":true,"sub":"user-1"}`)}
	res := &authzv1.AuthorizeResponse{Allowed: true, Principal: principal, User: &authzv1.User{UserId: "user-1"}, TokenRef: spanRef}
	who := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","arguments":{}}}`
	whoMeta := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","arguments":{},"_meta":{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"congo=t61rcWkgMzE"}}}`
	sdk := func(s sdktrace.Sampler) trace.Tracer {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(s), sdktrace.WithBatcher(discard{}))
		b.Cleanup(func() { tp.Shutdown(context.Background()) })
		return tp.Tracer("bench")
	}
	var offCPU float64
	for _, bc := range []struct {
		name   string
		tracer trace.Tracer
		body   string
		parent string
	}{
		{"off", nil, who, ""},
		{"noop", noop.NewTracerProvider().Tracer("bench"), who, ""},
		{"unsampled", sdk(sdktrace.NeverSample()), who, ""},
		{"sampled", sdk(sdktrace.AlwaysSample()), who, ""},
		{"sampled-client-parent", sdk(sdktrace.ParentBased(sdktrace.AlwaysSample())), whoMeta, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			g, err := gateway.New(gateway.Options{Config: cfg, Authz: fixedAuthz{res}, Tools: tools.BuiltIn(), Tracer: bc.tracer})
			if err != nil {
				b.Fatal(err)
			}
			serve := func() {
				req := httptest.NewRequest(http.MethodPost, "http://mcp.example.com/mcp", strings.NewReader(bc.body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
				req.Header.Set("Authorization", "Bearer tok")
				if bc.parent != "" {
					req.Header.Set("Traceparent", bc.parent)
				}
				rec := httptest.NewRecorder()
				g.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
			// Untimed warm-up: without it the first case measured paid
			// for the heap's growth to its steady size, and every case
			// after it looked cheaper than it.
			for range warmup {
				serve()
			}
			b.ReportAllocs()
			cpu0, _ := cpuTime(b)
			for b.Loop() {
				serve()
			}
			cpu1, _ := cpuTime(b)
			cpu := float64((cpu1 - cpu0).Nanoseconds()) / float64(b.N)
			b.ReportMetric(cpu, "cpu-ns/op")
			if bc.name == "off" {
				offCPU = cpu
			} else if offCPU > 0 {
				b.ReportMetric(cpu/offCPU, "x-off")
			}
		})
	}
}
