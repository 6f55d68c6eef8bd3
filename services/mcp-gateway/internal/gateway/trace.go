package gateway

import (
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/mcpauthz/mcpauthz/internal/tracing"
)

// Attributes of the gateway's span of one MCP request. Their values are
// bounded: the method and tool are those the metrics name (a known one, or
// "other" and "unknown"), never the client's string, and the only person
// named is the subject; never the token, nor its token_ref.
const (
	attrMCPMethod  = attribute.Key("mcp.method.name")
	attrToolName   = attribute.Key("gen_ai.tool.name")
	attrHTTPMethod = attribute.Key("http.request.method")
	attrHTTPRoute  = attribute.Key("http.route")
	attrHTTPStatus = attribute.Key("http.response.status_code")
	attrSubject    = attribute.Key("enduser.id")
	attrClientID   = attribute.Key("oauth.client_id")
	attrDecision   = attribute.Key("mcpauthz.decision")
)

// startSpan starts the request's server span once the body is parsed (or,
// for a request answered before that, when it ends): the client's trace
// context may be in params._meta, so the span cannot start before the body is
// read. It starts at the request's start all the same, and its context goes
// into x.r for the calls to authz. Without a tracer it does nothing.
func (g *Gateway) startSpan(x *exchange) {
	if g.tracer == nil || x.span != nil {
		return
	}
	ctx, links := tracing.ClientParent(x.r.Context(), x.r.Header, x.info.Trace.Parent, x.info.Trace.State)
	attrs := make([]attribute.KeyValue, 0, 4)
	attrs = append(attrs, attrHTTPMethod.String(x.r.Method), attrHTTPRoute.String("/mcp"))
	// Named as the MCP semantic conventions name it, "{method} {tool}", or
	// as an HTTP server span before the method is known.
	name := x.r.Method + " /mcp"
	if x.parsed {
		method, tool := g.labels(x)
		name = method
		attrs = append(attrs, attrMCPMethod.String(method))
		if tool != "" {
			name += " " + tool
			attrs = append(attrs, attrToolName.String(tool))
		}
	}
	ctx, x.span = g.tracer.Start(ctx, name,
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(x.start),
		trace.WithLinks(links...),
		trace.WithAttributes(attrs...))
	x.r = x.r.WithContext(ctx)
}

// endSpan ends the request's span with the answer's status, and the
// decision when one was made.
func (g *Gateway) endSpan(x *exchange, status int, end time.Time) {
	if g.tracer == nil {
		return
	}
	g.startSpan(x)
	attrs := make([]attribute.KeyValue, 0, 4)
	attrs = append(attrs, attrHTTPStatus.Int(status))
	if x.outcome != "" {
		attrs = append(attrs, attrDecision.String(x.outcome))
	}
	// The principal authz named, allowed or refused for scope: the subject
	// is the only person a span names.
	if sub := x.principal.GetSubject(); sub != "" {
		attrs = append(attrs, attrSubject.String(sub))
	}
	if id := x.principal.GetClientId(); id != "" {
		attrs = append(attrs, attrClientID.String(id))
	}
	x.span.SetAttributes(attrs...)
	if status >= http.StatusInternalServerError {
		x.span.SetStatus(codes.Error, strconv.Itoa(status))
	}
	x.span.End(trace.WithTimestamp(end))
}
