// Package federation fronts upstream MCP servers: it merges their catalogs
// into the gateway's, routes the requests that name their entries to them,
// and keeps both in step as the upstreams change.
//
// # Catalog
//
// Tools and prompts of an upstream appear under its prefix (upstreamconf:
// "<name>_" with several upstreams, none for a lone one), with characters
// outside [A-Za-z0-9_.-] replaced by '_' and names longer than 64 cut to a
// deterministic short form ([ExposedName]). Resources and resource templates
// keep their URIs. Include and exclude globs pick the tools served. At start
// ([Federation.Start]) two upstreams offering the same name, URI or identical
// template, or an upstream tool taking a built-in tool's name, are an error
// naming both; after start (a refresh brings a clash) the newcomer is left
// out, with a log line and mcp_gateway_upstream_catalog_conflicts_total.
//
// The routing table is immutable and swapped whole on every refresh, which
// happens when an upstream says a list changed, every refresh interval, and
// with a backoff while an upstream is down. An upstream that is down
// contributes nothing: its entries disappear from the lists, the others
// stay.
//
// Entries are registered in the gateway's go-sdk server ([Federation.Install])
// so that tools/list, prompts/list, resources/list and
// resources/templates/list, their pagination and their per-caller filtering
// are the SDK's and the gateway's as for built-in tools. Their go-sdk
// handlers are never reached: the gateway forwards routed requests first.
//
// # Forwarding
//
// tools/call, prompts/get, resources/read and completion/complete naming an
// upstream's entry are routed ([Federation.Route]) after the gateway has
// authorized them with the scopes the route needs (SCOPES, the upstream's,
// the tool's), and forwarded ([Federation.Serve]) as raw JSON through package
// upstream: the name is the upstream's own again, params._meta loses the
// client's io.modelcontextprotocol/* keys (but logLevel) and any
// io.mcpauthz/* key, everything else passes byte for byte, but the trace
// context: with tracing on, the call is a client span under the request's
// (trace.go), and _meta's traceparent and tracestate are that span's, the
// client's baggage dropped. The answer goes
// back under the client's id; notifications the upstream sends meanwhile
// (progress, log messages) go first, as events of the request's own
// text/event-stream response. Cancelling (the client going away) cancels the
// upstream call.
//
// Failures are JSON-RPC errors on HTTP 200, never 401, 403 or 5xx, whose
// data is {"upstream": NAME}: [CodeUnavailable], [CodeTimeout],
// [CodeTooLarge], [CodeProtocol], [CodeNoIdentity]. A JSON-RPC error the
// upstream answered is passed on unchanged.
//
// # Who the upstream sees
//
// Never the client's token, cookies or any other header of the client. With
// identity: jwt, a signed identity assertion (package identity; cached per
// caller and upstream, so not signed per request): header
// X-Mcpauthz-Identity for HTTP upstreams, params._meta["io.mcpauthz/identity"]
// for stdio ones; static headers from the file; sessions per caller (package
// upstream documents the rule).
package federation
