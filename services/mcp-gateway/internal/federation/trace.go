package federation

import (
	"context"
	"errors"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/upstream"
)

// tracerName names the tracer of the spans of calls to upstreams.
const tracerName = "github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/federation"

// Attributes of the client span of a routed call, as the MCP semantic
// conventions name them, plus the upstream's name. Their values come from
// the gateway's configuration and the upstreams' catalogs (the tool or
// prompt name is the upstream's own), never from the client's message, and
// the span carries no identity: the gateway's request span names the
// subject already.
const (
	attrMCPMethod  = attribute.Key("mcp.method.name")
	attrToolName   = attribute.Key("gen_ai.tool.name")
	attrPromptName = attribute.Key("gen_ai.prompt.name")
	attrUpstream   = attribute.Key("mcpauthz.upstream")
	attrErrorType  = attribute.Key("error.type")
	attrRPCCode    = attribute.Key("rpc.response.status_code")
)

// startSpan starts the client span of a call to rt's upstream, a child of
// the span in ctx (the gateway's request span), and returns a context
// holding it. It returns ctx and a nil span when ctx holds no valid span
// context: tracing is off, and the request is forwarded as it was before
// tracing existed. The tracer is the request span's own provider's, so the
// span follows whatever tracer the gateway was given.
func startSpan(ctx context.Context, rt *Route) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.SpanContext().IsValid() {
		return ctx, nil
	}
	name := rt.req.method
	attrs := []attribute.KeyValue{attrMCPMethod.String(rt.req.method), attrUpstream.String(rt.Upstream)}
	switch rt.req.method {
	case "tools/call":
		name += " " + rt.e.key
		attrs = append(attrs, attrToolName.String(rt.e.key))
	case "prompts/get":
		name += " " + rt.e.key
		attrs = append(attrs, attrPromptName.String(rt.e.key))
	}
	return parent.TracerProvider().Tracer(tracerName).Start(ctx, name,
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// endSpan ends span with how the call went: an error status for a failure
// of the upstream (unreachable, timed out, garbage) or of forwarding, and
// the code of a JSON-RPC error the upstream answered.
func endSpan(span trace.Span, out Outcome) {
	switch {
	case out.ClientGone:
		span.SetAttributes(attrErrorType.String("canceled"))
	case out.Err != nil:
		typ := "forwarding"
		var uerr *upstream.Error
		if errors.As(out.Err, &uerr) {
			switch {
			case errors.Is(uerr.Kind, upstream.ErrTimeout):
				typ = "timeout"
			case errors.Is(uerr.Kind, upstream.ErrTooLarge):
				typ = "too_large"
			case errors.Is(uerr.Kind, upstream.ErrProtocol):
				typ = "protocol"
			default:
				typ = "unavailable"
			}
		}
		span.SetAttributes(attrErrorType.String(typ))
		// The error's text names the upstream and its URL or command, never
		// the caller: fine in a span, and what an operator looks for.
		span.SetStatus(codes.Error, out.Err.Error())
	case out.rpcCode != 0:
		code := strconv.FormatInt(out.rpcCode, 10)
		span.SetAttributes(attrErrorType.String(code), attrRPCCode.String(code))
		span.SetStatus(codes.Error, "JSON-RPC error "+code)
	}
	span.End()
}

// traceMeta are the params._meta keys of the trace context (MCP reserves
// them for W3C Trace Context and Baggage, SEP-414).
var traceMeta = []string{"traceparent", "tracestate", "baggage"}

// traceMembers returns the trace context of ctx's span as the encoded
// members of params._meta the upstream gets (traceparent, and tracestate
// when there is one), for [rewriteParams]: in place of any trace context
// the client put there (the client's context is the parent of the gateway's
// span; the upstream's parent is the gateway's call), the client's baggage
// dropped as it is everywhere else. Without a valid span context in ctx
// (tracing off) it returns nil: an untraced gateway passes the client's
// _meta on as it came.
func traceMembers(ctx context.Context) []byte {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	var members []byte
	for _, k := range []string{"traceparent", "tracestate"} {
		if v := carrier.Get(k); v != "" {
			if len(members) > 0 {
				members = append(members, ',')
			}
			members = appendQuote(members, k)
			members = append(members, ':')
			members = appendQuote(members, v)
		}
	}
	return members
}
