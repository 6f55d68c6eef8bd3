package audit

import (
	"net/http"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestTraceID(t *testing.T) {
	t.Parallel()
	const id = "4bf92f3577b34da6a3ce929d0e0e4736"
	tests := []struct {
		name string
		hdr  []string
		want string
	}{
		{"none", nil, ""},
		{"version 00", []string{"00-" + id + "-00f067aa0ba902b7-01"}, id},
		{"future version with more fields", []string{"cc-" + id + "-00f067aa0ba902b7-01-what-ever"}, id},
		{"future version, no dash after flags", []string{"cc-" + id + "-00f067aa0ba902b7-01x"}, ""},
		{"version 00 with more", []string{"00-" + id + "-00f067aa0ba902b7-01-x"}, ""},
		{"version ff", []string{"ff-" + id + "-00f067aa0ba902b7-01"}, ""},
		{"uppercase", []string{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"}, ""},
		{"zero trace id", []string{"00-00000000000000000000000000000000-00f067aa0ba902b7-01"}, ""},
		{"zero parent id", []string{"00-" + id + "-0000000000000000-01"}, ""},
		{"short", []string{"00-" + id[:31] + "-00f067aa0ba902b7-01"}, ""},
		{"not hex", []string{"00-" + id[:31] + "g-00f067aa0ba902b7-01"}, ""},
		{"two headers", []string{"00-" + id + "-00f067aa0ba902b7-01", "00-" + id + "-00f067aa0ba902b7-01"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			for _, v := range tt.hdr {
				h.Add("traceparent", v)
			}
			if got := TraceID(t.Context(), h); got != tt.want {
				t.Errorf("TraceID(%q) = %q, want %q", tt.hdr, got, tt.want)
			}
		})
	}
}

// TestTraceIDFromSpan: a valid OpenTelemetry span context wins over the
// header (it is the trace the gateway's spans are in).
func TestTraceIDFromSpan(t *testing.T) {
	t.Parallel()
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:  trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
	})
	ctx := trace.ContextWithSpanContext(t.Context(), sc)
	h := http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
	if got, want := TraceID(ctx, h), "0102030405060708090a0b0c0d0e0f10"; got != want {
		t.Errorf("TraceID = %q, want the span's %q", got, want)
	}
	// An invalid span context (no span) falls back to the header.
	if got, want := TraceID(trace.ContextWithSpanContext(t.Context(), trace.SpanContext{}), h), "4bf92f3577b34da6a3ce929d0e0e4736"; got != want {
		t.Errorf("TraceID = %q, want the header's %q", got, want)
	}
}

func FuzzTraceparent(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
	f.Fuzz(func(t *testing.T, v string) {
		id := traceparentID(v)
		if id == "" {
			return
		}
		if len(id) != 32 || !lowerHex(id) || allZero(id) || id != v[3:35] {
			t.Fatalf("traceparentID(%q) = %q", v, id)
		}
	})
}
