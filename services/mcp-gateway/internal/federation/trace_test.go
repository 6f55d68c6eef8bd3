package federation

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/upstream"
)

// TestTraceContext: with a span context, the upstream's _meta carries it in
// place of the client's trace context (and without the client's baggage),
// every other member kept as rewriteParams keeps it; without one, the
// client's trace context passes unchanged.
func TestTraceContext(t *testing.T) {
	t.Parallel()
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ts, _ := trace.ParseTraceState("congo=t61rcWkgMzE")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: ts})
	traced := trace.ContextWithSpanContext(context.Background(), sc)
	const (
		tp   = `"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"`
		both = tp + `,"tracestate":"congo=t61rcWkgMzE"`
	)
	tests := []struct {
		name   string
		ctx    context.Context
		params string
		want   string
	}{
		{"no _meta", traced, `{"name":"t","arguments":{}}`, `{"name":"k","arguments":{},"_meta":{` + both + `}}`},
		{"empty params", traced, `{}`, `{"_meta":{` + both + `}}`},
		{"null params", traced, `null`, `{"_meta":{` + both + `}}`},
		{"null _meta", traced, `{"name":"t","_meta":null}`, `{"name":"k","_meta":{` + both + `}}`},
		{"empty _meta", traced, `{"_meta":{}}`, `{"_meta":{` + both + `}}`},
		{
			"client's context replaced, baggage dropped, the rest filtered as untraced", traced,
			`{"_meta":{"progressToken":7,"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","io.mcpauthz/x":1,"tracestate":"x=y","baggage":"user=alice"},"name":"t"}`,
			`{"_meta":{` + both + `,"progressToken":7},"name":"k"}`,
		},
		{"untraced: the client's context unchanged", context.Background(), `{"_meta":{"traceparent":"x","baggage":"b"}}`, `{"_meta":{"traceparent":"x","baggage":"b"}}`},
		{"untraced: no _meta added", context.Background(), `{"name":"t"}`, `{"name":"k"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := rewriteParams([]byte(tt.params), "tools/call", "k", traceMembers(tt.ctx))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	noState := trace.ContextWithSpanContext(context.Background(), sc.WithTraceState(trace.TraceState{}))
	if got, err := rewriteParams([]byte(`{}`), "tools/call", "k", traceMembers(noState)); err != nil || string(got) != `{"_meta":{`+tp+`}}` {
		t.Errorf("without tracestate: %s, %v", got, err)
	}
	for _, bad := range []string{`[]`, `{"_meta":[]}`, `{"a":}`} {
		if got, err := rewriteParams([]byte(bad), "tools/call", "k", traceMembers(traced)); err == nil {
			t.Errorf("rewriteParams(%s) = %s, want an error", bad, got)
		}
	}
}

// TestCallSpan: a routed call is a client span under the request's span,
// named and labelled with the upstream's own tool or prompt name and the
// upstream; how it ended sets error.type (and the status) without any
// client-supplied text; without a span in the context there is none.
func TestCallSpan(t *testing.T) {
	t.Parallel()
	route := func(method, key string) *Route {
		return &Route{Upstream: "billing", req: request{method: method}, e: &entry{key: key}}
	}
	tests := []struct {
		name       string
		rt         *Route
		out        Outcome
		wantName   string
		wantAttrs  map[string]string
		wantStatus codes.Code
	}{
		{"tool call", route("tools/call", "refund"), Outcome{}, "tools/call refund",
			map[string]string{"mcp.method.name": "tools/call", "gen_ai.tool.name": "refund", "mcpauthz.upstream": "billing"}, codes.Unset},
		{"prompt", route("prompts/get", "greet"), Outcome{}, "prompts/get greet",
			map[string]string{"mcp.method.name": "prompts/get", "gen_ai.prompt.name": "greet", "mcpauthz.upstream": "billing"}, codes.Unset},
		{"resource: no URI in the span", route("resources/read", "test://u/alice"), Outcome{}, "resources/read",
			map[string]string{"mcp.method.name": "resources/read", "mcpauthz.upstream": "billing"}, codes.Unset},
		{"timeout", route("tools/call", "refund"), Outcome{Err: &upstream.Error{Upstream: "billing", Kind: upstream.ErrTimeout, Reason: "timed out"}}, "tools/call refund",
			map[string]string{"mcp.method.name": "tools/call", "gen_ai.tool.name": "refund", "mcpauthz.upstream": "billing", "error.type": "timeout"}, codes.Error},
		{"unreachable", route("tools/call", "refund"), Outcome{Err: &upstream.Error{Upstream: "billing", Kind: upstream.ErrUnavailable}}, "tools/call refund",
			map[string]string{"mcp.method.name": "tools/call", "gen_ai.tool.name": "refund", "mcpauthz.upstream": "billing", "error.type": "unavailable"}, codes.Error},
		{"forwarding failed", route("tools/call", "refund"), Outcome{Err: errors.New("signing")}, "tools/call refund",
			map[string]string{"mcp.method.name": "tools/call", "gen_ai.tool.name": "refund", "mcpauthz.upstream": "billing", "error.type": "forwarding"}, codes.Error},
		{"JSON-RPC error of the upstream", route("tools/call", "refund"), Outcome{rpcCode: -32602}, "tools/call refund",
			map[string]string{"mcp.method.name": "tools/call", "gen_ai.tool.name": "refund", "mcpauthz.upstream": "billing", "error.type": "-32602", "rpc.response.status_code": "-32602"}, codes.Error},
		{"client gone", route("tools/call", "refund"), Outcome{ClientGone: true, Err: context.Canceled}, "tools/call refund",
			map[string]string{"mcp.method.name": "tools/call", "gen_ai.tool.name": "refund", "mcpauthz.upstream": "billing", "error.type": "canceled"}, codes.Unset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			ctx, parent := tp.Tracer("test").Start(t.Context(), "request")
			ctx, span := startSpan(ctx, tt.rt)
			if span == nil {
				t.Fatal("no span under a traced request")
			}
			if trace.SpanContextFromContext(ctx).SpanID() == parent.SpanContext().SpanID() {
				t.Error("the returned context holds the parent, not the call's span")
			}
			endSpan(span, tt.out)
			parent.End()
			ended := rec.Ended()
			if len(ended) != 2 {
				t.Fatalf("%d spans ended, want 2", len(ended))
			}
			s := ended[0]
			attrs := map[string]string{}
			for _, kv := range s.Attributes() {
				attrs[string(kv.Key)] = kv.Value.String()
			}
			if s.Name() != tt.wantName || s.SpanKind() != trace.SpanKindClient || s.Parent().SpanID() != parent.SpanContext().SpanID() {
				t.Errorf("span %q kind %v parent %v; want %q, client, under the request's", s.Name(), s.SpanKind(), s.Parent().SpanID(), tt.wantName)
			}
			if diff := cmp.Diff(tt.wantAttrs, attrs); diff != "" {
				t.Errorf("attributes (-want +got):\n%s", diff)
			}
			if s.Status().Code != tt.wantStatus {
				t.Errorf("status %v, want %v", s.Status(), tt.wantStatus)
			}
		})
	}
	if ctx, span := startSpan(t.Context(), route("tools/call", "refund")); span != nil || ctx != t.Context() {
		t.Error("a span without a traced request")
	}
}

// FuzzTraceContext feeds arbitrary requests through rewriteParams with and
// without a trace context, as Serve does with tracing on and off: it never
// panics, both succeed or fail together, and the traced params are the
// untraced ones but for _meta, which carries exactly the gateway's trace
// context, no client trace context or baggage, and every other member the
// untraced rewrite kept.
func FuzzTraceContext(f *testing.F) {
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","baggage":"a=b","progressToken":1}}}`))
	f.Add([]byte(`{"id":"x","method":"tools/call","params":{"_meta":null}}`))
	f.Add([]byte(`{"id":2,"method":"tools/call"}`))
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	members := traceMembers(trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})))
	const want = `"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"`
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseRequest(body)
		if err != nil {
			return
		}
		untraced, err := rewriteParams(req.params, "tools/call", "k", nil)
		traced, terr := rewriteParams(req.params, "tools/call", "k", members)
		if (err == nil) != (terr == nil) {
			t.Fatalf("untraced error %v, traced error %v", err, terr)
		}
		if err != nil {
			return
		}
		var before, after map[string]json.RawMessage
		if err := json.Unmarshal(traced, &after); err != nil {
			t.Fatalf("not a JSON object: %v: %s", err, traced)
		}
		_ = json.Unmarshal(untraced, &before)
		var metaBefore, metaAfter map[string]json.RawMessage
		_ = json.Unmarshal(before["_meta"], &metaBefore)
		if err := json.Unmarshal(after["_meta"], &metaAfter); err != nil || metaAfter == nil {
			t.Fatalf("_meta %s: %v", after["_meta"], err)
		}
		if string(metaAfter["traceparent"]) != want {
			t.Fatalf("traceparent %s, want %s", metaAfter["traceparent"], want)
		}
		for _, k := range traceMeta {
			delete(metaBefore, k)
		}
		delete(metaAfter, "traceparent")
		if !maps.EqualFunc(metaBefore, metaAfter, func(a, b json.RawMessage) bool { return string(a) == string(b) }) {
			t.Fatalf("_meta members changed: %s -> %s", before["_meta"], after["_meta"])
		}
		delete(before, "_meta")
		delete(after, "_meta")
		if !maps.EqualFunc(before, after, func(a, b json.RawMessage) bool { return string(a) == string(b) }) {
			t.Fatalf("params members changed: %s -> %s", untraced, traced)
		}
	})
}
