package tools

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"

	"github.com/google/go-cmp/cmp"
	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/caller"
)

var (
	expires = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	created = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	alice   = &authzv1.User{
		UserId: "u-alice", Email: seedusers.AliceEmail, EmailConfirmed: true, FirstName: "Alice", LastName: "Liddell",
		Username: "alice", PictureUrl: "https://img.example.com/a.png", CreatedAt: timestamppb.New(created),
		Orgs: []*authzv1.OrgMembership{{
			OrgId: "org-1", OrgName: "Acme", UrlSafeOrgName: "acme", UserRole: "Admin",
			InheritedUserRolesPlusCurrentRole: []string{"Admin", "Member"}, UserPermissions: []string{"read:org"},
		}},
	}
)

func principal(scopes ...string) *authzv1.Principal {
	claims, _ := structpb.NewStruct(map[string]any{"active": true, "sub": "u-alice", "scope": "x"})
	return &authzv1.Principal{
		Subject: "u-alice", ClientId: "client-1", Scopes: scopes, ExpiresAt: timestamppb.New(expires),
		Audience: []string{"https://mcp.example.com/mcp"}, Issuer: "https://auth.example.com/oauth/2.1", Claims: claims,
	}
}

// fakeUsers stands in for authz's GetUser in these unit tests; the gateway's
// integration tests use the real authz.
type fakeUsers struct {
	user *authzv1.User
	err  error

	mu   sync.Mutex
	orgs []bool // include_orgs of each call
}

func (f *fakeUsers) GetUser(ctx context.Context, id string, orgs bool) (*authzv1.User, error) {
	f.mu.Lock()
	f.orgs = append(f.orgs, orgs)
	f.mu.Unlock()
	return f.user, f.err
}

func (f *fakeUsers) orgsArgs() []bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.orgs)
}

// serve runs the built-in tools behind the go-sdk's streamable handler; the
// bearer token names an entry of callers, which the verifier puts in TokenInfo
// the way the gateway does.
func serve(t *testing.T, callers map[string]*caller.Caller, users Users, opts InstallOptions) string {
	t.Helper()
	return serveSet(t, BuiltIn(), callers, users, opts)
}

// serveSet is serve for the tools of set.
func serveSet(t *testing.T, set *Set, callers map[string]*caller.Caller, users Users, opts InstallOptions) string {
	t.Helper()
	s := mcp.NewServer(&mcp.Implementation{Name: "test", Version: "0"}, nil)
	set.Install(s, &Env{Users: users}, opts)
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	verify := func(ctx context.Context, token string, r *http.Request) (*auth.TokenInfo, error) {
		if token == "no-caller" {
			return &auth.TokenInfo{Expiration: expires}, nil
		}
		c, ok := callers[token]
		if !ok {
			return nil, auth.ErrInvalidToken
		}
		return c.TokenInfo(), nil
	}
	srv := httptest.NewServer(auth.RequireBearerToken(verify, nil)(h))
	t.Cleanup(srv.Close)
	return srv.URL
}

type bearer string

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+string(b))
	return http.DefaultTransport.RoundTrip(r)
}

func connect(t *testing.T, url, token string) *mcp.ClientSession {
	t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "0"}, nil)
	cs, err := c.Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: &http.Client{Transport: bearer(token)}, DisableStandaloneSSE: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func TestBuiltIn(t *testing.T) {
	t.Parallel()
	set := BuiltIn()
	var names []string
	for _, tool := range set.All() {
		names = append(names, tool.Name)
		if got, ok := set.Lookup(tool.Name); !ok || got.Name != tool.Name {
			t.Errorf("Lookup(%q) = %v, %v", tool.Name, got.Name, ok)
		}
	}
	if diff := cmp.Diff([]string{"list_my_orgs", "who_am_i"}, names); diff != "" {
		t.Errorf("All() (-want +got):\n%s", diff)
	}
	if _, ok := set.Lookup("nope"); ok {
		t.Error(`Lookup("nope") found a tool`)
	}
	if diff := cmp.Diff([]string{"read:org_data", "read:user_data"}, set.Scopes()); diff != "" {
		t.Errorf("Scopes() (-want +got):\n%s", diff)
	}
	for _, tool := range set.All() {
		if !tool.NeedsUser || len(tool.Scopes) == 0 {
			t.Errorf("%s: NeedsUser=%v Scopes=%v", tool.Name, tool.NeedsUser, tool.Scopes)
		}
	}
	// Two gateways may install the same set.
	serve(t, nil, &fakeUsers{}, InstallOptions{})
	serve(t, nil, &fakeUsers{}, InstallOptions{})
}

func TestToolsListFiltering(t *testing.T) {
	t.Parallel()
	hierarchyChecks := 0
	callers := map[string]*caller.Caller{
		"user":  caller.New(principal("read:user_data"), []string{"read:user_data"}, nil),
		"both":  caller.New(principal("read:user_data", "read:org_data"), nil, nil),
		"admin": caller.New(principal("admin"), nil, func(ctx context.Context, scopes []string) (bool, error) { hierarchyChecks++; return true, nil }),
		"down":  caller.New(principal("read:user_data"), nil, func(ctx context.Context, scopes []string) (bool, error) { return false, errors.New("authz down") }),
	}
	filtered := serve(t, callers, &fakeUsers{}, InstallOptions{})
	all := serve(t, callers, &fakeUsers{}, InstallOptions{ListAll: true})
	// A filtered list depends on the caller: private. Unfiltered it is the
	// same for everyone: public.
	tests := []struct {
		url, token string
		want       []string
		wantScope  string
	}{
		{filtered, "user", []string{"who_am_i"}, CacheScopePrivate},
		{filtered, "both", []string{"list_my_orgs", "who_am_i"}, CacheScopePrivate},
		{filtered, "admin", []string{"list_my_orgs", "who_am_i"}, CacheScopePrivate},
		{filtered, "down", []string{"who_am_i"}, CacheScopePrivate},
		{filtered, "no-caller", nil, CacheScopePrivate},
		{all, "user", []string{"list_my_orgs", "who_am_i"}, CacheScopePublic},
	}
	for _, tt := range tests {
		res, err := connect(t, tt.url, tt.token).ListTools(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, tool := range res.Tools {
			got = append(got, tool.Name)
		}
		slices.Sort(got)
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("tools/list for %q (ListAll=%v) (-want +got):\n%s", tt.token, tt.url == all, diff)
		}
		if res.CacheScope != tt.wantScope {
			t.Errorf("tools/list for %q (ListAll=%v): cacheScope %q, want %q", tt.token, tt.url == all, res.CacheScope, tt.wantScope)
		}
	}
	if hierarchyChecks == 0 {
		t.Error("a token whose scopes only imply the tool's was never checked with authz")
	}
}

func callStructured(t *testing.T, cs *mcp.ClientSession, name string, into any) *mcp.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: name})
	if err != nil {
		t.Fatalf("CallTool(%s): %v", name, err)
	}
	if into != nil && !res.IsError {
		b, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(b, into); err != nil {
			t.Fatal(err)
		}
	}
	return res
}

// TestWhoAmI: who_am_i reports the token and the user, and the user's
// organizations only to a caller holding read:org_data (as list_my_orgs
// requires for the same data); otherwise orgs is empty and orgs_withheld says
// why.
func TestWhoAmI(t *testing.T) {
	t.Parallel()
	mk := func(scopes ...string) *caller.Caller {
		return caller.New(principal(scopes...), []string{"read:user_data"}, nil)
	}
	prefetched := mk("read:user_data", "read:org_data")
	prefetched.User, prefetched.UserRequested = alice, true
	// As the gateway asks authz for them: JSON. The other callers carry the Struct
	// an older authz sends; the output must be the same.
	prefetched.Principal.Claims, prefetched.Principal.ClaimsJson = nil, []byte(`{"active":true,"scope":"x","sub":"u-alice"}`)
	// authz returned orgs (a gateway that asked for them), but the token may
	// not see them: the tool set leaves them out all the same.
	noOrgScope := mk("read:user_data")
	noOrgScope.User, noOrgScope.UserRequested = alice, true
	// The gateway found the token may not see them and said why.
	withheld := mk("read:user_data", "admin")
	withheld.User, withheld.UserRequested, withheld.OrgsWithheld = alice, true, "organizations could not be checked right now"
	// The scope comes through the hierarchy: authz is asked.
	implied := caller.New(principal("admin"), []string{"read:user_data"}, func(ctx context.Context, scopes []string) (bool, error) {
		return slices.Equal(scopes, []string{"read:org_data"}), nil
	})
	implied.User, implied.UserRequested = alice, true
	checkFails := caller.New(principal("admin"), []string{"read:user_data"}, func(ctx context.Context, scopes []string) (bool, error) {
		return false, errors.New("authz down")
	})
	checkFails.User, checkFails.UserRequested = alice, true
	failed := mk("read:user_data", "read:org_data")
	failed.UserRequested, failed.UserError = true, "authorization server unavailable"
	notFetched := mk("read:user_data", "read:org_data")
	notFetchedNoOrgs := mk("read:user_data")
	users := &fakeUsers{user: alice}
	url := serve(t, map[string]*caller.Caller{
		"prefetched": prefetched, "no-org-scope": noOrgScope, "withheld": withheld, "implied": implied, "check-fails": checkFails,
		"failed": failed, "not-fetched": notFetched, "not-fetched-no-orgs": notFetchedNoOrgs,
	}, users, InstallOptions{})

	wantOrgs := []Org{{OrgID: "org-1", OrgName: "Acme", URLSafeOrgName: "acme", Role: "Admin", InheritedRoles: []string{"Admin", "Member"}, Permissions: []string{"read:org"}}}
	user := func(orgs []Org) *User {
		return &User{
			UserID: "u-alice", Email: seedusers.AliceEmail, EmailConfirmed: true, FirstName: "Alice", LastName: "Liddell",
			Username: "alice", PictureURL: "https://img.example.com/a.png", CreatedAt: "2024-05-06T07:08:09Z", Orgs: orgs,
		}
	}
	who := func(scopes []string, u *User, userErr, orgsWithheld string) WhoAmI {
		return WhoAmI{
			Subject: "u-alice", ClientID: "client-1", Scopes: scopes, ExpiresAt: "2030-01-02T03:04:05Z",
			Audience: []string{"https://mcp.example.com/mcp"}, Issuer: "https://auth.example.com/oauth/2.1",
			Claims: JSONObject(`{"active":true,"scope":"x","sub":"u-alice"}`), User: u, UserError: userErr, OrgsWithheld: orgsWithheld,
		}
	}
	both := []string{"read:user_data", "read:org_data"}
	lacks := OrgsWithheld([]string{"read:org_data"})
	tests := []struct {
		token string
		want  WhoAmI
	}{
		{"prefetched", who(both, user(wantOrgs), "", "")},
		{"no-org-scope", who([]string{"read:user_data"}, user([]Org{}), "", lacks)},
		{"withheld", who([]string{"read:user_data", "admin"}, user([]Org{}), "", "organizations could not be checked right now")},
		{"implied", who([]string{"admin"}, user(wantOrgs), "", "")},
		{"check-fails", who([]string{"admin"}, user([]Org{}), "", "organizations could not be checked right now (the authorization service did not answer); retry later")},
		{"failed", who(both, nil, "looking up the user failed: authorization server unavailable", "")},
		{"not-fetched", who(both, user(wantOrgs), "", "")},
		{"not-fetched-no-orgs", who([]string{"read:user_data"}, user([]Org{}), "", lacks)},
	}
	for _, tt := range tests {
		var got WhoAmI
		res := callStructured(t, connect(t, url, tt.token), "who_am_i", &got)
		if res.IsError {
			t.Fatalf("%s: who_am_i failed: %+v", tt.token, res.Content)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s: who_am_i (-want +got):\n%s", tt.token, diff)
		}
	}
	// GetUser only when the user was not prefetched, and with the orgs only
	// for the caller that may see them.
	if diff := cmp.Diff([]bool{true, false}, users.orgsArgs()); diff != "" {
		t.Errorf("GetUser include_orgs arguments (-want +got):\n%s", diff)
	}
}

func TestListMyOrgs(t *testing.T) {
	t.Parallel()
	ok := caller.New(principal("read:user_data", "read:org_data"), nil, nil)
	ok.User, ok.UserRequested = alice, true
	failed := caller.New(principal("read:user_data", "read:org_data"), nil, nil)
	failed.UserRequested, failed.UserError = true, "user not found"
	lacking := caller.New(principal("read:user_data"), []string{"read:user_data"}, nil)
	unknown := caller.New(principal("read:user_data", "read:org_data"), nil, nil)
	url := serve(t, map[string]*caller.Caller{"ok": ok, "failed": failed, "lacking": lacking, "unknown": unknown},
		&fakeUsers{err: status.Error(codes.NotFound, "no such user")}, InstallOptions{})

	var got MyOrgs
	if res := callStructured(t, connect(t, url, "ok"), "list_my_orgs", &got); res.IsError {
		t.Fatalf("list_my_orgs failed: %+v", res.Content)
	}
	want := MyOrgs{Orgs: []Org{{OrgID: "org-1", OrgName: "Acme", URLSafeOrgName: "acme", Role: "Admin", InheritedRoles: []string{"Admin", "Member"}, Permissions: []string{"read:org"}}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("list_my_orgs (-want +got):\n%s", diff)
	}
	for _, token := range []string{"failed", "unknown"} {
		if res := callStructured(t, connect(t, url, token), "list_my_orgs", nil); !res.IsError {
			t.Errorf("%s: list_my_orgs succeeded without a user", token)
		}
	}

	// The tool set refuses a caller without the tool's scope, and a request that
	// never passed the gateway, with a JSON-RPC error.
	for _, token := range []string{"lacking", "no-caller"} {
		_, err := connect(t, url, token).CallTool(t.Context(), &mcp.CallToolParams{Name: "list_my_orgs"})
		var werr *jsonrpc.Error
		if !errors.As(err, &werr) || werr.Code != CodeForbidden {
			t.Errorf("%s: CallTool error = %v, want JSON-RPC code %d", token, err, CodeForbidden)
		}
	}
}

func TestOutputSchemas(t *testing.T) {
	t.Parallel()
	url := serve(t, map[string]*caller.Caller{"both": caller.New(principal("read:user_data", "read:org_data"), nil, nil)}, &fakeUsers{}, InstallOptions{})
	res, err := connect(t, url, "both").ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range res.Tools {
		b, _ := json.Marshal(tool.OutputSchema)
		var schema struct {
			Type       string                     `json:"type"`
			Properties map[string]json.RawMessage `json:"properties"`
		}
		if err := json.Unmarshal(b, &schema); err != nil || schema.Type != "object" {
			t.Errorf("%s: output schema %s", tool.Name, b)
		}
		want := map[string]string{"who_am_i": "subject", "list_my_orgs": "orgs"}[tool.Name]
		if _, ok := schema.Properties[want]; !ok {
			t.Errorf("%s: output schema lacks %q: %s", tool.Name, want, b)
		}
		if tool.Name == "who_am_i" {
			// claims is a JSONObject (raw bytes in Go): an object, not a string.
			var claims struct {
				Type        string `json:"type"`
				Description string `json:"description"`
			}
			if err := json.Unmarshal(schema.Properties["claims"], &claims); err != nil || claims.Type != "object" || claims.Description == "" {
				t.Errorf("who_am_i: claims schema %s, want an object with a description", schema.Properties["claims"])
			}
		}
	}
}

// TestInputSchemasAsInferred: handing the SDK the input schema already encoded
// (see schemas) changes nothing a client sees: tools/list shows the schema the
// SDK would have inferred, and arguments are still validated against it.
func TestInputSchemasAsInferred(t *testing.T) {
	t.Parallel()
	url := serve(t, map[string]*caller.Caller{"both": caller.New(principal("read:user_data", "read:org_data"), nil, nil)}, &fakeUsers{user: alice}, InstallOptions{})
	cs := connect(t, url, "both")
	res, err := cs.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	inferred, err := jsonschema.For[WhoAmIInput](nil)
	if err != nil {
		t.Fatal(err)
	}
	var want any
	b, _ := json.Marshal(inferred)
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	for _, tool := range res.Tools {
		if diff := cmp.Diff(want, tool.InputSchema); diff != "" {
			t.Errorf("%s: input schema (-inferred +listed):\n%s", tool.Name, diff)
		}
	}
	r, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "who_am_i", Arguments: map[string]any{"unexpected": 1}})
	if err == nil && !r.IsError {
		t.Errorf("who_am_i with an unexpected argument succeeded; want it refused by the input schema")
	}
}
