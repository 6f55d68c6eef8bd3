package gateway

import (
	"log/slog"
	"net/http"
	"strings"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/tokenref"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/caller"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/challenge"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/httperror"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/operation"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// answers builds the gateway's challenged answers: every challenge names the
// protected resource metadata, and those of a 401 or 400 every scope the
// server supports (package doc, Scopes).
type answers struct {
	// resourceMetadata is the protected resource metadata URL.
	resourceMetadata string
	// supported is scopes_supported: SCOPES and every tool's scopes.
	supported []string
	// noToken and malformed are the same for every request, built once: a
	// flood of requests without a usable token costs no challenge to build.
	noToken, malformed httperror.Response
}

// newAnswers returns the answers of a gateway whose protected resource
// metadata is at resourceMetadata and lists supported.
func newAnswers(resourceMetadata string, supported []string) answers {
	a := answers{resourceMetadata: resourceMetadata, supported: supported}
	a.noToken = a.challenged(http.StatusUnauthorized, "", "this MCP server requires an OAuth access token: send Authorization: Bearer <token>; see resource_metadata", supported)
	a.malformed = a.invalidToken("the access token is malformed")
	return a
}

// challenged is an error answer with a Bearer challenge naming scopes; code
// (empty for a request without a token) and desc are both the challenge's
// and the body's.
func (a answers) challenged(status int, code, desc string, scopes []string) httperror.Response {
	return httperror.Response{
		Status:      status,
		Error:       code,
		Description: desc,
		Challenge:   &challenge.Bearer{Error: code, Description: desc, ResourceMetadata: a.resourceMetadata, Scopes: scopes},
	}
}

// invalidToken is the 401 for a token that cannot be used. Like the 401 for
// no token, it asks for every supported scope: the client is about to log in
// again.
func (a answers) invalidToken(desc string) httperror.Response {
	return a.challenged(http.StatusUnauthorized, challenge.ErrInvalidToken, desc, a.supported)
}

// The answers to requests authz could not decide on.
var (
	unavailableAnswer = httperror.Response{Status: http.StatusServiceUnavailable, Error: "temporarily_unavailable", Description: "the authorization service is unavailable; retry later (your token was not rejected)", RetryAfter: RetryAfter}
	incompleteAnswer  = httperror.Response{Status: http.StatusServiceUnavailable, Error: "temporarily_unavailable", Description: "the authorization service returned an incomplete decision", RetryAfter: RetryAfter}
	badQuestionAnswer = httperror.Response{Status: http.StatusInternalServerError, Error: "server_error", Description: "the gateway could not ask the authorization service about this request (a configuration error, logged at the gateway); your token was not rejected"}
)

// question is what [judge] knows of a request besides authz's answer.
type question struct {
	// op is what the request was authorized for.
	op operation.Operation
	// clientGone: the request's context ended while authz was asked.
	clientGone bool
	// check is the allowed caller's [caller.CheckFunc].
	check caller.CheckFunc
}

// outcome is what the gateway does once authz has answered: go on with
// caller, or answer, and in either case count decision and write logs.
type outcome struct {
	// caller, when set, is the allowed caller: the request goes on.
	caller *caller.Caller
	// answer is written when the request does not go on, unless clientGone.
	answer httperror.Response
	// clientGone: the client went away; nothing is written, and the request
	// is recorded with status 499.
	clientGone bool
	// decision labels mcp_gateway_authz_decisions_total.
	decision string
	// reason is the audit log's reason for a request that does not go on
	// (package audit); empty when allowed or the client is gone.
	reason string
	// logs are written in order.
	logs []logLine
}

// logLine is a line [judge] asks to be logged.
type logLine struct {
	level slog.Level
	msg   string
	attrs []slog.Attr
	// request: the request's method, tool and client address are added.
	request bool
	// limited: at most one such line per badArgLogEvery, with the count of
	// those left out: the gateway's own misconfiguration fails every request.
	limited bool
}

// clientClosedRequest is the status a request is recorded with when its
// client went away before the answer (nginx's 499).
const clientClosedRequest = 499

// judge returns what to do with a request given authz's answer res, or its
// error err (a gRPC status error), to the question the gateway asked for q.
// It only reads its arguments: the metrics, the logs, the answer and the
// caller are the caller's to use.
//
//   - Allowed with a principal: go on with the caller.
//   - Denied for insufficient scope: 403 naming the operation's scopes.
//   - Any other denial: 401 invalid_token.
//   - Allowed without a principal, or denied without a denial: 503 (authz
//     broke its contract; never a 401, which would throw a token away).
//   - INVALID_ARGUMENT blaming the token: 401 invalid_token; blaming
//     anything else or nothing: 500, the gateway's fault, logged at ERROR.
//   - Any other error: 503 with Retry-After, or nothing when the client is
//     gone.
func judge(a answers, q question, res *authzv1.AuthorizeResponse, err error) outcome {
	if err != nil {
		o := outcome{decision: "error"}
		switch {
		case status.Code(err) == codes.InvalidArgument && tokenViolation(err):
			o.answer, o.reason = a.malformed, "malformed_token"
		case status.Code(err) == codes.InvalidArgument:
			// authz refused a part of the question the gateway wrote (the
			// resource, the scopes): the gateway's fault, not the token's. A
			// 401 would make the client throw a good token away.
			o.logs = []logLine{{
				level:   slog.LevelError,
				msg:     "authz refused the gateway's question as malformed; check SCOPES and MCP_SERVER_URL",
				attrs:   []slog.Attr{slog.Any("error", err), slog.Any("violations", violations(err))},
				limited: true,
			}}
			o.answer, o.reason = badQuestionAnswer, "authz_invalid_argument"
		case q.clientGone:
			// Nobody reads the answer.
			o.clientGone = true
		default:
			o.logs = []logLine{{
				level: slog.LevelWarn,
				msg:   "authz unavailable",
				attrs: []slog.Attr{slog.Any("error", err), slog.String("code", status.Code(err).String())},
			}}
			o.answer, o.reason = unavailableAnswer, "authz_unavailable"
		}
		return o
	}
	if p := res.GetPrincipal(); res.GetAllowed() && p != nil {
		c := caller.New(p, q.op.Scopes, q.check)
		c.UserRequested = q.op.NeedsUser
		c.User = res.GetUser()
		c.UserError = res.GetUserError()
		return outcome{caller: c, decision: "allowed"}
	}
	d := res.GetDenial()
	reason := denialName(d.GetReason())
	if res.GetAllowed() || d == nil {
		reason = "malformed"
	}
	// Room for the token_ref and the request's attributes (logLine).
	attrs := make([]slog.Attr, 0, 6)
	attrs = append(attrs, slog.String("reason", reason), slog.Any("missing_scopes", d.GetMissingScopes()))
	if ref := res.GetTokenRef(); ref != "" {
		attrs = append(attrs, tokenref.Attr(ref))
	}
	o := outcome{decision: reason, reason: reason, logs: []logLine{{level: slog.LevelInfo, msg: "denied", attrs: attrs, request: true}}}
	switch {
	case reason == "malformed":
		o.logs = append(o.logs, logLine{level: slog.LevelError, msg: "authz returned an incomplete decision", attrs: []slog.Attr{slog.Bool("allowed", res.GetAllowed())}})
		o.answer, o.reason = incompleteAnswer, "authz_incomplete"
	case d.GetReason() == authzv1.DenialReason_DENIAL_REASON_INSUFFICIENT_SCOPE:
		desc := d.GetDescription()
		if desc == "" {
			desc = "the access token lacks scope " + strings.Join(d.GetMissingScopes(), " ")
		}
		o.answer = a.challenged(http.StatusForbidden, challenge.ErrInsufficientScope, desc, q.op.Scopes)
	default:
		desc := d.GetDescription()
		if desc == "" {
			desc = defaultDenialDescription(d.GetReason())
		}
		o.answer = a.invalidToken(desc)
	}
	return o
}

// denialName is r as metrics and logs name it: "token_expired".
func denialName(r authzv1.DenialReason) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "DENIAL_REASON_"))
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

// orgsOutcome is what the gateway does with authz's answer to the second
// question of an operation that shows the user's organizations only to
// tokens holding its OrgsScopes (who_am_i): the request itself is allowed
// either way.
type orgsOutcome struct {
	// confirmed: authz allowed OrgsScopes too; the caller's user becomes
	// user (with the organizations) and userError.
	confirmed bool
	user      *authzv1.User
	userError string
	// withheld, when set, says why the organizations are not shown.
	withheld string
	// log, when set, is written.
	log *logLine
}

// orgsUnchecked is why organizations are missing when authz did not answer.
const orgsUnchecked = "organizations could not be checked right now (the authorization service did not answer); retry later"

// judgeOrgs returns what to do with authz's answer res, or its error err, to
// the organizations question of op, asked for the token authz named tokenRef
// when it allowed the request. It only reads its arguments.
func judgeOrgs(op operation.Operation, tokenRef string, res *authzv1.AuthorizeResponse, err error) orgsOutcome {
	switch {
	case err != nil:
		l := &logLine{
			level: slog.LevelWarn,
			msg:   "authz did not answer whether the token may see organizations; leaving them out",
			attrs: []slog.Attr{slog.Any("error", err), slog.String("code", status.Code(err).String())},
		}
		if tokenRef != "" {
			l.attrs = append(l.attrs, tokenref.Attr(tokenRef))
		}
		return orgsOutcome{withheld: orgsUnchecked, log: l}
	case res.GetAllowed() && res.GetPrincipal() != nil:
		return orgsOutcome{confirmed: true, user: res.GetUser(), userError: res.GetUserError()}
	case res.GetDenial().GetReason() == authzv1.DenialReason_DENIAL_REASON_INSUFFICIENT_SCOPE:
		return orgsOutcome{withheld: tools.OrgsWithheld(op.OrgsScopes)}
	}
	// The token was refused in between (expired, say): the request was
	// allowed, but nothing more is shown on its strength.
	return orgsOutcome{withheld: "organizations could not be shown: the token was refused when they were checked (" + denialName(res.GetDenial().GetReason()) + ")"}
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
