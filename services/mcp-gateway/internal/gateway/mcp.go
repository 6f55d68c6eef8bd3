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

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/tokenref"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/caller"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/challenge"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/config"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/httperror"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/mcpreq"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/operation"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
	// bodyRead: the body was read to its end. Until then an answer closes
	// the connection (see fail).
	bodyRead bool
}

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
		g.fail(x, g.challenged(http.StatusBadRequest, challenge.ErrInvalidRequest, tokenErr.Error(), g.supportedScopes))
		return
	case !hasBearer:
		desc := "this MCP server requires an OAuth access token: send Authorization: Bearer <token>; see resource_metadata"
		g.fail(x, g.challenged(http.StatusUnauthorized, "", desc, g.supportedScopes))
		return
	case !validToken(token):
		g.fail(x, g.invalidToken("the access token is malformed"))
		return
	}

	if n := g.inFlight.Add(1); n > g.maxInFlight {
		g.inFlight.Add(-1)
		g.metrics.InFlightRejected()
		g.fail(x, httperror.Response{Status: http.StatusServiceUnavailable, Error: "temporarily_unavailable", Description: "the server has too many requests in flight; retry after Retry-After seconds (your token was not rejected)", RetryAfter: RetryAfter})
		return
	}
	defer g.inFlight.Add(-1)

	info, err := g.readBody(w, r)
	if err != nil {
		var perr *mcpreq.Error
		if !errors.As(err, &perr) {
			perr = &mcpreq.Error{Status: http.StatusBadRequest, Msg: err.Error()}
		}
		g.fail(x, httperror.Response{Status: perr.Status, Description: perr.Msg})
		return
	}
	x.bodyRead = true
	x.info, x.parsed = info, true
	x.op = g.ops.For(info)

	c, ok := g.authorize(x)
	if !ok || !g.withinRateLimit(x, c) {
		return
	}
	r = r.WithContext(caller.NewContext(r.Context(), c))
	g.mcp.ServeHTTP(x.w, r)
}

// authorize asks authz, or the decision cache, and, unless the request is
// allowed, writes the answer.
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
	if err != nil {
		g.metrics.Decision("error")
		switch {
		case status.Code(err) == codes.InvalidArgument && tokenViolation(err):
			g.fail(x, g.invalidToken("the access token is malformed"))
		case status.Code(err) == codes.InvalidArgument:
			// authz refused a part of the question the gateway wrote (the
			// resource, the scopes): the gateway's fault, not the token's. A
			// 401 would make the client throw a good token away.
			if ok, unlogged := g.badArgLog.Allow(); ok {
				g.log.ErrorContext(ctx, "authz refused the gateway's question as malformed; check SCOPES and MCP_SERVER_URL", "error", err, "violations", violations(err), "unlogged_since_last", unlogged)
			}
			g.fail(x, httperror.Response{Status: http.StatusInternalServerError, Error: "server_error", Description: "the gateway could not ask the authorization service about this request (a configuration error, logged at the gateway); your token was not rejected"})
		case ctx.Err() != nil:
			// The client went away; nobody reads the answer.
			x.w.status = 499
		default:
			g.log.WarnContext(ctx, "authz unavailable", "error", err, "code", status.Code(err).String())
			g.fail(x, httperror.Response{Status: http.StatusServiceUnavailable, Error: "temporarily_unavailable", Description: "the authorization service is unavailable; retry later (your token was not rejected)", RetryAfter: RetryAfter})
		}
		return nil, false
	}
	x.tokenRef = res.GetTokenRef()
	p := res.GetPrincipal()
	if res.GetAllowed() && p != nil {
		g.metrics.Decision("allowed")
		c := caller.New(p, x.op.Scopes, g.checkFunc(x.token))
		c.UserRequested = x.op.NeedsUser
		c.User = res.GetUser()
		c.UserError = res.GetUserError()
		if len(x.op.OrgsScopes) > 0 {
			g.addOrgs(x, c)
		}
		return c, true
	}
	d := res.GetDenial()
	reason := strings.ToLower(strings.TrimPrefix(d.GetReason().String(), "DENIAL_REASON_"))
	if res.GetAllowed() || d == nil {
		reason = "malformed"
	}
	g.metrics.Decision(reason)
	g.log.InfoContext(ctx, "denied", "reason", reason, "missing_scopes", d.GetMissingScopes(), "method", x.info.Method, "tool", x.info.Tool(), tokenRefAttr(x.tokenRef), "client_ip", clientIP(x.r))
	switch {
	case reason == "malformed":
		g.log.ErrorContext(ctx, "authz returned an incomplete decision", "allowed", res.GetAllowed())
		g.fail(x, httperror.Response{Status: http.StatusServiceUnavailable, Error: "temporarily_unavailable", Description: "the authorization service returned an incomplete decision", RetryAfter: RetryAfter})
	case d.GetReason() == authzv1.DenialReason_DENIAL_REASON_INSUFFICIENT_SCOPE:
		desc := d.GetDescription()
		if desc == "" {
			desc = "the access token lacks scope " + strings.Join(d.GetMissingScopes(), " ")
		}
		g.fail(x, g.challenged(http.StatusForbidden, challenge.ErrInsufficientScope, desc, x.op.Scopes))
	default:
		desc := d.GetDescription()
		if desc == "" {
			desc = defaultDenialDescription(d.GetReason())
		}
		g.fail(x, g.invalidToken(desc))
	}
	return nil, false
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
// says why there are none. The request itself is allowed either way.
func (g *Gateway) addOrgs(x *exchange, c *caller.Caller) {
	if !x.op.MayHold(c.Principal.GetScopes()) {
		c.OrgsWithheld = tools.OrgsWithheld(x.op.OrgsScopes)
		return
	}
	ctx := x.r.Context()
	res, err := g.decide(ctx, &authzv1.AuthorizeRequest{
		Token:          x.token,
		Resource:       g.resource,
		RequiredScopes: x.op.WithOrgs,
		IncludeUser:    true,
		IncludeOrgs:    true,
		ClaimsFormat:   authzv1.ClaimsFormat_CLAIMS_FORMAT_JSON,
	})
	switch {
	case err != nil:
		g.log.WarnContext(ctx, "authz did not answer whether the token may see organizations; leaving them out", "error", err, "code", status.Code(err).String(), tokenRefAttr(x.tokenRef))
		c.OrgsWithheld = "organizations could not be checked right now (the authorization service did not answer); retry later"
	case res.GetAllowed() && res.GetPrincipal() != nil:
		c.Confirm(x.op.OrgsScopes)
		c.User, c.UserError = res.GetUser(), res.GetUserError()
	case res.GetDenial().GetReason() == authzv1.DenialReason_DENIAL_REASON_INSUFFICIENT_SCOPE:
		c.OrgsWithheld = tools.OrgsWithheld(x.op.OrgsScopes)
	default:
		// The token was refused in between (expired, say): the request was
		// allowed, but nothing more is shown on its strength.
		c.OrgsWithheld = "organizations could not be shown: the token was refused when they were checked (" + strings.ToLower(strings.TrimPrefix(res.GetDenial().GetReason().String(), "DENIAL_REASON_")) + ")"
	}
}

// tokenViolation reports whether err, an INVALID_ARGUMENT from authz, blames
// the token itself: authz attaches a google.rpc.BadRequest whose field
// violation names "token" (other fields: resource, required_scopes,
// claims_format, user_id, which the gateway wrote). Without such a detail the
// token is not blamed: the gateway has already checked its syntax.
func tokenViolation(err error) bool {
	for _, d := range status.Convert(err).Details() {
		br, ok := d.(*errdetails.BadRequest)
		if !ok {
			continue
		}
		for _, v := range br.GetFieldViolations() {
			if v.GetField() == "token" {
				return true
			}
		}
	}
	return false
}

// violations lists the fields an INVALID_ARGUMENT's BadRequest detail names,
// for the log.
func violations(err error) []string {
	var out []string
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				out = append(out, v.GetField()+": "+v.GetDescription())
			}
		}
	}
	return out
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

func defaultDenialDescription(r authzv1.DenialReason) string {
	switch r {
	case authzv1.DenialReason_DENIAL_REASON_TOKEN_EXPIRED:
		return "the access token has expired"
	case authzv1.DenialReason_DENIAL_REASON_AUDIENCE_MISMATCH:
		return "the access token was not issued for this resource"
	case authzv1.DenialReason_DENIAL_REASON_ISSUER_MISMATCH:
		return "the access token was issued by another authorization server"
	case authzv1.DenialReason_DENIAL_REASON_TOKEN_NOT_YET_VALID:
		return "the access token is not valid yet"
	}
	return "the access token is not active"
}

// invalidToken is the 401 for a token that cannot be used. Like the 401 for
// no token, it asks for every supported scope (package doc, Scopes): the
// client is about to log in again.
func (g *Gateway) invalidToken(desc string) httperror.Response {
	return g.challenged(http.StatusUnauthorized, challenge.ErrInvalidToken, desc, g.supportedScopes)
}

// challenged is an error answer with a Bearer challenge naming scopes; code
// (empty for a request without a token) and desc are both the challenge's
// and the body's.
func (g *Gateway) challenged(status int, code, desc string, scopes []string) httperror.Response {
	return httperror.Response{
		Status:      status,
		Error:       code,
		Description: desc,
		Challenge:   &challenge.Bearer{Error: code, Description: desc, ResourceMetadata: g.prmURL, Scopes: scopes},
	}
}

// readBody reads and parses the request within MCP_BODY_TIMEOUT of now
// (just after the headers), through the connection's read deadline, so that
// a client trickling its body gets 408 (mcpreq.ReadBody). It returns what
// [mcpreq.Read] returns.
func (g *Gateway) readBody(w http.ResponseWriter, r *http.Request) (mcpreq.Info, error) {
	rc := http.NewResponseController(w)
	// Only a ResponseWriter that cannot set deadlines (not net/http's)
	// refuses; the body is then bounded by the server's ReadTimeout alone.
	_ = rc.SetReadDeadline(time.Now().Add(g.bodyTimeout))
	info, err := mcpreq.Read(r, g.maxBody)
	if err != nil {
		// The deadline stays: the connection is closed after the answer.
		return info, err
	}
	// No deadline once the body is in: the server's background read for
	// the next request would otherwise fail when it passes and cancel this
	// request's context, cutting off a slow tool call or a stream.
	_ = rc.SetReadDeadline(time.Time{})
	return info, nil
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

// finish records the request in metrics and the debug log.
func (g *Gateway) finish(x *exchange) {
	st := x.w.status
	if st == 0 {
		st = http.StatusOK
	}
	method, tool := "unknown", ""
	if x.parsed {
		method = "other"
		if slices.Contains(knownMethods, x.info.Method) {
			method = x.info.Method
		}
		if t := x.info.Tool(); t != "" {
			tool = "unknown"
			if g.ops.IsTool(t) {
				tool = t
			}
		}
	}
	d := time.Since(x.start)
	g.metrics.ObserveRequest(method, tool, strconv.Itoa(st), d)
	if g.log.Enabled(x.r.Context(), slog.LevelDebug) {
		attrs := []any{"method", method, "tool", tool, "status", st, "duration", d, "client_ip", clientIP(x.r)}
		if x.tokenRef != "" {
			attrs = append(attrs, tokenref.Attr(x.tokenRef))
		}
		g.log.DebugContext(x.r.Context(), "mcp request", attrs...)
	}
}

// bearerToken returns the credentials of the request's one Authorization
// header when it uses the Bearer scheme (hasBearer; the token may still be
// malformed, even empty), or an error for a request that sends a token in the
// URL or more than one Authorization header.
func bearerToken(r *http.Request) (token string, hasBearer bool, err error) {
	if r.URL.Query().Has("access_token") {
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
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && isLoopback(la.String()) && !isLoopback(r.Host) && !strings.EqualFold(hostname(r.Host), hostname(g.host)) {
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
