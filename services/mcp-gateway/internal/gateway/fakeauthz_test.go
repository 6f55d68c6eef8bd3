package gateway_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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
// answer, for the answers the real authz cannot be made to give. It records
// every Authorize request.
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
// its logs.
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
	vars := map[string]string{config.EnvServerURL: url, config.EnvAuthorizationServer: "http://127.0.0.1:9/oauth/2.1"}
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	logs := &testenv.LogBuffer{}
	g, err := gateway.New(gateway.Options{Config: cfg, Authz: az, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	web.Config.Handler = g
	web.Start()
	t.Cleanup(web.Close)
	return url + "/mcp", logs
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
			res.User = &authzv1.User{UserId: p.Subject, Email: "alice@example.com"}
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
