package federation

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/caller"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/identity"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/mcpreq"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/rawjson"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/upstream"
)

// JSON-RPC error codes of routed requests that failed in the gateway or
// toward the upstream (an error the upstream answered passes unchanged).
const (
	// CodeUnavailable: the upstream is unreachable, refused, or its process
	// is down.
	CodeUnavailable = -32010
	// CodeTimeout: the upstream did not answer within its timeout.
	CodeTimeout = -32011
	// CodeTooLarge: the upstream's answer exceeds max_response_bytes.
	CodeTooLarge = -32012
	// CodeProtocol: the upstream answered something that is not JSON-RPC.
	CodeProtocol = -32013
	// CodeNoIdentity: the upstream wants an identity assertion and the
	// caller's token names no subject to put in it (a client credentials
	// token).
	CodeNoIdentity = -32014
)

// Route is a request the gateway forwards to an upstream.
type Route struct {
	// Upstream names the upstream.
	Upstream string
	// Scopes are what the request needs besides SCOPES: the upstream's,
	// and for a tool call the tool's own.
	Scopes []string
	e      *entry
	// req is what package mcpreq read of the request, unchecked
	// (request.check); its method names the request's span.
	req request
}

// requestOf is the request as package mcpreq read it (info).
func requestOf(info mcpreq.Info) request {
	return request{id: info.ID, method: info.Method, params: info.Params}
}

// check returns r, what package mcpreq read of body, when it is what
// parseRequest(body) would return, else parseRequest(body): the body is not
// read again when mcpreq's reading was as strict. It was, but for two
// things: mcpreq lets invalid UTF-8 through, and takes any id but null for a
// request's.
func (r request) check(body []byte) (request, error) {
	if k := r.id.Kind(); (k == '0' || k == '"') && utf8.Valid(body) {
		return r, nil
	}
	return parseRequest(body)
}

// Route returns the route of a parsed request (info, and its body), or nil
// when it is not for an upstream: only requests (with an id) of tools/call,
// prompts/get, resources/read and completion/complete naming an upstream's
// entry are routed. A resources/read of a URI no upstream lists goes to the
// first upstream (in file order) with a template matching it.
func (f *Federation) Route(info mcpreq.Info, body []byte) *Route {
	if !info.IsCall {
		return nil
	}
	t := f.cur.Load()
	var e *entry
	switch info.Method {
	case "tools/call":
		e = t.tools[info.Name]
	case "prompts/get":
		e = t.prompts[info.Name]
	case "resources/read":
		if e = t.resources[info.Name]; e == nil && info.Name != "" {
			e = t.template(info.Name)
		}
	case "completion/complete":
		req, err := requestOf(info).check(body)
		if err != nil {
			return nil
		}
		r, err := parseRef(req.params)
		if err != nil {
			return nil
		}
		switch r.typ {
		case "ref/prompt":
			e = t.prompts[r.name]
		case "ref/resource":
			if e = t.lookup(kindTemplate, r.uri); e == nil {
				if e = t.resources[r.uri]; e == nil {
					e = t.template(r.uri)
				}
			}
		}
	}
	if e == nil {
		return nil
	}
	return &Route{Upstream: e.up.conf.Name, Scopes: e.scopes, e: e, req: requestOf(info)}
}

// Outcome says how a forwarded request ended, for the gateway's log line.
type Outcome struct {
	// Err is the failure, nil when the upstream answered (a result or a
	// JSON-RPC error of its own).
	Err error
	// ClientGone: the client left before the answer; nothing was written.
	ClientGone bool
	// rpcCode is the code of a JSON-RPC error the upstream answered, for
	// the span; 0 otherwise.
	rpcCode int64
}

// Serve forwards the request rt routes (its body as read) on behalf of c
// and writes the answer to w: the upstream's result or JSON-RPC error under
// the client's id, as application/json, or as text/event-stream when the
// upstream sent notifications (progress, log messages) meanwhile and the
// client accepts an event stream, the notifications first, in order.
// Failures are JSON-RPC errors naming the upstream, with HTTP status 200.
// tokenRef names the token when the principal names neither subject nor
// client (it keys the upstream session). The client's headers are never
// passed on. When r's context holds a span (tracing is on), the call to the
// upstream is a client span under it, whose trace context the upstream gets
// in params._meta (see trace.go).
func (f *Federation) Serve(w http.ResponseWriter, r *http.Request, rt *Route, body []byte, c *caller.Caller, tokenRef string) Outcome {
	ctx, span := startSpan(r.Context(), rt)
	if span == nil {
		return f.serve(w, r, rt, body, c, tokenRef)
	}
	out := f.serve(w, r.WithContext(ctx), rt, body, c, tokenRef)
	endSpan(span, out)
	return out
}

func (f *Federation) serve(w http.ResponseWriter, r *http.Request, rt *Route, body []byte, c *caller.Caller, tokenRef string) Outcome {
	m := rt.e.up
	req, err := rt.req.check(body)
	if err != nil {
		// mcpreq accepted the body, so this is a request without an id.
		writeJSON(w, errorResponse(nil, jsonrpcInvalidRequest, "invalid JSON-RPC request: "+err.Error(), ""))
		return Outcome{Err: err}
	}
	params, err := rewriteParams(req.params, req.method, rt.e.key, traceMembers(r.Context()))
	if err != nil {
		writeJSON(w, errorResponse(req.id, jsonrpcInvalidParams, "invalid params: "+err.Error(), ""))
		return Outcome{Err: err}
	}
	who := upstream.Caller{Key: callerKey(c, tokenRef)}
	if m.jwt {
		p := c.Principal
		if p.GetSubject() == "" {
			err := fmt.Errorf("upstream %q needs the caller's identity, and the access token names no user (subject)", m.conf.Name)
			writeJSON(w, errorResponse(req.id, CodeNoIdentity, err.Error(), m.conf.Name))
			return Outcome{Err: err}
		}
		if who.Identity, err = f.signer.Assertion(identity.Principal{Subject: p.GetSubject(), ClientID: p.GetClientId(), Scopes: p.GetScopes()}, m.audience); err != nil {
			err = fmt.Errorf("upstream %q: signing the caller's identity: %w", m.conf.Name, err)
			writeJSON(w, errorResponse(req.id, CodeNoIdentity, err.Error(), m.conf.Name))
			return Outcome{Err: err}
		}
	}
	out := &responder{w: w, id: req.id, sse: acceptsEventStream(r)}
	res, err := m.conn.Call(r.Context(), who, req.method, params, out.notify)
	if err == nil {
		// Assembled in a pooled buffer: the ResponseWriter copies it.
		buf := rawjson.GetBuffer()
		*buf = appendResultResponse(*buf, req.id, res)
		out.final(*buf)
		rawjson.PutBuffer(buf)
		return Outcome{}
	}
	// Declared only now: errors.As makes them escape, an allocation the
	// answered call need not pay.
	var rpc *upstream.RPCError
	var uerr *upstream.Error
	switch {
	case errors.As(err, &rpc):
		out.final(rawErrorResponse(req.id, rpc.Raw))
		return Outcome{rpcCode: rpc.Code}
	case r.Context().Err() != nil:
		return Outcome{Err: err, ClientGone: true}
	case errors.As(err, &uerr):
		code := CodeUnavailable
		switch uerr.Kind {
		case upstream.ErrTimeout:
			code = CodeTimeout
		case upstream.ErrTooLarge:
			code = CodeTooLarge
		case upstream.ErrProtocol:
			code = CodeProtocol
		}
		out.final(errorResponse(req.id, code, uerr.Error(), m.conf.Name))
	case errors.Is(err, upstream.ErrInvalidParams):
		out.final(errorResponse(req.id, jsonrpcInvalidParams, "invalid params: "+err.Error(), ""))
	default:
		out.final(errorResponse(req.id, CodeUnavailable, fmt.Sprintf("upstream %q is unavailable", m.conf.Name), m.conf.Name))
	}
	return Outcome{Err: err}
}

// LogAttrs are the attributes of a routed request's log lines.
func (rt *Route) LogAttrs() slog.Attr { return slog.String("upstream", rt.Upstream) }

// callerKey keys the caller's upstream sessions: a hash of subject and
// client, never a token (tokenRef is already a hash of one).
func callerKey(c *caller.Caller, tokenRef string) string {
	p := c.Principal
	var buf [256]byte
	name := buf[:0]
	switch {
	case p.GetSubject() != "" || p.GetClientId() != "":
		name = append(append(append(append(name, "sub:"...), p.GetSubject()...), "\x00client:"...), p.GetClientId()...)
	default:
		name = append(append(name, "token:"...), tokenRef...)
	}
	sum := sha256.Sum256(name)
	return hex.EncodeToString(sum[:16])
}

// acceptsEventStream reports whether the client's Accept names
// text/event-stream (every streamable HTTP client does).
func acceptsEventStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			mt, _, _ := strings.Cut(part, ";")
			mt = strings.ToLower(strings.TrimSpace(mt))
			if mt == "text/event-stream" || mt == "*/*" || mt == "text/*" {
				return true
			}
		}
	}
	return false
}

// Standard JSON-RPC codes.
const (
	jsonrpcInvalidRequest = -32600
	jsonrpcInvalidParams  = -32602
)

// appendResultResponse appends the JSON-RPC response carrying result to b.
func appendResultResponse(b []byte, id, result jsontext.Value) []byte {
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	b = append(b, id...)
	b = append(b, `,"result":`...)
	b = append(b, result...)
	return append(b, '}')
}

func rawErrorResponse(id, errObj jsontext.Value) []byte {
	b := make([]byte, 0, len(errObj)+len(id)+36)
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	if id == nil {
		b = append(b, "null"...)
	}
	b = append(b, id...)
	b = append(b, `,"error":`...)
	b = append(b, errObj...)
	return append(b, '}')
}

// errorResponse is a JSON-RPC error response; with upstream set, its data
// is {"upstream": upstream}.
func errorResponse(id jsontext.Value, code int, msg, up string) []byte {
	e := fmt.Appendf(nil, `{"code":%d,"message":`, code)
	e = append(e, quote(msg)...)
	if up != "" {
		e = append(e, `,"data":{"upstream":`...)
		e = append(e, quote(up)...)
		e = append(e, '}')
	}
	e = append(e, '}')
	return rawErrorResponse(id, e)
}

// writeJSON writes msg as the whole answer, with its Content-Length: net/http
// computes one only for answers under 2 KiB and sends larger ones chunked,
// which costs the gateway the chunk framing and the client its decoding.
func writeJSON(w http.ResponseWriter, msg []byte) {
	h := w.Header()
	// Assigned rather than set: Header.Set allocates a slice per value.
	// net/http only reads the shared one.
	h["Content-Type"] = jsonValue
	h["Content-Length"] = []string{strconv.Itoa(len(msg))}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(msg)
}

// jsonValue is the Content-Type of every JSON answer, shared between them and
// never modified.
var jsonValue = []string{"application/json"}

// responder writes one routed request's answer: JSON, or an event stream
// once a notification is to go first.
type responder struct {
	w   http.ResponseWriter
	id  jsontext.Value
	sse bool

	mu        sync.Mutex
	streaming bool
	broken    bool
}

// notify passes a notification of the upstream to the client, as an SSE
// event of this request's response stream; dropped when the client takes
// JSON only.
func (o *responder) notify(m upstream.Message) {
	if !o.sse {
		return
	}
	msg := jsontext.Value(m)
	// An event's data is one line: the upstream may have sent its JSON
	// indented.
	if err := msg.Compact(); err != nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.event(msg)
}

// event writes msg as one SSE event, starting the stream if needed. Called
// with o.mu held.
func (o *responder) event(msg []byte) {
	if o.broken {
		return
	}
	if !o.streaming {
		h := o.w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Del("Content-Length")
		o.w.WriteHeader(http.StatusOK)
		o.streaming = true
	}
	buf := make([]byte, 0, len(msg)+24)
	buf = append(buf, "event: message\ndata: "...)
	buf = append(buf, msg...)
	buf = append(buf, "\n\n"...)
	if _, err := o.w.Write(buf); err != nil {
		o.broken = true
		return
	}
	_ = http.NewResponseController(o.w).Flush()
}

// final writes the response message.
func (o *responder) final(msg []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.streaming {
		v := jsontext.Value(msg)
		if err := v.Compact(); err != nil {
			return
		}
		o.event(v)
		return
	}
	writeJSON(o.w, msg)
}
