package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/challenge"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/httperror"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/mcpreq"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/operation"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
)

const (
	testPRM = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
	testRef = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

var (
	testAnswers = newAnswers(testPRM, []string{"read:user_data", "read:org_data"})
	// whoAmIOp and listOrgsOp are the operations of the built-in tools.
	whoAmIOp   = operation.NewTable([]string{"read:user_data"}, tools.BuiltIn().All()).For(mcpreq.Info{Method: "tools/call", Name: "who_am_i"})
	listOrgsOp = operation.NewTable([]string{"read:user_data"}, tools.BuiltIn().All()).For(mcpreq.Info{Method: "tools/call", Name: "list_my_orgs"})
)

// invalidArgument is authz's INVALID_ARGUMENT with a BadRequest naming fields.
func invalidArgument(t *testing.T, fields ...string) error {
	t.Helper()
	br := &errdetails.BadRequest{}
	for _, f := range fields {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: f, Description: "bad"})
	}
	st, err := status.New(codes.InvalidArgument, "malformed request").WithDetails(br)
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

// judged is what a test compares of an outcome: the caller's fields instead
// of the caller, the log lines rendered.
type judged struct {
	Allowed       bool
	Principal     *authzv1.Principal
	User          *authzv1.User
	UserError     string
	UserRequested bool
	Answer        httperror.Response
	ClientGone    bool
	Decision      string
	Logs          []string
}

// render is l as tests compare it: "LEVEL msg key=value ... [+request]
// [+limited]".
func render(l logLine) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", l.level, l.msg)
	for _, a := range l.attrs {
		fmt.Fprintf(&b, " %s=%s", a.Key, a.Value)
	}
	if l.request {
		b.WriteString(" +request")
	}
	if l.limited {
		b.WriteString(" +limited")
	}
	return b.String()
}

func view(o outcome) judged {
	j := judged{Answer: o.answer, ClientGone: o.clientGone, Decision: o.decision}
	for _, l := range o.logs {
		j.Logs = append(j.Logs, render(l))
	}
	if c := o.caller; c != nil {
		j.Allowed, j.Principal, j.User, j.UserError, j.UserRequested = true, c.Principal, c.User, c.UserError, c.UserRequested
	}
	return j
}

// TestJudge covers every branch of the decision on authz's answer, including
// those the real authz never takes (allowed without a principal, a denial
// without a reason or a description).
func TestJudge(t *testing.T) {
	t.Parallel()
	alice := &authzv1.Principal{Subject: "alice", Scopes: []string{"read:user_data"}}
	user := &authzv1.User{UserId: "alice"}
	unavailable := status.Error(codes.Unavailable, "no replica")
	deadline := status.Error(codes.DeadlineExceeded, "too slow")
	denial := func(r authzv1.DenialReason, desc string) *authzv1.AuthorizeResponse {
		return &authzv1.AuthorizeResponse{TokenRef: testRef, Denial: &authzv1.Denial{Reason: r, Description: desc}}
	}
	invalidToken := func(desc string) httperror.Response {
		return httperror.Response{Status: 401, Error: "invalid_token", Description: desc, Challenge: &challenge.Bearer{
			Error: "invalid_token", Description: desc, ResourceMetadata: testPRM, Scopes: []string{"read:user_data", "read:org_data"}}}
	}
	insufficient := func(desc string) httperror.Response {
		return httperror.Response{Status: 403, Error: "insufficient_scope", Description: desc, Challenge: &challenge.Bearer{
			Error: "insufficient_scope", Description: desc, ResourceMetadata: testPRM, Scopes: []string{"read:user_data", "read:org_data"}}}
	}
	denied := func(reason, missing string) string {
		return "INFO denied reason=" + reason + " missing_scopes=" + missing + " token_ref=0123456789ab +request"
	}
	tests := []struct {
		name       string
		op         operation.Operation
		res        *authzv1.AuthorizeResponse
		err        error
		clientGone bool
		want       judged
	}{
		{
			name: "allowed",
			op:   whoAmIOp,
			res:  &authzv1.AuthorizeResponse{Allowed: true, Principal: alice, User: user, TokenRef: testRef},
			want: judged{Allowed: true, Principal: alice, User: user, UserRequested: true, Decision: "allowed"},
		},
		{
			name: "allowed, the user lookup failed",
			op:   whoAmIOp,
			res:  &authzv1.AuthorizeResponse{Allowed: true, Principal: alice, UserError: "no such user", TokenRef: testRef},
			want: judged{Allowed: true, Principal: alice, UserError: "no such user", UserRequested: true, Decision: "allowed"},
		},
		{
			name: "allowed without asking for the user",
			op:   operation.Operation{Scopes: []string{"read:user_data"}},
			res:  &authzv1.AuthorizeResponse{Allowed: true, Principal: alice},
			want: judged{Allowed: true, Principal: alice, Decision: "allowed"},
		},
		{
			name: "allowed without a principal",
			op:   whoAmIOp,
			res:  &authzv1.AuthorizeResponse{Allowed: true, TokenRef: testRef},
			want: judged{Answer: incompleteAnswer, Decision: "malformed", Logs: []string{
				denied("malformed", "[]"),
				"ERROR authz returned an incomplete decision allowed=true",
			}},
		},
		{
			name: "denied without a denial",
			op:   whoAmIOp,
			res:  &authzv1.AuthorizeResponse{TokenRef: testRef},
			want: judged{Answer: incompleteAnswer, Decision: "malformed", Logs: []string{
				denied("malformed", "[]"),
				"ERROR authz returned an incomplete decision allowed=false",
			}},
		},
		{
			name: "an empty answer",
			op:   whoAmIOp,
			want: judged{Answer: incompleteAnswer, Decision: "malformed", Logs: []string{
				"INFO denied reason=malformed missing_scopes=[] +request",
				"ERROR authz returned an incomplete decision allowed=false",
			}},
		},
		{
			name: "allowed and denied at once",
			op:   whoAmIOp,
			res:  &authzv1.AuthorizeResponse{Allowed: true, TokenRef: testRef, Denial: &authzv1.Denial{Reason: authzv1.DenialReason_DENIAL_REASON_TOKEN_EXPIRED}},
			want: judged{Answer: incompleteAnswer, Decision: "malformed", Logs: []string{
				denied("malformed", "[]"),
				"ERROR authz returned an incomplete decision allowed=true",
			}},
		},
		{
			name: "inactive, authz's description",
			op:   whoAmIOp,
			res:  denial(authzv1.DenialReason_DENIAL_REASON_TOKEN_INACTIVE, "revoked at 10:00"),
			want: judged{Answer: invalidToken("revoked at 10:00"), Decision: "token_inactive", Logs: []string{denied("token_inactive", "[]")}},
		},
		{
			name: "inactive, no description",
			op:   whoAmIOp,
			res:  denial(authzv1.DenialReason_DENIAL_REASON_TOKEN_INACTIVE, ""),
			want: judged{Answer: invalidToken("the access token is not active"), Decision: "token_inactive", Logs: []string{denied("token_inactive", "[]")}},
		},
		{
			name: "expired, no description",
			op:   whoAmIOp,
			res:  denial(authzv1.DenialReason_DENIAL_REASON_TOKEN_EXPIRED, ""),
			want: judged{Answer: invalidToken("the access token has expired"), Decision: "token_expired", Logs: []string{denied("token_expired", "[]")}},
		},
		{
			name: "audience mismatch, no description",
			op:   whoAmIOp,
			res:  denial(authzv1.DenialReason_DENIAL_REASON_AUDIENCE_MISMATCH, ""),
			want: judged{Answer: invalidToken("the access token was not issued for this resource"), Decision: "audience_mismatch", Logs: []string{denied("audience_mismatch", "[]")}},
		},
		{
			name: "issuer mismatch, no description",
			op:   whoAmIOp,
			res:  denial(authzv1.DenialReason_DENIAL_REASON_ISSUER_MISMATCH, ""),
			want: judged{Answer: invalidToken("the access token was issued by another authorization server"), Decision: "issuer_mismatch", Logs: []string{denied("issuer_mismatch", "[]")}},
		},
		{
			name: "not yet valid, no description",
			op:   whoAmIOp,
			res:  denial(authzv1.DenialReason_DENIAL_REASON_TOKEN_NOT_YET_VALID, ""),
			want: judged{Answer: invalidToken("the access token is not valid yet"), Decision: "token_not_yet_valid", Logs: []string{denied("token_not_yet_valid", "[]")}},
		},
		{
			name: "a denial without a reason",
			op:   whoAmIOp,
			res:  denial(authzv1.DenialReason_DENIAL_REASON_UNSPECIFIED, ""),
			want: judged{Answer: invalidToken("the access token is not active"), Decision: "unspecified", Logs: []string{denied("unspecified", "[]")}},
		},
		{
			name: "a reason newer than the gateway",
			op:   whoAmIOp,
			res:  denial(authzv1.DenialReason(99), ""),
			want: judged{Answer: invalidToken("the access token is not active"), Decision: "99", Logs: []string{denied("99", "[]")}},
		},
		{
			name: "a denial without a token_ref",
			op:   whoAmIOp,
			res:  &authzv1.AuthorizeResponse{Denial: &authzv1.Denial{Reason: authzv1.DenialReason_DENIAL_REASON_TOKEN_EXPIRED}},
			want: judged{Answer: invalidToken("the access token has expired"), Decision: "token_expired", Logs: []string{"INFO denied reason=token_expired missing_scopes=[] +request"}},
		},
		{
			name: "insufficient scope, authz's description",
			op:   listOrgsOp,
			res:  &authzv1.AuthorizeResponse{TokenRef: testRef, Principal: alice, Denial: &authzv1.Denial{Reason: authzv1.DenialReason_DENIAL_REASON_INSUFFICIENT_SCOPE, MissingScopes: []string{"read:org_data"}, Description: "lacks read:org_data"}},
			want: judged{Answer: insufficient("lacks read:org_data"), Decision: "insufficient_scope", Logs: []string{denied("insufficient_scope", "[read:org_data]")}},
		},
		{
			name: "insufficient scope, no description",
			op:   listOrgsOp,
			res:  &authzv1.AuthorizeResponse{TokenRef: testRef, Principal: alice, Denial: &authzv1.Denial{Reason: authzv1.DenialReason_DENIAL_REASON_INSUFFICIENT_SCOPE, MissingScopes: []string{"read:org_data"}}},
			want: judged{Answer: insufficient("the access token lacks scope read:org_data"), Decision: "insufficient_scope", Logs: []string{denied("insufficient_scope", "[read:org_data]")}},
		},
		{
			name: "INVALID_ARGUMENT blaming the token",
			op:   whoAmIOp,
			err:  invalidArgument(t, "token"),
			want: judged{Answer: invalidToken("the access token is malformed"), Decision: "error"},
		},
		{
			name: "INVALID_ARGUMENT blaming the token and the scopes",
			op:   whoAmIOp,
			err:  invalidArgument(t, "required_scopes", "token"),
			want: judged{Answer: invalidToken("the access token is malformed"), Decision: "error"},
		},
		{
			name:       "INVALID_ARGUMENT blaming the token, the client gone",
			op:         whoAmIOp,
			err:        invalidArgument(t, "token"),
			clientGone: true,
			want:       judged{Answer: invalidToken("the access token is malformed"), Decision: "error"},
		},
		{
			name: "INVALID_ARGUMENT blaming the resource",
			op:   whoAmIOp,
			err:  invalidArgument(t, "resource"),
			want: judged{Answer: badQuestionAnswer, Decision: "error", Logs: []string{
				"ERROR authz refused the gateway's question as malformed; check SCOPES and MCP_SERVER_URL error=rpc error: code = InvalidArgument desc = malformed request violations=[resource: bad] +limited",
			}},
		},
		{
			name: "INVALID_ARGUMENT without details",
			op:   whoAmIOp,
			err:  status.Error(codes.InvalidArgument, "too many scopes"),
			want: judged{Answer: badQuestionAnswer, Decision: "error", Logs: []string{
				"ERROR authz refused the gateway's question as malformed; check SCOPES and MCP_SERVER_URL error=rpc error: code = InvalidArgument desc = too many scopes violations=[] +limited",
			}},
		},
		{
			name: "UNAVAILABLE",
			op:   whoAmIOp,
			err:  unavailable,
			want: judged{Answer: unavailableAnswer, Decision: "error", Logs: []string{
				"WARN authz unavailable error=rpc error: code = Unavailable desc = no replica code=Unavailable",
			}},
		},
		{
			name: "DEADLINE_EXCEEDED",
			op:   whoAmIOp,
			err:  deadline,
			want: judged{Answer: unavailableAnswer, Decision: "error", Logs: []string{
				"WARN authz unavailable error=rpc error: code = DeadlineExceeded desc = too slow code=DeadlineExceeded",
			}},
		},
		{
			name: "not a gRPC status",
			op:   whoAmIOp,
			err:  errors.New("connection reset"),
			want: judged{Answer: unavailableAnswer, Decision: "error", Logs: []string{
				"WARN authz unavailable error=connection reset code=Unknown",
			}},
		},
		{
			name:       "the client gone: context canceled",
			op:         whoAmIOp,
			err:        status.FromContextError(context.Canceled).Err(),
			clientGone: true,
			want:       judged{ClientGone: true, Decision: "error"},
		},
		{
			name:       "the client gone while authz was unavailable",
			op:         whoAmIOp,
			err:        unavailable,
			clientGone: true,
			want:       judged{ClientGone: true, Decision: "error"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			checked := 0
			check := func(context.Context, []string) (bool, error) { checked++; return true, nil }
			o := judge(testAnswers, question{op: tt.op, clientGone: tt.clientGone, check: check}, tt.res, tt.err)
			if diff := cmp.Diff(tt.want, view(o), protocmp.Transform()); diff != "" {
				t.Errorf("outcome (-want +got):\n%s", diff)
			}
			if o.caller == nil {
				return
			}
			// The caller holds the scopes authz allowed without asking
			// again, and asks the request's check for any other.
			if ok, err := o.caller.Has(t.Context(), tt.op.Scopes); !ok || err != nil || checked != 0 {
				t.Errorf("Has(%q) = %v, %v after %d checks; want true without a check", tt.op.Scopes, ok, err, checked)
			}
			if ok, err := o.caller.Has(t.Context(), []string{"admin"}); !ok || err != nil || checked != 1 {
				t.Errorf(`Has("admin") = %v, %v after %d checks; want the check asked`, ok, err, checked)
			}
		})
	}
}

// TestJudgeOrgs covers the second question of who_am_i: whether the token
// may see the user's organizations.
func TestJudgeOrgs(t *testing.T) {
	t.Parallel()
	alice := &authzv1.Principal{Subject: "alice", Scopes: []string{"read:user_data", "read:org_data"}}
	withOrgs := &authzv1.User{UserId: "alice", Orgs: []*authzv1.OrgMembership{{OrgId: "org-1"}}}
	warn := "WARN authz did not answer whether the token may see organizations; leaving them out error=rpc error: code = Unavailable desc = down code=Unavailable"
	tests := []struct {
		name     string
		tokenRef string
		res      *authzv1.AuthorizeResponse
		err      error
		want     orgsOutcome
		wantLog  string
	}{
		{name: "allowed", res: &authzv1.AuthorizeResponse{Allowed: true, Principal: alice, User: withOrgs}, want: orgsOutcome{confirmed: true, user: withOrgs}},
		{name: "allowed, the user lookup failed", res: &authzv1.AuthorizeResponse{Allowed: true, Principal: alice, UserError: "down"}, want: orgsOutcome{confirmed: true, userError: "down"}},
		{name: "insufficient scope", res: &authzv1.AuthorizeResponse{Principal: alice, Denial: &authzv1.Denial{Reason: authzv1.DenialReason_DENIAL_REASON_INSUFFICIENT_SCOPE}}, want: orgsOutcome{withheld: tools.OrgsWithheld([]string{"read:org_data"})}},
		{name: "expired in between", res: &authzv1.AuthorizeResponse{Denial: &authzv1.Denial{Reason: authzv1.DenialReason_DENIAL_REASON_TOKEN_EXPIRED}}, want: orgsOutcome{withheld: "organizations could not be shown: the token was refused when they were checked (token_expired)"}},
		{name: "allowed without a principal", res: &authzv1.AuthorizeResponse{Allowed: true}, want: orgsOutcome{withheld: "organizations could not be shown: the token was refused when they were checked (unspecified)"}},
		{name: "authz unavailable", tokenRef: testRef, err: status.Error(codes.Unavailable, "down"), want: orgsOutcome{withheld: orgsUnchecked}, wantLog: warn + " token_ref=0123456789ab"},
		{name: "authz unavailable, no token_ref", err: status.Error(codes.Unavailable, "down"), want: orgsOutcome{withheld: orgsUnchecked}, wantLog: warn},
	}
	for _, tt := range tests {
		got := judgeOrgs(whoAmIOp, tt.tokenRef, tt.res, tt.err)
		gotLog := ""
		if got.log != nil {
			gotLog = render(*got.log)
		}
		got.log = nil
		if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(orgsOutcome{}), protocmp.Transform()); diff != "" {
			t.Errorf("%s: outcome (-want +got):\n%s", tt.name, diff)
		}
		if gotLog != tt.wantLog {
			t.Errorf("%s: log %q, want %q", tt.name, gotLog, tt.wantLog)
		}
	}
}

// TestDenialNames: every denial reason authz may send has a metrics label and
// a default description of its own, so a new reason in the proto is noticed
// here.
func TestDenialNames(t *testing.T) {
	t.Parallel()
	seen := map[string]authzv1.DenialReason{}
	for n := range authzv1.DenialReason_name {
		r := authzv1.DenialReason(n)
		name := denialName(r)
		if prev, dup := seen[name]; dup || name == "" || strings.ContainsAny(name, " ABCDEFGHIJKLMNOPQRSTUVWXYZ") {
			t.Errorf("%v is named %q (as %v)", r, name, prev)
		}
		seen[name] = r
		desc := defaultDenialDescription(r)
		switch r {
		case authzv1.DenialReason_DENIAL_REASON_TOKEN_INACTIVE, authzv1.DenialReason_DENIAL_REASON_UNSPECIFIED, authzv1.DenialReason_DENIAL_REASON_INSUFFICIENT_SCOPE:
			// insufficient_scope has a text of its own, naming the scopes.
		default:
			if desc == defaultDenialDescription(authzv1.DenialReason_DENIAL_REASON_TOKEN_INACTIVE) {
				t.Errorf("%v has no default description of its own", r)
			}
		}
	}
	if len(seen) != 7 {
		t.Errorf("%d denial reasons; add the new ones to TestJudge and the golden file invalid-token.txtar", len(seen))
	}
}

// TestNewAnswers: the answers built once name the metadata and every supported
// scope; the 401 without a token has no error code (RFC 6750 section 3.1).
func TestNewAnswers(t *testing.T) {
	t.Parallel()
	supported := []string{"read:user_data", "read:org_data"}
	desc := "this MCP server requires an OAuth access token: send Authorization: Bearer <token>; see resource_metadata"
	want := httperror.Response{Status: 401, Description: desc, Challenge: &challenge.Bearer{Description: desc, ResourceMetadata: testPRM, Scopes: supported}}
	if diff := cmp.Diff(want, testAnswers.noToken); diff != "" {
		t.Errorf("noToken (-want +got):\n%s", diff)
	}
	desc = "the access token is malformed"
	want = httperror.Response{Status: 401, Error: "invalid_token", Description: desc, Challenge: &challenge.Bearer{Error: "invalid_token", Description: desc, ResourceMetadata: testPRM, Scopes: supported}}
	if diff := cmp.Diff(want, testAnswers.malformed); diff != "" {
		t.Errorf("malformed (-want +got):\n%s", diff)
	}
}
