package upstream

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/mcpauthz/mcpauthz/internal/tracing"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/h1client"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/rawjson"
)

// Streamable HTTP, in both eras:
//
//   - 2026-07-28 ("modern"): no sessions. Every request carries the protocol
//     version, clientInfo and clientCapabilities in params._meta and the
//     MCP-Protocol-Version, Mcp-Method and Mcp-Name headers (plus
//     Mcp-Param-* for annotated tool parameters). Cancelling is closing the
//     response stream. List changes come on a subscriptions/listen stream.
//   - 2025-03-26 to 2025-11-25 ("legacy"): initialize and
//     notifications/initialized make a session, named by the Mcp-Session-Id
//     the server answers; every later request carries it and
//     MCP-Protocol-Version. 404 means the server forgot the session: a new
//     one is made and the request sent again, once. DELETE ends it.
//     Cancelling is notifications/cancelled. List changes come on the
//     session's GET stream.
//
// Which era a server speaks is found once (and again when a modern server
// answers UnsupportedProtocolVersion, or a session cannot be made) by
// sending server/discover: a DiscoverResult or a modern error means modern;
// anything else (a 4xx without a modern JSON-RPC error, say) means legacy, as
// the spec's backward-compatibility rules describe.

// httpTransport is the streamable HTTP client of one upstream.
type httpTransport struct {
	c      *conn
	client *http.Client
	// rt is client's transport when the client is the transport's own:
	// requests go to it directly. It follows no redirects, has no cookie
	// jar and no timeout, so http.Client would add nothing to a POST but
	// the copy of its headers it keeps for redirects (about a tenth of a
	// routed call's allocations).
	rt       http.RoundTripper
	endpoint string
	headers  http.Header

	// modernMeta is the _meta members every modern request carries.
	modernMeta []byte

	mu      sync.Mutex
	era     *eraState     // nil until found
	probing chan struct{} // closed when the running probe ends

	pool *sessionPool

	ctx       context.Context // ends at close: watchers, DELETEs, cancellations
	cancel    context.CancelFunc
	watchOnce sync.Once
	wg        sync.WaitGroup
}

type eraState struct {
	modern bool
	info   serverInfo // modern: from server/discover
}

var modernMetaNames = []string{
	"io.modelcontextprotocol/protocolVersion",
	"io.modelcontextprotocol/clientInfo",
	"io.modelcontextprotocol/clientCapabilities",
}

// metaNamesWithIdentity are removed from what callers send: the gateway's
// own values replace them, and an identity is only ever the gateway's.
var metaNamesWithIdentity = append([]string{IdentityMetaKey}, modernMetaNames...)

// identityOnly removes a caller-chosen identity from _meta.
var identityOnly = []string{IdentityMetaKey}

func quote(s string) []byte {
	b, _ := jsontext.AppendQuote(nil, s)
	return b
}

var (
	errSessionGone = errors.New("session gone")
	errPoolClosed  = errors.New("pool closed")
)

// Bounds of auxiliary exchanges.
const (
	errorBodyLimit   = 64 << 10
	auxTimeout       = 5 * time.Second // DELETE, notifications/cancelled
	maxSessionIDSize = 1024
)

// hopByHop are the headers a static header set may not name (RFC 9110 §7.6.1).
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Proxy-Authenticate", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Host", "Content-Length"}

var transportHeaders = []string{"Content-Type", "Accept", "Mcp-Session-Id", "Mcp-Protocol-Version", "Mcp-Method", "Mcp-Name", IdentityHeader, "Last-Event-Id"}

func reservedHeader(k string) bool {
	k = http.CanonicalHeaderKey(k)
	for _, h := range append(hopByHop, transportHeaders...) {
		if k == http.CanonicalHeaderKey(h) {
			return true
		}
	}
	return strings.HasPrefix(k, "Mcp-Param-")
}

func newHTTPTransport(c *conn) (*httpTransport, error) {
	u, err := url.Parse(c.opts.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("upstream %q: url %q is not an http(s) URL", c.opts.Name, c.opts.URL)
	}
	client := c.opts.HTTPClient
	var rt http.RoundTripper
	if client == nil {
		client = &http.Client{
			// Traced when tracing is on: a span per upstream request, and
			// the trace context passed on in traceparent (never a header's
			// value in the span).
			Transport: tracing.Transport(baseTransport(u, c.opts.MaxConcurrent), "mcp upstream "+c.opts.Name),
			// A redirect would carry the identity header to another URL.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		rt = client.Transport
	}
	t := &httpTransport{
		c:        c,
		client:   client,
		rt:       rt,
		endpoint: u.String(),
		headers:  c.opts.Headers.Clone(),
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	meta := appendMember(nil, modernMetaNames[0], []byte(`"`+versionModern+`"`))
	meta = append(meta, ',')
	meta = appendMember(meta, modernMetaNames[1], clientInfo(c.opts))
	meta = append(meta, ',')
	t.modernMeta = appendMember(meta, modernMetaNames[2], []byte(`{}`))
	t.pool = newSessionPool(c.opts.MaxSessions, c.opts.SessionIdle, c.opts.Timeout, c.opts.Metrics, t.initialize, t.deleteSession)
	return t, nil
}

// baseTransport carries an upstream's requests. Plain HTTP without a proxy
// (an upstream beside the gateway, the usual case) goes through h1client,
// which does each exchange on the caller's goroutine; https and proxied
// upstreams through net/http's Transport, HTTP/2 where the server offers it.
func baseTransport(u *url.URL, maxConcurrent int) http.RoundTripper {
	dial := (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	if h1client.Applies(u, http.ProxyFromEnvironment) {
		return h1client.New(h1client.Options{Dial: dial, MaxIdle: maxConcurrent, IdleTimeout: 90 * time.Second, MaxHeaderBytes: 64 << 10})
	}
	return &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            dial,
		ForceAttemptHTTP2:      true,
		MaxIdleConnsPerHost:    maxConcurrent,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
}

func clientInfo(o Options) []byte {
	b := []byte(`{"name":`)
	b, _ = jsontext.AppendQuote(b, o.ClientName)
	b = append(b, `,"version":`...)
	b, _ = jsontext.AppendQuote(b, o.ClientVersion)
	return append(b, '}')
}

// eraOf returns the server's era, probing it once for concurrent callers.
func (t *httpTransport) eraOf(ctx context.Context) (*eraState, error) {
	for {
		t.mu.Lock()
		if t.era != nil {
			e := t.era
			t.mu.Unlock()
			return e, nil
		}
		if ch := t.probing; ch != nil {
			t.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		ch := make(chan struct{})
		t.probing = ch
		t.mu.Unlock()

		e, err := t.probe(ctx)
		t.mu.Lock()
		t.probing = nil
		if err == nil {
			t.era = e
		}
		t.mu.Unlock()
		close(ch)
		return e, err
	}
}

// forgetEra makes the next call probe again.
func (t *httpTransport) forgetEra(old *eraState) {
	t.mu.Lock()
	if t.era == old {
		t.era = nil
	}
	t.mu.Unlock()
}

// probe sends server/discover and decides the era from the answer.
func (t *httpTransport) probe(ctx context.Context) (*eraState, error) {
	params := append(append([]byte(`{"_meta":{`), t.modernMeta...), "}}"...)
	id := t.c.nextID.Add(1)
	res, _, err := t.do(ctx, &request{
		method: "server/discover", id: id, modern: true,
		body: appendRequest(nil, id, "server/discover", params),
	})
	var (
		rpc    *RPCError
		status *statusError
	)
	switch {
	case err == nil:
		versions, err := stringArray(res, "supportedVersions")
		if err != nil {
			return &eraState{}, nil // not a DiscoverResult: not a modern server
		}
		if contains(versions, versionModern) {
			caps, _ := member(res, "capabilities")
			if caps.Kind() != '{' {
				caps = jsontext.Value("{}")
			}
			return &eraState{modern: true, info: serverInfo{version: versionModern, caps: bytes.Clone(caps)}}, nil
		}
		return t.legacyOrNone(versions)
	case errors.As(err, &rpc):
		if rpc.Code == codeUnsupportedProtocolVersion && rpc.Data.Kind() == '{' {
			versions, _ := stringArray(rpc.Data, "supported")
			return t.legacyOrNone(versions)
		}
		return &eraState{}, nil
	case errors.As(err, &status):
		if status.code >= 500 {
			return nil, err
		}
		return &eraState{}, nil
	case errors.Is(err, ErrProtocol):
		// Not JSON-RPC at all: initialize will tell what the server is.
		return &eraState{}, nil
	default:
		return nil, err
	}
}

// legacyOrNone decides for a modern server that does not support
// 2026-07-28: legacy if it also speaks an initialize-era version.
func (t *httpTransport) legacyOrNone(versions []string) (*eraState, error) {
	for _, v := range legacyVersions {
		if contains(versions, v) {
			return &eraState{}, nil
		}
	}
	return nil, t.c.protocolErr(fmt.Sprintf("no protocol version in common (the upstream supports %q)", versions), nil)
}

func (t *httpTransport) server(ctx context.Context) (serverInfo, error) {
	t.mu.Lock()
	known := t.era != nil
	t.mu.Unlock()
	e, err := t.eraOf(ctx)
	if err != nil {
		return serverInfo{}, err
	}
	if e.modern && !known {
		return e.info, nil
	}
	if e.modern {
		// Asked afresh each time (a catalog refresh): a redeployed server
		// may offer more, or speak another era now.
		fresh, err := t.probe(ctx)
		if err != nil {
			return serverInfo{}, err
		}
		t.mu.Lock()
		if t.era == e {
			t.era = fresh
		}
		t.mu.Unlock()
		if fresh.modern {
			return fresh.info, nil
		}
	}
	s, err := t.acquire(ctx, "", Caller{})
	if err != nil {
		return serverInfo{}, err
	}
	t.pool.release(s)
	return serverInfo{version: s.version, caps: s.caps}, nil
}

func (t *httpTransport) call(ctx context.Context, caller Caller, method string, params jsontext.Value, notify func(Message)) (jsontext.Value, error) {
	e, err := t.eraOf(ctx)
	if err != nil {
		return nil, err
	}
	if e.modern {
		return t.callModern(ctx, e, caller, method, params, notify)
	}
	return t.callLegacy(ctx, caller, method, params, notify)
}

func (t *httpTransport) callModern(ctx context.Context, e *eraState, caller Caller, method string, params jsontext.Value, notify func(Message)) (jsontext.Value, error) {
	edit := metaEdit{members: t.modernMeta, names: metaNamesWithIdentity, capture: captureFor(method)}
	for attempt := 0; ; attempt++ {
		id := t.c.nextID.Add(1)
		body := appendRequestHead(make([]byte, 0, len(params)+len(t.modernMeta)+96), id, method)
		body, err := appendParams(body, params, &edit)
		if err != nil {
			return nil, err
		}
		body = append(body, '}')
		r := &request{caller: caller, method: method, id: id, body: body, modern: true, notify: notify}
		if edit.capture[0] != "" {
			if v := edit.captured[0]; v.Kind() == '"' {
				r.name = unquote(v)
			}
			r.args = edit.captured[1]
		}
		res, _, err := t.do(ctx, r)
		if err == nil || attempt > 0 {
			return res, err
		}
		var rpc *RPCError // escapes: declared only once there is an error
		if !errors.As(err, &rpc) {
			return res, err
		}
		switch {
		case rpc.Code == codeUnsupportedProtocolVersion:
			// The server changed under us: find out again what it speaks.
			t.forgetEra(e)
			if e, err = t.eraOf(ctx); err != nil {
				return nil, err
			}
			if !e.modern {
				return t.callLegacy(ctx, caller, method, params, notify)
			}
		case rpc.Code == codeHeaderMismatch && method == "tools/call":
			// The tool's x-mcp-header annotations may have changed since the
			// last catalog: read them again and retry, as the spec advises.
			if err := t.c.refreshBindings(ctx); err != nil {
				return res, rpc
			}
		default:
			return res, err
		}
	}
}

// unquote returns the JSON string v unquoted, as jsontext.AppendUnquote
// does; a string of ASCII without escapes is its own content.
func unquote(v jsontext.Value) string {
	in := v[1 : len(v)-1]
	for _, c := range in {
		if c == '\\' || c >= utf8.RuneSelf {
			u, _ := jsontext.AppendUnquote(nil, v)
			return string(u)
		}
	}
	return string(in)
}

// captureFor names the params members a modern request needs in headers.
func captureFor(method string) [2]string {
	switch method {
	case "tools/call":
		return [2]string{"name", "arguments"}
	case "prompts/get":
		return [2]string{"name"}
	case "resources/read":
		return [2]string{"uri"}
	}
	return [2]string{}
}

func (t *httpTransport) callLegacy(ctx context.Context, caller Caller, method string, params jsontext.Value, notify func(Message)) (jsontext.Value, error) {
	p, err := appendParams(make([]byte, 0, len(params)+2), params, &metaEdit{names: identityOnly})
	if err != nil {
		return nil, err
	}
	key := caller.Key
	if t.c.opts.Sessions == SessionsShared {
		key = ""
	}
	for attempt := 0; ; attempt++ {
		s, err := t.acquire(ctx, key, caller)
		if err != nil {
			return nil, err
		}
		id := t.c.nextID.Add(1)
		res, _, err := t.do(ctx, &request{
			sess: s, caller: caller, method: method, id: id, version: s.version, notify: notify,
			body: appendRequest(make([]byte, 0, len(p)+64), id, method, p),
		})
		if err != nil && ctx.Err() != nil {
			t.cancelUpstream(s, id, ctx)
		}
		t.pool.release(s)
		if !errors.Is(err, errSessionGone) {
			return res, err
		}
		t.pool.drop(s)
		if attempt > 0 {
			return nil, t.c.unavailable("the upstream forgot a new session at once", err)
		}
		t.c.opts.Logger.Info("upstream session expired; starting a new one")
	}
}

func (t *httpTransport) acquire(ctx context.Context, key string, caller Caller) (*session, error) {
	s, err := t.pool.acquire(ctx, key, caller)
	if errors.Is(err, errPoolClosed) {
		return nil, t.c.closedErr()
	}
	return s, err
}

// cancelUpstream tells a legacy server that the caller gave up on request id.
func (t *httpTransport) cancelUpstream(s *session, id int64, ctx context.Context) {
	reason := "the client cancelled the request"
	if context.Cause(ctx) == errCallTimeout {
		reason = "timeout"
	}
	params := []byte(`{"requestId":`)
	params = fmt.Appendf(params, "%d", id)
	params = append(params, `,"reason":`...)
	params, _ = jsontext.AppendQuote(params, reason)
	params = append(params, '}')
	body := appendRequest(nil, -1, "notifications/cancelled", params)
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		ctx, cancel := context.WithTimeout(t.ctx, auxTimeout)
		defer cancel()
		if _, _, err := t.do(ctx, &request{sess: s, method: "notifications/cancelled", id: -1, version: s.version, body: body}); err != nil {
			t.c.opts.Logger.Debug("sending notifications/cancelled upstream failed", "err", err)
		}
	}()
}

// initialize makes a session (the pool's create).
func (t *httpTransport) initialize(ctx context.Context, caller Caller) (*session, error) {
	params := []byte(`{"protocolVersion":"` + versionLegacy + `","capabilities":{},"clientInfo":`)
	params = append(append(params, clientInfo(t.c.opts)...), '}')
	id := t.c.nextID.Add(1)
	res, h, err := t.do(ctx, &request{
		caller: caller, method: "initialize", id: id,
		body: appendRequest(nil, id, "initialize", params),
	})
	var rpc *RPCError
	if errors.As(err, &rpc) {
		t.forgetEraAny()
		return nil, t.c.unavailable("the upstream refused to start a session", err)
	}
	if err != nil {
		return nil, err
	}
	s := &session{}
	if s.version, err = stringMember(res, "protocolVersion"); err != nil || !contains(legacyVersions, s.version) {
		t.forgetEraAny()
		return nil, t.c.protocolErr(fmt.Sprintf("initialize answered protocol version %q", s.version), err)
	}
	if caps, _ := member(res, "capabilities"); caps.Kind() == '{' {
		s.caps = bytes.Clone(caps)
	} else {
		s.caps = jsontext.Value("{}")
	}
	s.id = h.Get("Mcp-Session-Id")
	if len(s.id) > maxSessionIDSize || strings.IndexFunc(s.id, func(r rune) bool { return r < 0x21 || r > 0x7e }) >= 0 {
		return nil, t.c.protocolErr("invalid Mcp-Session-Id", nil)
	}
	_, _, err = t.do(ctx, &request{
		sess: s, caller: caller, method: "notifications/initialized", id: -1, version: s.version,
		body: appendRequest(nil, -1, "notifications/initialized", nil),
	})
	if err != nil {
		if s.id != "" {
			t.deleteSession(s)
		}
		return nil, err
	}
	return s, nil
}

// forgetEraAny makes the next call probe again, whatever the era was.
func (t *httpTransport) forgetEraAny() {
	t.mu.Lock()
	t.era = nil
	t.mu.Unlock()
}

// deleteSession ends a session upstream (the pool's end). 405 and 404 are
// fine: the server does not let clients end sessions, or already forgot it.
func (t *httpTransport) deleteSession(s *session) { t.deleteSessionWith(t.ctx, s) }

// setHeaders sets the headers every request to the upstream carries:
// the static ones, the protocol version, the session, and the identity
// assertion: the caller's (identity), or for what the gateway sends of its
// own (discovery, the catalog, session setup and teardown) the gateway's.
func (t *httpTransport) setHeaders(h http.Header, s *session, version, identity string) {
	for k, v := range t.headers {
		h[k] = v
	}
	switch version {
	case "":
	case versionModern:
		h["Mcp-Protocol-Version"] = modernVersionValue
	default:
		h["Mcp-Protocol-Version"] = []string{version}
	}
	if s != nil && s.id != "" {
		h["Mcp-Session-Id"] = []string{s.id}
	}
	if identity == "" && t.c.opts.GatewayIdentity != nil {
		// Only asked for when no caller's identity replaces it: even a
		// cached assertion costs a lookup.
		identity = t.c.opts.GatewayIdentity()
	}
	if identity != "" {
		h[IdentityHeader] = []string{identity}
	}
}

// Header values every request sends. They are shared between requests and
// never modified: net/http only reads them, and adding to one (Header.Add)
// would copy it, as each holds exactly one element.
var (
	modernVersionValue = []string{versionModern}
	jsonValue          = []string{"application/json"}
	acceptValue        = []string{"application/json, text/event-stream"}
	eventStreamValue   = []string{"text/event-stream"}

	toolsCallValue     = []string{"tools/call"}
	promptsGetValue    = []string{"prompts/get"}
	resourcesReadValue = []string{"resources/read"}
)

// methodValue is the Mcp-Method value of method: shared for the methods
// routed on every call.
func methodValue(method string) []string {
	switch method {
	case "tools/call":
		return toolsCallValue
	case "prompts/get":
		return promptsGetValue
	case "resources/read":
		return resourcesReadValue
	}
	return []string{method}
}

// requestHeaderSize presizes a request's header map: the static headers
// and the protocol's (type, accept, version, method, name, identity,
// session).
func (t *httpTransport) requestHeaderSize() int { return len(t.headers) + 8 }

// request is one POST.
type request struct {
	sess    *session
	caller  Caller
	method  string
	id      int64 // < 0: a notification or a response, answered 202
	body    []byte
	version string // legacy: the session's version
	modern  bool
	name    string         // modern: Mcp-Name
	args    jsontext.Value // modern tools/call: arguments, for Mcp-Param-*
	notify  func(Message)
}

// statusError is an HTTP error answer without a JSON-RPC error in it.
type statusError struct{ code int }

func (e *statusError) Error() string { return fmt.Sprintf("HTTP %d", e.code) }

// do sends r and reads the answer: the result, a *RPCError, errSessionGone,
// or an *Error (wrapping *statusError for an HTTP error status). It also
// returns the answer's header.
//
// The exchange runs under a context of its own that follows ctx until the
// answer is in, and no further: an SSE answer is read up to the response,
// and the rest of the stream (the end of its chunked body, normally) is read
// after do returns, so that the connection goes back to the keep-alive pool
// instead of being closed. Through h1client that is closing the body: the
// rest is read, without waiting, when the connection is next used. Through
// net/http's Transport it is read by a goroutine, and a server that leaves
// the stream open after the response gets the connection closed after
// drainWait.
func (t *httpTransport) do(ctx context.Context, r *request) (jsontext.Value, http.Header, error) {
	xctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	resp, err := t.send(xctx, r)
	if err != nil {
		stop()
		cancel()
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, err
	}
	res, err := t.answer(ctx, r, resp)
	if stop() && isEventStream(resp) && !h1client.ClosesLazily(resp.Body) {
		go drain(resp.Body, cancel)
	} else {
		resp.Body.Close()
		cancel()
	}
	return res, resp.Header, err
}

// drainWait and drainMax bound what is read of a stream after its answer.
const (
	drainWait = time.Second
	drainMax  = 64 << 10
)

func drain(body io.ReadCloser, cancel context.CancelFunc) {
	t := time.AfterFunc(drainWait, cancel)
	_, _ = io.Copy(io.Discard, io.LimitReader(body, drainMax))
	t.Stop()
	body.Close()
	cancel()
}

func isEventStream(resp *http.Response) bool {
	return mediaType(resp.Header) == "text/event-stream"
}

// mediaType is the media type of h's Content-Type, lower case, without
// parameters ("" when absent or invalid), as mime.ParseMediaType reads it.
// The two types servers answer with, written plainly, are recognised
// without it: it allocates a map of parameters every time.
func mediaType(h http.Header) string {
	v := h.Get("Content-Type")
	switch v {
	case "application/json", "text/event-stream":
		return v
	}
	mt, _, _ := mime.ParseMediaType(v)
	return mt
}

// send posts r. The caller must close the answer's body.
func (t *httpTransport) send(ctx context.Context, r *request) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.endpoint, bytes.NewReader(r.body))
	if err != nil {
		return nil, t.c.unavailable("bad request", err)
	}
	h := make(http.Header, t.requestHeaderSize())
	req.Header = h
	version := r.version
	if r.modern {
		version = versionModern
	}
	t.setHeaders(h, r.sess, version, r.caller.Identity)
	h["Content-Type"] = jsonValue
	h["Accept"] = acceptValue
	if r.modern {
		h["Mcp-Method"] = methodValue(r.method)
		if r.name != "" {
			h["Mcp-Name"] = []string{encodeHeaderValue(r.name)}
		}
		if r.args != nil {
			t.c.setParamHeaders(h, r.name, r.args)
		}
	}
	var resp *http.Response
	if t.rt != nil {
		resp, err = t.rt.RoundTrip(req)
	} else {
		resp, err = t.client.Do(req)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		t.c.opts.Metrics.Up(false)
		return nil, t.c.unavailable(netReason(err), err)
	}
	t.c.opts.Metrics.Up(true)
	return resp, nil
}

func (t *httpTransport) answer(ctx context.Context, r *request, resp *http.Response) (jsontext.Value, error) {
	code := resp.StatusCode
	switch {
	case code == http.StatusAccepted || code == http.StatusNoContent:
		if r.id < 0 {
			return nil, nil
		}
		return nil, t.c.protocolErr(fmt.Sprintf("HTTP %d without an answer to a request", code), nil)
	case code >= 200 && code < 300:
		if r.id < 0 {
			return nil, nil
		}
		mt := mediaType(resp.Header)
		switch mt {
		case "application/json":
			return t.readJSON(r, resp)
		case "text/event-stream":
			return t.readStream(ctx, r, resp.Body)
		}
		return nil, t.c.protocolErr(fmt.Sprintf("answer of type %q", mt), nil)
	case code == http.StatusNotFound && r.sess != nil && r.sess.id != "":
		return nil, errSessionGone
	case code >= 300 && code < 400:
		return nil, t.c.unavailable(fmt.Sprintf("redirected (HTTP %d); redirects are not followed", code), &statusError{code})
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
	if rpc := errorBody(body, r.id); rpc != nil {
		// The TypeScript SDK's examples (server-everything among them)
		// answer a request with an unknown session 400, not 404.
		if code == http.StatusBadRequest && r.sess != nil && r.sess.id != "" &&
			strings.Contains(strings.ToLower(rpc.Message), "session") {
			return nil, errSessionGone
		}
		return nil, rpc
	}
	return nil, t.c.unavailable(fmt.Sprintf("HTTP %d", code), &statusError{code})
}

// errorBody reads the JSON-RPC error of an HTTP error answer. Servers often
// leave out the id there (the spec allows it when they could not read the
// request's), so an absent or null id is accepted, as is the request's own.
func errorBody(body []byte, id int64) *RPCError {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' || !jsontext.Value(body).IsValid(decodeOptions...) {
		return nil
	}
	if v, _ := member(body, "jsonrpc"); string(v) != `"2.0"` {
		return nil
	}
	if v, _ := member(body, "id"); v != nil && v.Kind() != 'n' && !idIs(v, id) {
		return nil
	}
	e, _ := member(body, "error")
	if e.Kind() != '{' {
		return nil
	}
	rpc, err := parseRPCError(e)
	if err != nil {
		return nil
	}
	return rpc
}

// readJSON reads an application/json answer: one JSON-RPC response to r.
func (t *httpTransport) readJSON(r *request, resp *http.Response) (jsontext.Value, error) {
	// Read into a pooled buffer; the result is copied out of it, at its
	// exact size.
	buf := rawjson.GetBuffer()
	defer rawjson.PutBuffer(buf)
	body, err := readLimited(*buf, resp.Body, resp.ContentLength, t.c.opts.MaxResponseBytes)
	*buf = body
	if errors.Is(err, errEventTooLarge) {
		return nil, t.c.tooLarge("the answer")
	}
	if err != nil {
		return nil, t.c.unavailable("reading the answer failed", err)
	}
	m, err := parseMessage(body)
	if err != nil {
		return nil, t.c.protocolErr("the answer is not JSON-RPC", err)
	}
	res, err := t.response(r, &m)
	if res != nil {
		// The body buffer is reused; the result outlives it.
		res = bytes.Clone(res)
	}
	return res, err
}

// response checks that m answers r and returns its result or error.
func (t *httpTransport) response(r *request, m *message) (jsontext.Value, error) {
	switch {
	case !m.isResponse():
		return nil, t.c.protocolErr("a request or notification instead of the answer", nil)
	case idIs(m.id, r.id), m.id.Kind() == 'n':
		return t.c.resultFrom(m)
	}
	return nil, t.c.protocolErr("an answer to another request", nil)
}

// readStream reads a text/event-stream answer: notifications and requests,
// then the response to r. A session server (2025-11-25) may end the stream
// before the response, having sent event IDs: it is then resumed with a GET
// carrying Last-Event-ID, after the retry time the server set.
func (t *httpTransport) readStream(ctx context.Context, r *request, body io.Reader) (jsontext.Value, error) {
	sr := getSSEReader(body, int(t.c.opts.MaxResponseBytes))
	defer putSSEReader(sr)
	var resumed io.Closer
	defer func() {
		if resumed != nil {
			resumed.Close()
		}
	}()
	for resumes := 0; ; {
		ev, err := sr.next()
		if err != nil && !errors.Is(err, errEventTooLarge) && ctx.Err() == nil &&
			r.sess != nil && len(sr.lastID) > 0 && resumes < maxResumes {
			resumes++
			rc, rerr := t.resume(ctx, r, sr, resumes)
			if rerr != nil {
				return nil, rerr
			}
			if resumed != nil {
				resumed.Close()
			}
			resumed = rc
			sr.resume(rc)
			continue
		}
		switch {
		case err == io.EOF:
			return nil, t.c.unavailable("the stream ended before the answer", nil)
		case errors.Is(err, errEventTooLarge):
			return nil, t.c.tooLarge("an event of the answer")
		case err != nil:
			return nil, t.c.unavailable("the stream broke", err)
		case len(ev.Name) > 0 && string(ev.Name) != "message":
			continue
		case len(bytes.TrimSpace(ev.Data)) == 0:
			continue // a priming event: an id for resumption, no message
		}
		m, err := parseMessage(ev.Data)
		if err != nil {
			return nil, t.c.protocolErr("an event is not JSON-RPC", err)
		}
		switch {
		case m.isResponse():
			res, err := t.response(r, &m)
			if res != nil {
				// The event buffer is reused; the result outlives it.
				res = bytes.Clone(res)
			}
			return res, err
		case m.isNotification():
			t.c.notification(&m, ev.Data, r.notify)
		default:
			t.refuse(ctx, r.sess, &m)
		}
	}
}

// maxResumes bounds the resumptions of one answer stream.
const maxResumes = 100

// resume reopens a session's answer stream after the last event seen.
func (t *httpTransport) resume(ctx context.Context, r *request, sr *sseReader, attempt int) (io.ReadCloser, error) {
	delay := time.Duration(sr.retry) * time.Millisecond
	if sr.retry < 0 {
		delay = min(50*time.Millisecond<<min(attempt-1, 6), 2*time.Second)
	}
	if !sleepCtx(ctx, delay) {
		return nil, ctx.Err()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.endpoint, nil)
	if err != nil {
		return nil, t.c.unavailable("bad request", err)
	}
	t.setHeaders(req.Header, r.sess, r.version, r.caller.Identity)
	req.Header["Accept"] = eventStreamValue
	req.Header["Last-Event-Id"] = []string{string(sr.lastID)}
	resp, err := t.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, t.c.unavailable("resuming the stream: "+netReason(err), err)
	}
	mt := mediaType(resp.Header)
	if resp.StatusCode != http.StatusOK || mt != "text/event-stream" {
		resp.Body.Close()
		// Even a lost session cannot be retried here: the request may have
		// run.
		return nil, t.c.unavailable(fmt.Sprintf("resuming the stream: HTTP %d", resp.StatusCode), &statusError{resp.StatusCode})
	}
	return resp.Body, nil
}

// notification handles a notification the upstream sent while a request ran
// (or on a watch stream, with notify nil).
func (c *conn) notification(m *message, raw []byte, notify func(Message)) {
	switch {
	case m.methodIs("notifications/progress"), m.methodIs("notifications/message"):
		if notify != nil {
			notify(bytes.Clone(raw))
		}
	case m.methodIs("notifications/tools/list_changed"), m.methodIs("notifications/resources/list_changed"),
		m.methodIs("notifications/prompts/list_changed"):
		c.signal()
	}
}

// refuse answers a request the server sent the gateway: ping is answered,
// everything else (sampling, elicitation, roots) refused. Modern servers must
// not send requests, and there is no way to answer one: it is ignored.
func (t *httpTransport) refuse(ctx context.Context, s *session, m *message) {
	if s == nil {
		t.c.opts.Logger.Warn("upstream sent a request on a 2026-07-28 stream; ignored", "method", m.methodString())
		return
	}
	var body []byte
	if m.methodIs("ping") {
		body = appendResultResponse(nil, m.id, "{}")
	} else {
		t.c.opts.Logger.Info("refused a request of the upstream", "method", m.methodString())
		body = appendErrorResponse(nil, m.id, codeMethodNotFound, refusedMessage)
	}
	if _, _, err := t.do(ctx, &request{sess: s, id: -1, version: s.version, body: body}); err != nil {
		t.c.opts.Logger.Debug("answering a request of the upstream failed", "err", err)
	}
}

// readLimited reads r whole, appending to buf, empty, (which it grows as
// needed) and returning it, or fails with errEventTooLarge past limit. It
// returns the buffer it grew even when it fails.
func readLimited(buf []byte, r io.Reader, length, limit int64) ([]byte, error) {
	if length > limit {
		return buf, errEventTooLarge
	}
	if length >= 0 && int64(cap(buf)-len(buf)) < length+1 {
		buf = slices.Grow(buf, int(length)+1)
	} else if cap(buf) == len(buf) {
		buf = slices.Grow(buf, 512)
	}
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				return buf, errEventTooLarge
			}
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return buf, errEventTooLarge
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// netReason is a short reason for a failed HTTP exchange, without addresses.
func netReason(err error) string {
	var (
		dns     *net.DNSError
		netErr  net.Error
		tlsErr  *tls.CertificateVerificationError
		recErr  tls.RecordHeaderError
		opError *net.OpError
	)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	case errors.As(err, &dns):
		return "name not resolved"
	case errors.As(err, &tlsErr), errors.As(err, &recErr):
		return "TLS failed"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "connect timeout"
	case errors.As(err, &opError):
		return "network error"
	}
	return "request failed"
}

func stringArray(obj jsontext.Value, name string) ([]string, error) {
	if obj.Kind() != '{' {
		return nil, errors.New("not an object")
	}
	arr, err := member(obj, name)
	if err != nil || arr.Kind() != '[' {
		return nil, fmt.Errorf("no %s array", name)
	}
	var out []string
	err = elements(arr, func(v jsontext.Value) error {
		if v.Kind() == '"' {
			u, err := jsontext.AppendUnquote(nil, v)
			if err != nil {
				return err
			}
			out = append(out, string(u))
		}
		return nil
	})
	return out, err
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (t *httpTransport) close() error {
	t.cancel()
	sessions := t.pool.close()
	// End sessions with a fresh context: t.ctx is done.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, s := range sessions {
		if s.id == "" {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t.deleteSessionWith(context.Background(), s)
		}()
	}
	wg.Wait()
	t.wg.Wait()
	t.client.CloseIdleConnections()
	return nil
}

func (t *httpTransport) deleteSessionWith(parent context.Context, s *session) {
	ctx, cancel := context.WithTimeout(parent, auxTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, t.endpoint, nil)
	if err != nil {
		return
	}
	t.setHeaders(req.Header, s, s.version, "")
	resp, err := t.client.Do(req)
	if err != nil {
		t.c.opts.Logger.Debug("ending an upstream session failed", "err", err)
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, errorBodyLimit))
	resp.Body.Close()
}
