package federation

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/trace"
)

// TestWithTraceContext: with a span context, the upstream's _meta carries
// it in place of the client's trace context (and without the client's
// baggage), every other member kept; without one, params pass unchanged.
func TestWithTraceContext(t *testing.T) {
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
		{"no _meta", traced, `{"name":"t","arguments":{}}`, `{"name":"t","arguments":{},"_meta":{` + both + `}}`},
		{"empty params", traced, `{}`, `{"_meta":{` + both + `}}`},
		{"null _meta", traced, `{"name":"t","_meta":null}`, `{"name":"t","_meta":{` + both + `}}`},
		{
			"client's context replaced, baggage dropped, the rest kept", traced,
			`{"_meta":{"progressToken":7,"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","tracestate":"x=y","baggage":"user=alice"},"name":"t"}`,
			`{"_meta":{` + both + `,"progressToken":7},"name":"t"}`,
		},
		{"untraced: unchanged", context.Background(), `{"_meta":{"traceparent":"x","baggage":"b"}}`, `{"_meta":{"traceparent":"x","baggage":"b"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := withTraceContext(tt.ctx, []byte(tt.params))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	noState := trace.ContextWithSpanContext(context.Background(), sc.WithTraceState(trace.TraceState{}))
	if got, err := withTraceContext(noState, []byte(`{}`)); err != nil || string(got) != `{"_meta":{`+tp+`}}` {
		t.Errorf("without tracestate: %s, %v", got, err)
	}
	for _, bad := range []string{`[]`, `{"_meta":[]}`, `{"a":}`} {
		if got, err := withTraceContext(traced, []byte(bad)); err == nil {
			t.Errorf("withTraceContext(%s) = %s, want an error", bad, got)
		}
	}
}
