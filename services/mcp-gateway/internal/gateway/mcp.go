package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/scopes"
	"github.com/mcpauthz/mcpauthz/internal/tokenref"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/audit"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/caller"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/challenge"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/config"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/federation"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/httperror"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/mcpreq"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/operation"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
	"go.opentelemetry.io/otel/trace"
)

// Headers a browser client may send and read on /mcp.
const (
	corsAllowHeaders  = "Authorization, Content-Type, Accept, Mcp-Protocol-Version, Mcp-Session-Id, Mcp-Method, Mcp-Name, Last-Event-ID"
	corsExposeHeaders = "WWW-Authenticate, Mcp-Session-Id, Mcp-Protocol-Version, Retry-After"
)

// knownMethods bounds the method label of the request metrics.
var knownMethods = []string{
	"initialize", "notifications/initialized", "ping", "server/discover",
	"tools/list", "tools/call", "prompts/list", "prompts/get",
	"resources/list", "resources/read", "resources/templates/list",
	"resources/subscribe", "resources/unsubscribe", "subscriptions/listen",
	"completion/complete", "logging/setLevel", "notifications/cancelled",
	"notifications/progress", "notifications/roots/list_changed",
}

// exchange is the state of one MCP request, for the answer, logs and metrics.
type exchange struct {
	start  time.Time
	w      *statusWriter
	r      *http.Request
	info   mcpreq.Info
	parsed bool
	token  string
	// tokenRef is the token_ref authz returned for the token, once it has
	// answered: the only name of the token logs carry (package tokenref).
	tokenRef string
	op       operation.Operation
	// body is the request as read (forwarded, and hashed for the audit
	// log); route, when set, the upstream it is forwarded to (package
	// federation).
	body  []byte
	route *federation.Route
	// bodyRead: the body was read to its end. Until then an answer closes
	// the connection (see fail).
	bodyRead bool

	// span is the request's span (trace.go), nil until started or without
	// a tracer; outcome is the decision as metrics label it, for the span.
	span    trace.Span
	outcome string
	// For the audit log (AUDIT_LOG). decision is audit.Allow or audit.Deny
	// once the request has reached one, "" until then (no event); reason
	// says why a request was denied.
	decision, reason string
	// principal is whom authz said the token represents, when it did.
	principal *authzv1.Principal
	// record is in an allowed request's context, for the upstream.
	record *audit.Record
}

// upstream names the upstream the request was for, for the audit log: the
// route's, or what a handler set in the record.
func (x *exchange) upstream() string {
	if x.route != nil {
		return x.route.Upstream
	}
	return x.record.Upstream()
}

// deny records that the request was denied for reason, for the audit log.
func (x *exchange) deny(reason string) { x.decision, x.reason = audit.Deny, reason }

func (g *Gateway) serveMCP(w http.ResponseWriter, r *http.Request) {
	x := &exchange{start: time.Now(), w: &statusWriter{ResponseWriter: w}, r: r}
	defer g.finish(x)

	if !g.checkOrigin(x) {
		return
	}
	switch r.Method {
	case http.MethodPost:
	case http.MethodOptions:
		g.preflight(x)
		return
	default:
		x.w.Header().Set("Allow", "POST, OPTIONS")
		g.fail(x, httperror.Response{Status: http.StatusMethodNotAllowed, Description: "this MCP server is stateless: use POST (no SSE stream, no sessions)"})
		return
	}

	// Up to the in-flight bound only headers are read: a request without a
	// usable token costs neither a body buffer, nor an authz call, nor a slot.
	token, hasBearer, tokenErr := bearerToken(r)
	x.token = token
	x.op = g.ops.Base()
	switch {
	case tokenErr != nil:
		x.deny("invalid_request")
		g.fail(x, g.answers.challenged(http.StatusBadRequest, challenge.ErrInvalidRequest, tokenErr.Error(), g.answers.supported))
		return
	case !hasBearer:
		x.deny("no_token")
		g.fail(x, g.answers.noToken)
		return
	case !validToken(token):
		x.deny("malformed_token")
		g.fail(x, g.answers.malformed)
		return
	}

	if n := g.inFlight.Add(1); n > g.maxInFlight {
		g.inFlight.Add(-1)
		g.metrics.InFlightRejected()
		g.fail(x, httperror.Response{Status: http.StatusServiceUnavailable, Error: "temporarily_unavailable", Description: "the server has too many requests in flight; retry after Retry-After seconds (your token was not rejected)", RetryAfter: RetryAfter})
		return
	}
	defer g.inFlight.Add(-1)

	info, body, err := g.readBody(w, r)
	if err != nil {
		var perr *mcpreq.Error
		if !errors.As(err, &perr) {
			perr = &mcpreq.Error{Status: http.StatusBadRequest, Msg: err.Error()}
		}
		g.fail(x, httperror.Response{Status: perr.Status, Description: perr.Msg})
		return
	}
	x.bodyRead = true
	x.info, x.parsed, x.body = info, true, body
	x.op = g.ops.For(info)
	if g.fed != nil {
		if x.route = g.fed.Route(info, body); x.route != nil {
			x.op = operation.Operation{Scopes: scopes.Union(g.cfg.Scopes, x.route.Scopes)}
		}
	}
	g.startSpan(x)
	r = x.r

	c, ok := g.authorize(x)
	if !ok || !g.withinRateLimit(x, c) {
		return
	}
	x.decision = audit.Allow
	if x.route != nil {
		g.forward(x, c)
		return
	}
	ctx := caller.NewContext(r.Context(), c)
	if g.audit != nil {
		x.record = &audit.Record{}
		ctx = audit.NewContext(ctx, x.record)
	}
	g.mcp.ServeHTTP(x.w, r.WithContext(ctx))
}

// forward sends a routed request to its upstream and writes the answer
// (package federation): never a 401, 403 or 5xx of the upstream's making.
func (g *Gateway) forward(x *exchange, c *caller.Caller) {
	out := g.fed.Serve(x.w, x.r, x.route, x.body, c, x.tokenRef)
	switch {
	case out.ClientGone:
		x.w.status = clientClosedRequest
	case out.Err != nil:
		g.log.LogAttrs(x.r.Context(), slog.LevelWarn, "upstream request failed", x.route.LogAttrs(),
			slog.String("method", x.info.Method), slog.String("name", x.info.Name), tokenRefAttr(x.tokenRef), slog.String("error", out.Err.Error()))
	}
}

// authorize asks authz, or the decision cache, and does what [judge] makes
// of the answer: it returns the caller of an allowed request, or writes the
// answer.
func (g *Gateway) authorize(x *exchange) (*caller.Caller, bool) {
	ctx := x.r.Context()
	req := &authzv1.AuthorizeRequest{
		Token:          x.token,
		Resource:       g.resource,
		RequiredScopes: x.op.Scopes,
		IncludeUser:    x.op.NeedsUser,
		IncludeOrgs:    x.op.NeedsOrgs,
		// Handlers that use the claims (who_am_i) pass them on as JSON: asking
		// for them so saves decoding a Struct and encoding it again.
		ClaimsFormat: authzv1.ClaimsFormat_CLAIMS_FORMAT_JSON,
	}
	res, err := g.decide(ctx, req)
	x.tokenRef = res.GetTokenRef()
	x.principal = res.GetPrincipal()
	q := question{op: x.op, clientGone: ctx.Err() != nil}
	if x.route == nil {
		// A routed request's caller is asked for its principal only: no
		// closure over the token for it.
		q.check = g.checkFunc(x.token)
	}
	o := judge(g.answers, q, res, err)
	g.metrics.Decision(o.decision)
	x.outcome = o.decision
	for _, l := range o.logs {
		g.logLine(x, l)
	}
	switch {
	case o.caller != nil:
		if len(x.op.OrgsScopes) > 0 {
			g.addOrgs(x, o.caller)
		}
		return o.caller, true
	case o.clientGone:
		x.w.status = clientClosedRequest
	default:
		x.deny(o.reason)
		g.fail(x, o.answer)
	}
	return nil, false
}

// logLine writes l, a line of this request's outcome (which it may append
// to), about the request of x.
func (g *Gateway) logLine(x *exchange, l logLine) {
	ctx := x.r.Context()
	if !g.log.Enabled(ctx, l.level) {
		return
	}
	attrs := l.attrs
	if l.request {
		attrs = append(attrs, slog.String("method", x.info.Method), slog.String("tool", x.info.Tool()), slog.String("client_ip", clientIP(x.r)))
	}
	if x.route != nil {
		attrs = append(attrs, x.route.LogAttrs())
	}
	if l.limited {
		ok, unlogged := g.badArgLog.Allow()
		if !ok {
			return
		}
		attrs = append(attrs, slog.Int64("unlogged_since_last", unlogged))
	}
	g.log.LogAttrs(ctx, l.level, l.msg, attrs...)
}

// decide answers req from the decision cache, or asks authz (and keeps an
// allowed answer). Errors are authz's gRPC status errors.
func (g *Gateway) decide(ctx context.Context, req *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) {
	if g.decisions == nil {
		return g.authz.Authorize(ctx, req)
	}
	res, ticket := g.decisions.Get(req)
	if res != nil {
		return res, nil
	}
	res, err := g.authz.Authorize(ctx, req)
	if err == nil {
		g.decisions.Put(ticket, res)
	}
	return res, err
}

// addOrgs completes c, allowed for an operation that shows the user's orgs
// only to tokens holding OrgsScopes (who_am_i): when the token may hold them,
// authz is asked again with them required and include_orgs, and returns the
// orgs only if it allows that; otherwise, or if it does not, c.OrgsWithheld
// says why there are none ([judgeOrgs]). The request itself is allowed either
// way.
func (g *Gateway) addOrgs(x *exchange, c *caller.Caller) {
	if !x.op.MayHold(c.Principal.GetScopes()) {
		c.OrgsWithheld = tools.OrgsWithheld(x.op.OrgsScopes)
		return
	}
	res, err := g.decide(x.r.Context(), &authzv1.AuthorizeRequest{
		Token:          x.token,
		Resource:       g.resource,
		RequiredScopes: x.op.WithOrgs,
		IncludeUser:    true,
		IncludeOrgs:    true,
		ClaimsFormat:   authzv1.ClaimsFormat_CLAIMS_FORMAT_JSON,
	})
	o := judgeOrgs(x.op, x.tokenRef, res, err)
	if o.log != nil {
		g.logLine(x, *o.log)
	}
	if o.confirmed {
		c.Confirm(x.op.OrgsScopes)
		c.User, c.UserError = o.user, o.userError
	}
	c.OrgsWithheld = o.withheld
}

// withinRateLimit charges the caller's budget and, when it is spent, answers
// 429 with Retry-After.
func (g *Gateway) withinRateLimit(x *exchange, c *caller.Caller) bool {
	if g.limiter == nil {
		return true
	}
	res := g.limiter.Allow(x.r.Context(), principalName(c.Principal, x.tokenRef, x.token))
	if res.Allowed {
		return true
	}
	x.deny("rate_limited")
	g.log.DebugContext(x.r.Context(), "rate limited", "method", x.info.Method, "tool", x.info.Tool(), tokenRefAttr(x.tokenRef), "retry_after", res.RetryAfter.String())
	g.fail(x, httperror.Response{
		Status:      http.StatusTooManyRequests,
		Error:       "rate_limited",
		Description: "too many requests for this user (limit " + g.limiter.Limit().String() + "); retry after Retry-After seconds",
		RetryAfter:  res.RetryAfter,
	})
	return false
}

// principalName names whom a request is charged to: the token's subject; for a
// token without one (client credentials), its client; failing both, the token
// itself, by its token_ref (the limiter keeps only a hash of every name,
// ratelimit.Key, so even the token, from an authz that sent no token_ref, is
// never stored).
func principalName(p *authzv1.Principal, tokenRef, token string) string {
	switch {
	case p.GetSubject() != "":
		return "sub:" + p.GetSubject()
	case p.GetClientId() != "":
		return "client:" + p.GetClientId()
	case tokenRef != "":
		return "token:" + tokenRef
	}
	return "token:" + token
}

// tokenRefAttr names the request's token in a log line by the token_ref authz
// returned for it (package tokenref); an empty attribute, which slog leaves
// out, when authz returned none.
func tokenRefAttr(ref string) slog.Attr {
	if ref == "" {
		return slog.Attr{}
	}
	return tokenref.Attr(ref)
}

// readBody reads and parses the request within MCP_BODY_TIMEOUT of now
// (just after the headers), through the connection's read deadline, so that
// a client trickling its body gets 408 (mcpreq.ReadBody). It returns what
// [mcpreq.ReadWithBody] returns.
func (g *Gateway) readBody(w http.ResponseWriter, r *http.Request) (mcpreq.Info, []byte, error) {
	rc := http.NewResponseController(w)
	// Only a ResponseWriter that cannot set deadlines (not net/http's)
	// refuses; the body is then bounded by the server's ReadTimeout alone.
	_ = rc.SetReadDeadline(time.Now().Add(g.bodyTimeout))
	info, body, err := mcpreq.ReadWithBody(r, g.maxBody)
	if err != nil {
		// The deadline stays: the connection is closed after the answer.
		return info, nil, err
	}
	// No deadline once the body is in: the server's background read for
	// the next request would otherwise fail when it passes and cancel this
	// request's context, cutting off a slow tool call or a stream.
	_ = rc.SetReadDeadline(time.Time{})
	return info, body, nil
}

// checkFunc lets handlers ask whether the same token holds more scopes without
// handing them the token.
func (g *Gateway) checkFunc(token string) caller.CheckFunc {
	return func(ctx context.Context, scopes []string) (bool, error) {
		res, err := g.authz.Authorize(ctx, &authzv1.AuthorizeRequest{Token: token, Resource: g.resource, RequiredScopes: scopes, ClaimsFormat: authzv1.ClaimsFormat_CLAIMS_FORMAT_NONE})
		if err != nil {
			return false, err
		}
		return res.GetAllowed(), nil
	}
}

// fail writes an error answer. Before the body has been read to its end, it
// also closes the connection: otherwise net/http would read what remains of
// the body (up to 256 KiB) before answering, waiting on a client that
// announced a body and never sends it.
func (g *Gateway) fail(x *exchange, resp httperror.Response) {
	if !x.bodyRead && x.r.ContentLength != 0 {
		x.w.Header().Set("Connection", "close")
	}
	resp.Write(x.w)
}

// labels are the method and tool of the request as metrics and spans name
// them: a known method or "other" ("unknown" before the body is parsed),
// and for tools/call a tool served or "unknown".
func (g *Gateway) labels(x *exchange) (method, tool string) {
	if !x.parsed {
		return "unknown", ""
	}
	method = "other"
	if slices.Contains(knownMethods, x.info.Method) {
		method = x.info.Method
	}
	if t := x.info.Tool(); t != "" {
		tool = "unknown"
		if g.ops.IsTool(t) || (g.fed != nil && g.fed.IsTool(t)) {
			tool = t
		}
	}
	return method, tool
}

// finish records the request in metrics, its span, the debug log and, once
// it has reached a decision, the audit log.
func (g *Gateway) finish(x *exchange) {
	st := x.w.status
	if st == 0 {
		st = http.StatusOK
	}
	method, tool := g.labels(x)
	end := time.Now()
	d := end.Sub(x.start)
	g.metrics.ObserveRequest(method, tool, statusLabel(st), d)
	g.endSpan(x, st, end)
	if g.log.Enabled(x.r.Context(), slog.LevelDebug) {
		attrs := []any{"method", method, "tool", tool, "status", st, "duration", d, "client_ip", clientIP(x.r)}
		if x.tokenRef != "" {
			attrs = append(attrs, tokenref.Attr(x.tokenRef))
		}
		if x.route != nil {
			attrs = append(attrs, x.route.LogAttrs())
		}
		g.log.DebugContext(x.r.Context(), "mcp request", attrs...)
	}
	if g.audit != nil && x.decision != "" {
		g.audit.Log(g.auditEvent(x, st, d))
	}
}

// statusLabel is st as the request metrics' status label. 200, nearly every
// answer, is a constant: strconv.Itoa allocates for three digits.
func statusLabel(st int) string {
	if st == http.StatusOK {
		return "200"
	}
	return strconv.Itoa(st)
}

// maxAuditName bounds the method, tool, prompt and resource names an audit
// event carries: they are the client's, and only the body bound limits them.
const maxAuditName = 512

// auditEvent is the audit log's event for x, answered with status after d.
func (g *Gateway) auditEvent(x *exchange, status int, d time.Duration) *audit.Event {
	e := &audit.Event{
		Time:       x.start.UTC(),
		Subject:    x.principal.GetSubject(),
		ClientID:   x.principal.GetClientId(),
		TokenRef:   tokenref.Short(x.tokenRef),
		ClientIP:   clientIP(x.r),
		Method:     clip(x.info.Method, maxAuditName),
		Upstream:   x.upstream(),
		Decision:   x.decision,
		Reason:     x.reason,
		Status:     status,
		DurationMS: float64(d.Microseconds()) / 1000,
		TraceID:    audit.TraceID(x.r.Context(), x.r.Header),
	}
	name := clip(x.info.Name, maxAuditName)
	switch x.info.Method {
	case "tools/call":
		e.Tool = name
	case "prompts/get":
		e.Prompt = name
	case "resources/read":
		e.Resource = name
	}
	if x.body != nil && (e.Tool != "" || e.Prompt != "") {
		args, sum := audit.Arguments(x.body)
		e.ArgumentsSHA256 = sum
		if g.cfg.AuditLogArguments {
			e.Arguments = args
		}
	}
	return e
}

// clip cuts s to at most n bytes, at a character boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// bearerToken returns the credentials of the request's one Authorization
// header when it uses the Bearer scheme (hasBearer; the token may still be
// malformed, even empty), or an error for a request that sends a token in the
// URL or more than one Authorization header.
func bearerToken(r *http.Request) (token string, hasBearer bool, err error) {
	// RawQuery first: parsing even an empty query allocates a map.
	if r.URL.RawQuery != "" && r.URL.Query().Has("access_token") {
		return "", false, errors.New("access tokens are accepted only in the Authorization header, never in the URL (RFC 6750 section 2, MCP authorization)")
	}
	vals := r.Header.Values("Authorization")
	switch len(vals) {
	case 0:
		return "", false, nil
	case 1:
	default:
		return "", false, fmt.Errorf("%d Authorization headers; send exactly one", len(vals))
	}
	scheme, rest, _ := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", false, nil
	}
	return strings.TrimLeft(rest, " "), true, nil
}

// validToken reports whether token is an RFC 6750 b64token of sane length.
func validToken(token string) bool {
	if len(token) == 0 || len(token) > maxTokenLen {
		return false
	}
	i := 0
	for ; i < len(token); i++ {
		c := token[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/') {
			break
		}
	}
	if i == 0 {
		return false
	}
	for ; i < len(token); i++ {
		if token[i] != '=' {
			return false
		}
	}
	return true
}

// checkOrigin protects against DNS rebinding: a browser request (one with an
// Origin) must come from the server's own origin or MCP_ALLOWED_ORIGINS, and a
// request reaching a loopback listener must name a loopback host or the
// configured public host. Allowed origins get CORS headers.
func (g *Gateway) checkOrigin(x *exchange) bool {
	r := x.r
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && localLoopback(la) && !isLoopback(r.Host) && !strings.EqualFold(hostname(r.Host), hostname(g.host)) {
		g.fail(x, httperror.Response{Status: http.StatusForbidden, Error: "forbidden", Description: "Host " + strconv.Quote(r.Host) + " is not served here"})
		return false
	}
	raw := r.Header.Get("Origin")
	if raw == "" {
		return true
	}
	o, ok := config.NormalizeOrigin(raw)
	if !ok || !slices.Contains(g.origins, o) {
		g.log.InfoContext(r.Context(), "origin refused", "origin", raw, "client_ip", clientIP(r))
		g.fail(x, httperror.Response{Status: http.StatusForbidden, Error: "forbidden", Description: "origin " + strconv.Quote(raw) + " is not allowed; add it to MCP_ALLOWED_ORIGINS"})
		return false
	}
	h := x.w.Header()
	h.Set("Access-Control-Allow-Origin", raw)
	h.Add("Vary", "Origin")
	h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
	return true
}

func (g *Gateway) preflight(x *exchange) {
	h := x.w.Header()
	h.Set("Access-Control-Allow-Methods", "POST, OPTIONS")
	allow := corsAllowHeaders
	if req := x.r.Header.Get("Access-Control-Request-Headers"); req != "" && validHeaderList(req) {
		// Echo what the browser asks for, so x-mcp-header parameters
		// (Mcp-Param-*) pass too; the Origin was already checked.
		allow = req
	}
	h.Set("Access-Control-Allow-Headers", allow)
	h.Set("Access-Control-Max-Age", "600")
	x.w.WriteHeader(http.StatusNoContent)
}

func validHeaderList(s string) bool {
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			return false
		}
		for i := 0; i < len(f); i++ {
			c := f[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// hostname drops the port, if any, from a Host value: a rebinding attack is
// about the name, and clients differ in whether they send a default port.
func hostname(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

// localLoopback reports whether la, the address a request came in on, is a
// loopback address: isLoopback(la.String()), without formatting and parsing
// a TCP address again on every request.
func localLoopback(la net.Addr) bool {
	if ta, ok := la.(*net.TCPAddr); ok {
		// A zone makes la.String() something net.ParseIP refuses.
		return ta.Zone == "" && ta.IP.IsLoopback()
	}
	return isLoopback(la.String())
}

func isLoopback(hostport string) bool {
	host := hostname(hostport)
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// statusWriter remembers the status for metrics. It passes Flush and the rest
// of http.ResponseController's interface through Unwrap, which the go-sdk's SSE
// streams (subscriptions/listen) need.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
