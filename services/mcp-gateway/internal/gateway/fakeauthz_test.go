package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/scopes"
	"github.com/mcpauthz/mcpauthz/internal/seedusers"
	"github.com/mcpauthz/mcpauthz/internal/tokenref"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/authzclient"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/config"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/gateway"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
)

// scriptedAuthz is an authz gRPC service whose Authorize answers come from
// answer, for the answers the real authz cannot be made to give (an
// INVALID_ARGUMENT blaming each field). It records every Authorize request.
type scriptedAuthz struct {
	authzv1.UnimplementedAuthzServiceServer
	answer func(*authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error)

	mu   sync.Mutex
	reqs []*authzv1.AuthorizeRequest
}

func (s *scriptedAuthz) Authorize(_ context.Context, req *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) {
	s.mu.Lock()
	s.reqs = append(s.reqs, proto.CloneOf(req))
	s.mu.Unlock()
	return s.answer(req)
}

func (s *scriptedAuthz) requests() []*authzv1.AuthorizeRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

// startScripted serves svc over gRPC on loopback and a gateway in front of
// it, with the real authz client between them (so error details cross the
// wire as they would from authz). It returns the gateway's MCP endpoint and
// its logs, at debug level.
func startScripted(t *testing.T, svc *scriptedAuthz) (string, *testenv.LogBuffer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	authzv1.RegisterAuthzServiceServer(srv, svc)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	az, err := authzclient.New(ln.Addr().String(), authzclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { az.Close() })

	web := httptest.NewUnstartedServer(nil)
	url := "http://" + web.Listener.Addr().String()
	// No decision cache: the fake serves no invalidation stream.
	vars := map[string]string{"MCP_SERVER_URL": url, "AUTHORIZATION_SERVER": "http://127.0.0.1:9/oauth/2.1", "DECISION_CACHE_TTL": "0s"}
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	logs := &testenv.LogBuffer{}
	g, err := gateway.New(gateway.Options{Config: cfg, Authz: az, Tools: tools.BuiltIn(), Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	web.Config.Handler = g
	web.Start()
	t.Cleanup(web.Close)
	return url + "/mcp", logs
}

// badRequest is an INVALID_ARGUMENT with a google.rpc.BadRequest naming
// fields, as authz sends it.
func badRequest(t *testing.T, fields ...string) error {
	t.Helper()
	br := &errdetails.BadRequest{}
	for _, f := range fields {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: f, Description: f + " is malformed"})
	}
	st, err := status.New(codes.InvalidArgument, "malformed request").WithDetails(br)
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

// TestInvalidArgument: authz's INVALID_ARGUMENT becomes 401 invalid_token only
// when its BadRequest detail blames the token; blaming anything else (the
// resource, the scopes the gateway asked for), or nothing, is the gateway's
// own fault: 500 with a JSON body, no challenge, so clients keep their tokens,
// and one ERROR line per period however many requests fail.
func TestInvalidArgument(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  func(t *testing.T) error
		want wantChallenge
	}{
		{"token", func(t *testing.T) error { return badRequest(t, "token") }, wantChallenge{status: 401, desc: true, bodyError: "invalid_token"}},
		{"token and scopes", func(t *testing.T) error { return badRequest(t, "required_scopes", "token") }, wantChallenge{status: 401, desc: true, bodyError: "invalid_token"}},
		{"required_scopes", func(t *testing.T) error { return badRequest(t, "required_scopes") }, wantChallenge{status: 500, bodyError: "server_error"}},
		{"resource", func(t *testing.T) error { return badRequest(t, "resource") }, wantChallenge{status: 500, bodyError: "server_error"}},
		{"claims_format", func(t *testing.T) error { return badRequest(t, "claims_format") }, wantChallenge{status: 500, bodyError: "server_error"}},
		{"no details", func(*testing.T) error {
			return status.Error(codes.InvalidArgument, "required_scopes must be at most 64 valid OAuth scope tokens")
		}, wantChallenge{status: 500, bodyError: "server_error"}},
		{"other detail", func(t *testing.T) error {
			st, err := status.New(codes.InvalidArgument, "malformed").WithDetails(&errdetails.ErrorInfo{Reason: "TOKEN"})
			if err != nil {
				t.Fatal(err)
			}
			return st.Err()
		}, wantChallenge{status: 500, bodyError: "server_error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mcp, logs := startScripted(t, &scriptedAuthz{answer: func(*authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) {
				return nil, tt.err(t)
			}})
			want := tt.want
			if want.status == 401 {
				// The 401 asks for every supported scope.
				want.params = map[string]string{"resource_metadata": strings.TrimSuffix(mcp, "/mcp") + "/.well-known/oauth-protected-resource/mcp", "scope": scopeUser + " " + scopeOrg, "error": "invalid_token"}
			}
			for range 5 {
				checkChallenge(t, post(t, mcp, "some-token", callBody("who_am_i")), want)
			}
			errorLines := strings.Count(logs.String(), `"level":"ERROR"`)
			switch {
			case want.status == 500 && errorLines != 1:
				t.Errorf("%d ERROR lines for 5 failed requests, want 1:\n%s", errorLines, logs)
			case want.status != 500 && errorLines != 0:
				t.Errorf("%d ERROR lines for a malformed token, want none:\n%s", errorLines, logs)
			}
			if strings.Contains(logs.String(), "some-token") {
				t.Error("the gateway logged the token")
			}
		})
	}
}

// TestAuthzQuestions checks what the gateway asks authz for who_am_i: the
// user's organizations (include_orgs) only in a question that requires
// read:org_data, and that question only for a token that may hold it (granted,
// or a scope besides the operation's that a hierarchy might expand to it).
func TestAuthzQuestions(t *testing.T) {
	t.Parallel()
	// granted scopes per token; "admin" implies read:org_data here.
	granted := map[string][]string{
		"user-only": {scopeUser},
		"both":      {scopeUser, scopeOrg},
		"admin":     {scopeUser, "admin"},
		"other":     {scopeUser, "offline_access"},
	}
	holds := func(token, scope string) bool {
		return slices.Contains(granted[token], scope) || (token == "admin" && scope == scopeOrg)
	}
	svc := &scriptedAuthz{answer: func(req *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) {
		p := &authzv1.Principal{Subject: "u-" + req.GetToken(), Scopes: granted[req.GetToken()], ExpiresAt: timestamppb.New(time.Now().Add(time.Hour))}
		var missing []string
		for _, s := range req.GetRequiredScopes() {
			if !holds(req.GetToken(), s) {
				missing = append(missing, s)
			}
		}
		if len(missing) > 0 {
			return &authzv1.AuthorizeResponse{Principal: p, TokenRef: "ref", Denial: &authzv1.Denial{Reason: authzv1.DenialReason_DENIAL_REASON_INSUFFICIENT_SCOPE, MissingScopes: missing}}, nil
		}
		res := &authzv1.AuthorizeResponse{Allowed: true, Principal: p, TokenRef: "ref"}
		if req.GetIncludeUser() {
			res.User = &authzv1.User{UserId: p.Subject, Email: seedusers.AliceEmail}
			if req.GetIncludeOrgs() {
				res.User.Orgs = []*authzv1.OrgMembership{{OrgId: "org-1", OrgName: "Acme", UserRole: "Admin"}}
			}
		}
		return res, nil
	}}
	mcp, _ := startScripted(t, svc)

	type question struct {
		Scopes []string
		User   bool
		Orgs   bool
	}
	first := question{Scopes: []string{scopeUser}, User: true}
	withOrgs := question{Scopes: []string{scopeUser, scopeOrg}, User: true, Orgs: true}
	tests := []struct {
		token     string
		wantAsked []question
		wantOrgs  int
	}{
		{"user-only", []question{first}, 0},
		{"both", []question{first, withOrgs}, 1},
		{"admin", []question{first, withOrgs}, 1},
		{"other", []question{first, withOrgs}, 0},
	}
	for _, tt := range tests {
		before := len(svc.requests())
		var who tools.WhoAmI
		if tr := callTool(t, mcp, tt.token, "who_am_i", &who); tr.IsError {
			t.Fatalf("%s: who_am_i: %+v", tt.token, tr.Content)
		}
		var asked []question
		for _, r := range svc.requests()[before:] {
			asked = append(asked, question{Scopes: r.GetRequiredScopes(), User: r.GetIncludeUser(), Orgs: r.GetIncludeOrgs()})
		}
		if diff := cmp.Diff(tt.wantAsked, asked); diff != "" {
			t.Errorf("%s: questions to authz (-want +got):\n%s", tt.token, diff)
		}
		if who.User == nil || len(who.User.Orgs) != tt.wantOrgs || (tt.wantOrgs == 0) != (who.OrgsWithheld != "") {
			b, _ := json.Marshal(who)
			t.Errorf("%s: who_am_i = %s; want %d orgs and orgs_withheld only without them", tt.token, b, tt.wantOrgs)
		}
	}
	for _, r := range svc.requests() {
		if r.GetIncludeOrgs() && !slices.Contains(r.GetRequiredScopes(), scopeOrg) {
			t.Errorf("asked authz for orgs with scopes %q", r.GetRequiredScopes())
		}
	}
}

// TestAuthzQuestionsFailing: when authz fails the second question (the
// organizations), who_am_i still answers, without them, saying why.
func TestAuthzQuestionsFailing(t *testing.T) {
	t.Parallel()
	svc := &scriptedAuthz{answer: func(req *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) {
		if req.GetIncludeOrgs() {
			return nil, status.Error(codes.Unavailable, "replica going away")
		}
		return &authzv1.AuthorizeResponse{Allowed: true, TokenRef: "ref",
			Principal: &authzv1.Principal{Subject: "u", Scopes: []string{scopeUser, scopeOrg}},
			User:      &authzv1.User{UserId: "u"}}, nil
	}}
	mcp, _ := startScripted(t, svc)
	var who tools.WhoAmI
	if tr := callTool(t, mcp, "tok", "who_am_i", &who); tr.IsError {
		t.Fatalf("who_am_i: %+v", tr.Content)
	}
	if who.User == nil || len(who.User.Orgs) != 0 || !strings.Contains(who.OrgsWithheld, "could not be checked") {
		t.Errorf("who_am_i with the orgs question failing: user %+v, orgs_withheld %q", who.User, who.OrgsWithheld)
	}
	if res := post(t, mcp, "tok", callBody("who_am_i")); res.StatusCode != http.StatusOK {
		t.Errorf("status %d, want 200", res.StatusCode)
	}
}

// TestScopeLimitsMatchAuthz asks the real authz questions at the limits the
// gateway's configuration enforces (scopes.MaxCount scopes of
// scopes.MaxLength bytes): authz answers them (here a denial: the token
// holds none of them), and refuses one scope more, or one byte more, with
// INVALID_ARGUMENT. If authz's limits change, this fails and SCOPES checking
// must follow.
func TestScopeLimitsMatchAuthz(t *testing.T) {
	t.Parallel()
	az, err := authzclient.New(stack.Authz.Addr, authzclient.Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer az.Close()
	token := mint(t, []string{scopeUser})
	list := func(n, length int) []string {
		out := make([]string, n)
		for i := range out {
			p := fmt.Sprintf("s%d:", i)
			out[i] = p + strings.Repeat("x", length-len(p))
		}
		return out
	}
	tests := []struct {
		name    string
		scopes  []string
		refused bool
	}{
		{"at the limits", list(scopes.MaxCount, scopes.MaxLength), false},
		{"one scope more", list(scopes.MaxCount+1, 10), true},
		{"one byte more", list(1, scopes.MaxLength+1), true},
		// Every scope-token character class (a comma separates SCOPES).
		{"scope-token characters", []string{"!#$%&'()*+-./09:;<=>?@AZ[]^_`az{|}~"}, false},
	}
	for _, tt := range tests {
		res, err := az.Authorize(t.Context(), &authzv1.AuthorizeRequest{Token: token, Resource: stack.Gateway.MCP(), RequiredScopes: tt.scopes})
		switch {
		case tt.refused && status.Code(err) != codes.InvalidArgument:
			t.Errorf("%s: %v, %v; want INVALID_ARGUMENT", tt.name, res, err)
		case !tt.refused && err != nil:
			t.Errorf("%s: authz refused what SCOPES accepts: %v", tt.name, err)
		case !tt.refused && res.GetDenial().GetReason() != authzv1.DenialReason_DENIAL_REASON_INSUFFICIENT_SCOPE:
			t.Errorf("%s: %v; want an insufficient_scope denial", tt.name, res)
		}
		if !tt.refused {
			if _, cerr := scopes.ParseNonEmpty(strings.Join(tt.scopes, " ")); cerr != nil {
				t.Errorf("%s: SCOPES refuses what authz accepts: %v", tt.name, cerr)
			}
		} else if _, cerr := scopes.ParseNonEmpty(strings.Join(tt.scopes, " ")); cerr == nil {
			t.Errorf("%s: SCOPES accepts what authz refuses", tt.name)
		}
	}
}

// TestInvalidArgumentContract checks, against the real authz, the contract
// TestInvalidArgument relies on: a malformed token is blamed on the field
// "token", and scopes the gateway wrote on another field, so that only the
// first becomes a 401.
func TestInvalidArgumentContract(t *testing.T) {
	t.Parallel()
	az, err := authzclient.New(stack.Authz.Addr, authzclient.Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer az.Close()
	fields := func(err error) []string {
		var out []string
		for _, d := range status.Convert(err).Details() {
			if br, ok := d.(*errdetails.BadRequest); ok {
				for _, v := range br.GetFieldViolations() {
					out = append(out, v.GetField())
				}
			}
		}
		return out
	}
	token := mint(t, []string{scopeUser})
	for _, tt := range []struct {
		name string
		req  *authzv1.AuthorizeRequest
		want []string
	}{
		{"token with a space", &authzv1.AuthorizeRequest{Token: "two words", Resource: stack.Gateway.MCP(), RequiredScopes: []string{scopeUser}}, []string{"token"}},
		{"scope with a quote", &authzv1.AuthorizeRequest{Token: token, Resource: stack.Gateway.MCP(), RequiredScopes: []string{`read"x`}}, []string{"required_scopes"}},
		{"resource with a fragment", &authzv1.AuthorizeRequest{Token: token, Resource: stack.Gateway.MCP() + "#x", RequiredScopes: []string{scopeUser}}, []string{"resource"}},
	} {
		_, err := az.Authorize(t.Context(), tt.req)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want INVALID_ARGUMENT", tt.name, err)
			continue
		}
		if diff := cmp.Diff(tt.want, fields(err)); diff != "" {
			t.Errorf("%s: BadRequest fields (-want +got):\n%s", tt.name, diff)
		}
	}
}

// TestTokenRefInLogs: the gateway's log lines name a token only by the short
// form of the token_ref authz returned for it (package tokenref), for allowed
// and denied requests alike, and name none when authz did not answer.
func TestTokenRefInLogs(t *testing.T) {
	t.Parallel()
	refs := map[string]string{"allowed-token": strings.Repeat("a1", 32), "denied-token": strings.Repeat("d2", 32)}
	svc := &scriptedAuthz{answer: func(req *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) {
		switch req.GetToken() {
		case "allowed-token":
			return &authzv1.AuthorizeResponse{Allowed: true, TokenRef: refs["allowed-token"], Principal: &authzv1.Principal{Subject: "u", Scopes: []string{scopeUser}}}, nil
		case "denied-token":
			return &authzv1.AuthorizeResponse{TokenRef: refs["denied-token"], Denial: &authzv1.Denial{Reason: authzv1.DenialReason_DENIAL_REASON_TOKEN_EXPIRED}}, nil
		}
		return nil, status.Error(codes.Unavailable, "down")
	}}
	mcp, logs := startScripted(t, svc)
	for _, tc := range []struct {
		token   string
		status  int
		lines   []string // messages logged for the request
		wantRef string   // "" for none
	}{
		{"allowed-token", 200, []string{"mcp request"}, tokenref.Short(refs["allowed-token"])},
		{"denied-token", 401, []string{"denied", "mcp request"}, tokenref.Short(refs["denied-token"])},
		{"down-token", 503, []string{"authz unavailable", "mcp request"}, ""},
	} {
		before := len(logLines(t, logs))
		res := post(t, mcp, tc.token, listBody())
		res.Body.Close()
		if res.StatusCode != tc.status {
			t.Fatalf("%s: status %d, want %d", tc.token, res.StatusCode, tc.status)
		}
		for _, msg := range tc.lines {
			found := false
			for _, l := range logLines(t, logs)[before:] {
				if l["msg"] != msg {
					continue
				}
				found = true
				ref, has := l[tokenref.Key]
				switch {
				case tc.wantRef == "" && has:
					t.Errorf("%s: %q logged %s %v, authz gave none", tc.token, msg, tokenref.Key, ref)
				case tc.wantRef != "" && ref != tc.wantRef:
					t.Errorf("%s: %q logged %s %v, want %q", tc.token, msg, tokenref.Key, ref, tc.wantRef)
				}
			}
			if !found {
				t.Errorf("%s: no %q line in\n%s", tc.token, msg, logs)
			}
		}
	}
	for tok, ref := range refs {
		if strings.Contains(logs.String(), ref) || strings.Contains(logs.String(), tok) {
			t.Errorf("the logs hold %s or its whole token_ref:\n%s", tok, logs)
		}
	}
	if strings.Contains(logs.String(), "token_sha256") {
		t.Error("the logs still name tokens by token_sha256")
	}
}

// logLines decodes the JSON log lines in logs.
func logLines(t *testing.T, logs *testenv.LogBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(logs.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}
