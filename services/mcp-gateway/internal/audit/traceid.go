package audit

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/trace"
)

// TraceID returns the W3C trace ID (32 lowercase hex digits) a request runs
// under: the OpenTelemetry span context of ctx when it is valid (the gateway's
// own span, or the remote one an OTel propagator extracted), else the trace ID
// of the request's one traceparent header when that is well formed, else "".
func TraceID(ctx context.Context, h http.Header) string {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return sc.TraceID().String()
	}
	vs := h.Values("Traceparent")
	if len(vs) != 1 {
		return ""
	}
	return traceparentID(vs[0])
}

// traceparentID returns the trace-id of a traceparent value
// (version "-" trace-id "-" parent-id "-" flags, W3C Trace Context §3.2), or
// "" when the value is malformed: a version of "ff", anything but lowercase
// hex, an all-zero trace-id or parent-id, or, for version 00, anything after
// the flags. A later version may append fields after a dash.
func traceparentID(v string) string {
	const n = 2 + 1 + 32 + 1 + 16 + 1 + 2
	if len(v) < n || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return ""
	}
	version, id, parent, flags := v[0:2], v[3:35], v[36:52], v[53:55]
	if !lowerHex(version) || version == "ff" || !lowerHex(id) || !lowerHex(parent) || !lowerHex(flags) {
		return ""
	}
	if version == "00" && len(v) != n || len(v) > n && v[n] != '-' {
		return ""
	}
	if allZero(id) || allZero(parent) {
		return ""
	}
	return id
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func allZero(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '0' {
			return false
		}
	}
	return true
}
