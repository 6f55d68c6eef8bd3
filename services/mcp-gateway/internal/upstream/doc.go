// Package upstream is the gateway's client toward one upstream MCP server: it
// sends a routed request as raw JSON-RPC and returns the upstream's raw
// answer, passing the notifications the upstream sends meanwhile to the
// caller in order. Nothing is decoded into Go values but the few members the
// transport needs (ids, methods, error codes, _meta), so what the client sent
// and what the upstream answered cross the gateway byte for byte.
//
// A [Conn] is made by [New] from [Options]: a URL (streamable HTTP) or a
// command (stdio). [Conn.Call] sends one request on behalf of a [Caller];
// [Conn.Catalog] lists what the upstream offers; [Conn.Changed] says when
// that changed.
//
// # Streamable HTTP
//
// The protocol era is found once per Conn by sending server/discover: a
// server that answers it speaks 2026-07-28 and has no sessions (every request
// carries the protocol version and the gateway's clientInfo and capabilities
// in params._meta, and the MCP-Protocol-Version, Mcp-Method, Mcp-Name and
// Mcp-Param-* headers); anything else is answered with initialize and a
// session (2025-03-26 to 2025-11-25).
//
// Sessions, when the upstream keeps them, follow this rule: one upstream
// session per caller (Caller.Key, a hash of subject and client) made on the
// caller's first request, reused by its later ones, ended (DELETE) after
// SessionIdle unused or when MaxSessions are held (least recently used
// first). So what an upstream keeps per session is never visible to another
// caller. A session the upstream forgot (404; or 400 naming the session, as
// TypeScript SDK examples answer) is made again and the request sent again,
// once. With [SessionsShared], every caller uses one session. The gateway's
// own requests (the catalog) use a session of their own, kept until Close,
// whose GET stream carries list changes.
//
// An answer is application/json or text/event-stream. An event stream that a
// 2025-11-25 server ends before the response is resumed with Last-Event-ID.
// Requests the server sends during a call are answered: ping with an empty
// result, everything else (sampling, elicitation, roots) with JSON-RPC error
// -32601 "not available through the mcpauthz gateway", since the gateway is
// stateless toward its clients and cannot relay them. Cancelling a call
// closes its stream (the cancellation signal in 2026-07-28) and, in a
// session, sends notifications/cancelled.
//
// The caller's identity assertion goes in the X-Mcpauthz-Identity header.
// Nothing of the client's request but its params reaches the upstream: no
// client header is ever forwarded; configured static headers are added.
// Redirects are not followed (they would carry the identity elsewhere).
//
// # stdio
//
// One child process per Conn, shared by every caller, speaking
// newline-delimited JSON-RPC: request ids and progress tokens are the
// gateway's (mapped back in what the child sends), the identity goes in
// params._meta["io.mcpauthz/identity"], stderr goes to the log
// (rate-limited), the child is restarted with exponential backoff when it
// exits (calls in flight fail at once), and Close ends its process group. A
// stdio server must take the caller from the identity in _meta, never from
// its session, which is everyone's. notifications/message is dropped on
// stdio: nothing in it says which request, so which caller, it belongs to.
//
// # Errors and limits
//
// A call either returns the upstream's result, or the upstream's JSON-RPC
// error as a *[RPCError] (to be passed to the client unchanged), or an
// *[Error] of one of four kinds: [ErrUnavailable] (unreachable, refused,
// stream cut, HTTP error status, child down, too many calls in flight),
// [ErrTimeout] (no answer within Options.Timeout, for the whole call),
// [ErrTooLarge] (an answer, SSE event or stdio line beyond
// Options.MaxResponseBytes) or [ErrProtocol] (not JSON-RPC). An Error's
// message names the upstream and gives a short reason without addresses.
// At most MaxConcurrent calls run at once, MaxQueued more wait.
package upstream
