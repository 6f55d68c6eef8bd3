package app_test

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/faults"
	"github.com/mcpauthz/mcpauthz/internal/propelauthfake"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

const aliceID = seedusers.AliceID

func addAlice(as *propelauthfake.Server) {
	as.AddUser(propelauthfake.User{
		UserID: aliceID, Email: seedusers.AliceEmail, EmailConfirmed: true, HasPassword: true,
		Username: "alice", FirstName: "Alice", LastName: "Liddell",
		PictureURL: "https://img.example/alice.png",
		Properties: map[string]any{"favourite": "tea", "n": 3},
		Metadata:   nil,
		Enabled:    true, CanCreateOrgs: true,
		CreatedAt: 1700000000, LastActiveAt: 1800000000,
		OrgIDToOrgInfo: map[string]propelauthfake.Org{
			"zz-org": {OrgID: "zz-org", OrgName: "Zeta", URLSafeOrgName: "zeta", UserRole: "Member",
				InheritedUserRolesPlusCurrentRole: []string{"Member"}, UserPermissions: []string{}},
			seedusers.AcmeOrgID: {OrgID: seedusers.AcmeOrgID, OrgName: "Acme", URLSafeOrgName: "acme",
				UserRole: "Admin", InheritedUserRolesPlusCurrentRole: []string{"Admin", "Member"}, UserPermissions: []string{"read:org", "write:org"}},
		},
	})
}

func aliceProto(withOrgs bool) *authzv1.User {
	props, _ := structpb.NewStruct(map[string]any{"favourite": "tea", "n": 3})
	u := &authzv1.User{
		UserId: aliceID, Email: seedusers.AliceEmail, EmailConfirmed: true, HasPassword: true,
		Username: "alice", FirstName: "Alice", LastName: "Liddell", PictureUrl: "https://img.example/alice.png",
		Enabled: true, CanCreateOrgs: true,
		CreatedAt:    &timestamppb.Timestamp{Seconds: 1700000000},
		LastActiveAt: &timestamppb.Timestamp{Seconds: 1800000000},
		Properties:   props,
	}
	if withOrgs {
		u.Orgs = []*authzv1.OrgMembership{
			{OrgId: seedusers.AcmeOrgID, OrgName: "Acme", UrlSafeOrgName: "acme", UserRole: "Admin",
				InheritedUserRolesPlusCurrentRole: []string{"Admin", "Member"}, UserPermissions: []string{"read:org", "write:org"}},
			{OrgId: "zz-org", OrgName: "Zeta", UrlSafeOrgName: "zeta", UserRole: "Member", InheritedUserRolesPlusCurrentRole: []string{"Member"}},
		}
	}
	return u
}

func TestGetUser(t *testing.T) {
	t.Parallel()
	as := newAS(t)
	addAlice(as)
	inst := start(t, "users", env(as, "", nil))

	for _, withOrgs := range []bool{false, true} {
		resp, err := inst.client.GetUser(t.Context(), &authzv1.GetUserRequest{UserId: aliceID, IncludeOrgs: withOrgs})
		if err != nil {
			t.Fatalf("GetUser(include_orgs=%v): %v", withOrgs, err)
		}
		if diff := cmp.Diff(aliceProto(withOrgs), resp.GetUser(), protocmp.Transform()); diff != "" {
			t.Errorf("GetUser(include_orgs=%v) mismatch (-want +got):\n%s", withOrgs, diff)
		}
	}
	if n := as.UserFetches(); n != 1 {
		t.Errorf("user fetches = %d, want 1 (one fetch with orgs serves both, then the cache)", n)
	}

	_, err := inst.client.GetUser(t.Context(), &authzv1.GetUserRequest{UserId: "no-such-user"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("unknown user: %v, want NotFound", err)
	}
}

func TestGetUserRateLimited(t *testing.T) {
	t.Parallel()
	as := newAS(t)
	addAlice(as)
	inst := start(t, "users-429", env(as, "", map[string]string{"USER_CACHE_TTL": "0s"}))

	as.RateLimitUsers(2, "0")
	before := as.UserFetches()
	if _, err := inst.client.GetUser(t.Context(), &authzv1.GetUserRequest{UserId: aliceID}); err != nil {
		t.Fatalf("GetUser after two 429s: %v", err)
	}
	if n := as.UserFetches() - before; n != 3 {
		t.Errorf("attempts = %d, want 3 (two 429s, then success)", n)
	}

	as.RateLimitUsers(1000, "1")
	before = as.UserFetches()
	_, err := inst.client.GetUser(t.Context(), &authzv1.GetUserRequest{UserId: aliceID})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("GetUser while always rate limited: %v, want ResourceExhausted", err)
	}
	if n := as.UserFetches() - before; n != 4 {
		t.Errorf("attempts = %d, want 4 (bounded retries)", n)
	}
}

func TestGetUserErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		env   map[string]string
		fault faults.Mode
		want  codes.Code
	}{
		{name: "no API key", env: map[string]string{"PROPELAUTH_API_KEY": ""}, want: codes.FailedPrecondition},
		{name: "rejected API key", env: map[string]string{"PROPELAUTH_API_KEY": "wrong-key"}, want: codes.Internal},
		{name: "user API 500", fault: faults.Error500, want: codes.Unavailable},
		{name: "user API garbage", fault: faults.Garbage, want: codes.Unavailable},
		{name: "user API down", fault: faults.Down, want: codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			as := newAS(t)
			addAlice(as)
			inst := start(t, "users-"+tt.name, env(as, "", tt.env))
			if tt.fault != "" {
				as.SetFault(tt.fault, 0)
			}
			_, err := inst.client.GetUser(t.Context(), &authzv1.GetUserRequest{UserId: aliceID})
			if status.Code(err) != tt.want {
				t.Fatalf("GetUser = %v, want %v", err, tt.want)
			}
			if tt.want == codes.FailedPrecondition && !strings.Contains(status.Convert(err).Message(), "PROPELAUTH_API_KEY") {
				t.Errorf("message %q does not say what to configure", status.Convert(err).Message())
			}
		})
	}
}

func TestGetUserSharedAndCoalesced(t *testing.T) {
	t.Parallel()
	as := newAS(t)
	addAlice(as)
	as.SetFault(faults.OK, 100*time.Millisecond)
	rd := testenv.StartRedis(t)
	a := start(t, "users-shared-a", env(as, rd.URL(), nil))
	b := start(t, "users-shared-b", env(as, rd.URL(), nil))
	waitSubscribed(t, a, b)
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if _, err := a.client.GetUser(t.Context(), &authzv1.GetUserRequest{UserId: aliceID}); err != nil {
				t.Errorf("GetUser: %v", err)
			}
		})
	}
	wg.Wait()
	resp, err := b.client.GetUser(t.Context(), &authzv1.GetUserRequest{UserId: aliceID, IncludeOrgs: true})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(aliceProto(true), resp.GetUser(), protocmp.Transform()); diff != "" {
		t.Errorf("user from Redis mismatch (-want +got):\n%s", diff)
	}
	if n := as.UserFetches(); n != 1 {
		t.Errorf("user fetches = %d, want 1 (coalesced, then shared through Redis)", n)
	}
}

func TestAuthorizeIncludeUser(t *testing.T) {
	t.Parallel()
	as := newAS(t)
	addAlice(as)
	inst := start(t, "include-user", env(as, "", nil))
	tok := as.MintToken(propelauthfake.TokenOptions{Subject: aliceID, Scopes: []string{"read:user_data"}, Audience: []string{resourceURL}})
	req := authorizeReq(tok, "read:user_data")
	req.IncludeUser, req.IncludeOrgs = true, true
	before := time.Now()
	resp, err := inst.client.Authorize(t.Context(), req)
	if err != nil || !resp.GetAllowed() {
		t.Fatalf("Authorize = %v, %v", resp, err)
	}
	if diff := cmp.Diff(aliceProto(true), resp.GetUser(), protocmp.Transform()); diff != "" || resp.GetUserError() != "" {
		t.Errorf("user (-want +got):\n%s\nuser_error %q", diff, resp.GetUserError())
	}
	// The user is cached for USER_CACHE_TTL (30s), the token for CACHE_TTL
	// (60s): the answer is reusable only as long as both are.
	if until := resp.GetReusableUntil().AsTime(); resp.GetReusableUntil() == nil || until.Before(before.Add(30*time.Second)) || until.After(time.Now().Add(30*time.Second)) {
		t.Errorf("reusable_until = %v, want USER_CACHE_TTL (30s) after the call (%v)", resp.GetReusableUntil(), before)
	}
	plain, err := inst.client.Authorize(t.Context(), authorizeReq(tok, "read:user_data"))
	if until := plain.GetReusableUntil().AsTime(); err != nil || until.Before(before.Add(time.Minute)) || until.After(time.Now().Add(time.Minute)) {
		t.Errorf("without the user: reusable_until = %v, %v; want CACHE_TTL (60s) after the first call (%v)", plain.GetReusableUntil(), err, before)
	}

	ghost := as.MintToken(propelauthfake.TokenOptions{Subject: "ghost", Scopes: []string{"read:user_data"}, Audience: []string{resourceURL}})
	resp, err = inst.client.Authorize(t.Context(), &authzv1.AuthorizeRequest{Token: ghost, Resource: resourceURL, IncludeUser: true})
	if err != nil || !resp.GetAllowed() {
		t.Fatalf("Authorize = %v, %v; a failed user lookup must not change the decision", resp, err)
	}
	if resp.GetUser() != nil || resp.GetUserError() != "user not found" {
		t.Errorf("user %v, user_error %q; want none and \"user not found\"", resp.GetUser(), resp.GetUserError())
	}
	if resp.GetReusableUntil() != nil {
		t.Errorf("reusable_until = %v on an answer whose user lookup failed, want none", resp.GetReusableUntil())
	}

	denied, err := inst.client.Authorize(t.Context(), &authzv1.AuthorizeRequest{Token: tok, Resource: "https://other/mcp", IncludeUser: true})
	if err != nil || denied.GetAllowed() || denied.GetUser() != nil {
		t.Errorf("denied request carries a user: %v, %v", denied, err)
	}
}

func TestHealthAndMetricsEndpoints(t *testing.T) {
	t.Parallel()
	as := newAS(t)
	inst := start(t, "probes", env(as, "", nil))
	mustAllow(t, inst, mint(as))
	for _, svc := range []string{"", authzv1.AuthzService_ServiceDesc.ServiceName} {
		resp, err := inst.health.Check(t.Context(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q = %v, %v", svc, resp, err)
		}
	}
	get := func(path string) (int, string) {
		resp, err := http.Get(inst.httpBase + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := get(p); code != http.StatusOK {
			t.Errorf("GET %s = %d", p, code)
		}
	}
	code, body := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d", code)
	}
	for _, want := range []string{
		`authz_decisions_total{reason="allowed"} 1`,
		`authz_cache_lookups_total{cache="token",result="miss",tier="l1"} 1`,
		`authz_introspections_total{result="active"} 1`,
		`authz_introspection_duration_seconds_count 1`,
		`authz_grpc_requests_total{code="OK",method="/authz.v1.AuthzService/Authorize"} 1`,
		`authz_l1_entries{cache="token"} 1`,
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code, _ := get("/nope"); code != http.StatusNotFound {
		t.Errorf("GET /nope = %d", code)
	}

	// Shutdown: a health watcher sees NOT_SERVING before the server goes away.
	watch, err := inst.health.Watch(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if first, err := watch.Recv(); err != nil || first.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first watch update = %v, %v", first, err)
	}
	go inst.stop()
	if next, err := watch.Recv(); err != nil || next.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch update during shutdown = %v, %v; want NOT_SERVING", next, err)
	}
	inst.stop()
	if _, err := http.Get(inst.httpBase + "/healthz"); err == nil {
		t.Errorf("HTTP still answering after stop")
	}
}

// TestUnknownUserCachedBriefly: a user the user API does not know (404) is
// cached for USER_NEGATIVE_CACHE_TTL, in L1 and in Redis, so 100 lookups cost one
// call; then a user created meanwhile is found. Failures (5xx, 429, 401) are
// never cached as unknown.
func TestUnknownUserCachedBriefly(t *testing.T) {
	t.Parallel()
	getUser := func(inst *instance, id string) codes.Code {
		_, err := inst.client.GetUser(t.Context(), &authzv1.GetUserRequest{UserId: id})
		return status.Code(err)
	}
	t.Run("404", func(t *testing.T) {
		t.Parallel()
		as := newAS(t)
		rd := testenv.StartRedis(t)
		a := start(t, "ghost-a", env(as, rd.URL(), map[string]string{"USER_NEGATIVE_CACHE_TTL": "1s"}))
		b := start(t, "ghost-b", env(as, rd.URL(), map[string]string{"USER_NEGATIVE_CACHE_TTL": "1s"}))
		waitSubscribed(t, a, b)
		for range 100 {
			if c := getUser(a, "ghost"); c != codes.NotFound {
				t.Fatalf("GetUser(ghost) = %v, want NotFound", c)
			}
		}
		if c := getUser(b, "ghost"); c != codes.NotFound {
			t.Fatalf("GetUser(ghost) on the other replica = %v, want NotFound", c)
		}
		if n := as.UserFetches(); n != 1 {
			t.Errorf("101 lookups of an unknown user on two replicas cost %d user API calls, want 1", n)
		}
		// Include_user on Authorize uses the same cache.
		tok := as.MintToken(propelauthfake.TokenOptions{Subject: "ghost", Scopes: []string{"read:user_data"}, Audience: []string{resourceURL}})
		resp, err := a.client.Authorize(t.Context(), &authzv1.AuthorizeRequest{Token: tok, Resource: resourceURL, IncludeUser: true})
		if err != nil || resp.GetUserError() != "user not found" {
			t.Errorf("Authorize(include_user) for the unknown user = %v, %v; want user_error \"user not found\"", resp, err)
		}
		if n := as.UserFetches(); n != 1 {
			t.Errorf("user API calls = %d after include_user, want still 1", n)
		}
		as.AddUser(propelauthfake.User{UserID: "ghost", Email: "ghost@example.com", Enabled: true})
		eventually(t, 5*time.Second, "the new user to be found once the negative entry expired", func() bool {
			return getUser(a, "ghost") == codes.OK && getUser(b, "ghost") == codes.OK
		})
	})
	failures := []struct {
		name  string
		env   map[string]string
		setup func(as *propelauthfake.Server)
		want  codes.Code
	}{
		{"negative caching off", map[string]string{"USER_NEGATIVE_CACHE_TTL": "0s"}, nil, codes.NotFound},
		{"5xx", nil, func(as *propelauthfake.Server) { as.SetFault(faults.Error500, 0) }, codes.Unavailable},
		{"429", nil, func(as *propelauthfake.Server) { as.RateLimitUsers(1000, "0") }, codes.ResourceExhausted},
		{"401", map[string]string{"PROPELAUTH_API_KEY": "wrong-key"}, nil, codes.Internal},
	}
	for _, tt := range failures {
		t.Run(tt.name+" not cached", func(t *testing.T) {
			t.Parallel()
			as := newAS(t)
			inst := start(t, "ghost-"+tt.name, env(as, "", tt.env))
			if tt.setup != nil {
				tt.setup(as)
			}
			var perCall int64
			for i := range 3 {
				before := as.UserFetches()
				if c := getUser(inst, "ghost"); c != tt.want {
					t.Fatalf("GetUser(ghost) = %v, want %v", c, tt.want)
				}
				n := as.UserFetches() - before
				if i == 0 {
					perCall = n
				}
				if n == 0 || n != perCall {
					t.Fatalf("call %d cost %d user API calls, call 1 cost %d: the answer was cached", i+1, n, perCall)
				}
			}
		})
	}
}
