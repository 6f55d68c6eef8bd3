package propelauthfake

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpauthz/mcpauthz/internal/faults"
)

func newServer(t *testing.T) *Server {
	t.Helper()
	s := NewServer()
	t.Cleanup(s.Close)
	return s
}

// call sends one request and returns the status, headers and body.
func call(t *testing.T, method, u string, h http.Header, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func basic(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
}

func decode(t *testing.T, body string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", body, err)
	}
	return m
}

func TestIntrospection(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	before := time.Now().Unix()
	tok := s.MintToken(TokenOptions{Subject: "u1", ClientID: "c1", Scopes: []string{"read:user_data", "read:org_data"}, Audience: []string{"https://r.example/mcp"}})
	multi := s.MintToken(TokenOptions{Subject: "u2", ClientID: "c2", Audience: []string{"https://a", "https://b"}, NoIssuer: true})
	s.SetClaims("claims", map[string]any{"active": true, "scp": []string{"x"}, "exp": 1.5})
	s.SetRawReply("raw", http.StatusTeapot, []byte(`not json`))
	revoked := s.MintToken(TokenOptions{Subject: "u3"})
	s.Revoke(revoked)

	form := func(tok string) string {
		return url.Values{"token": {tok}, "token_type_hint": {"access_token"}}.Encode()
	}
	auth := hdr("Authorization", basic(s.ClientID, s.ClientSecret), "Content-Type", "application/x-www-form-urlencoded")
	post := hdr("Content-Type", "application/x-www-form-urlencoded")
	creds := "&" + url.Values{"client_id": {s.ClientID}, "client_secret": {s.ClientSecret}}.Encode()
	tests := []introspectTest{
		{name: "active, PropelAuth's members", h: auth, body: form(tok), wantStatus: 200, want: map[string]any{
			"active": true, "sub": "u1", "client_id": "c1", "scope": "read:user_data read:org_data",
			"aud": "https://r.example/mcp", "iss": s.Issuer(),
		}},
		{name: "several audiences as a list, no issuer", h: auth, body: form(multi), wantStatus: 200, want: map[string]any{
			"active": true, "sub": "u2", "client_id": "c2", "aud": []any{"https://a", "https://b"},
		}},
		{name: "other members verbatim", h: auth, body: form("claims"), wantStatus: 200, want: map[string]any{"active": true, "scp": []any{"x"}, "exp": 1.5}},
		{name: "raw reply", h: auth, body: form("raw"), wantStatus: http.StatusTeapot, wantBody: "not json"},
		{name: "unknown token", h: auth, body: form("nope"), wantStatus: 200, want: map[string]any{"active": false}},
		{name: "revoked token", h: auth, body: form(revoked), wantStatus: 200, want: map[string]any{"active": false}},
		{name: "client_secret_post", h: post, body: form(tok) + creds, wantStatus: 200},
		{name: "form-encoded Basic", h: hdr("Authorization", basic(url.QueryEscape(s.ClientID), url.QueryEscape(s.ClientSecret)), "Content-Type", "application/x-www-form-urlencoded"), body: form(tok), wantStatus: 200},
		{name: "no credentials", h: post, body: form(tok), wantStatus: 401, want: map[string]any{"error": "invalid_client", "error_description": "introspection needs the request-validation client credentials"}},
		{name: "wrong secret", h: hdr("Authorization", basic(s.ClientID, "nope"), "Content-Type", "application/x-www-form-urlencoded"), body: form(tok), wantStatus: 401},
		{name: "Basic and form secret at once", h: auth, body: form(tok) + "&client_secret=" + url.QueryEscape(s.ClientSecret), wantStatus: 401},
		{name: "the API key is no client secret", h: hdr("Authorization", "Bearer "+s.APIKey, "Content-Type", "application/x-www-form-urlencoded"), body: form(tok), wantStatus: 401},
		{name: "no token", h: auth, body: "token_type_hint=access_token", wantStatus: 400, want: map[string]any{"error": "invalid_request", "error_description": "token is required"}},
		{name: "JSON body", h: hdr("Authorization", basic(s.ClientID, s.ClientSecret), "Content-Type", "application/json"), body: `{"token":"x"}`, wantStatus: 400},
		{name: "malformed form", h: auth, body: "token=%zz", wantStatus: 400},
		{name: "oversized form", h: auth, body: "token=" + strings.Repeat("a", 70<<10), wantStatus: 400},
	}
	t.Run("answers", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				tt.check(t, s, before)
			})
		}
	})
	if n := s.IntrospectionsOf(tok); n != 3 {
		t.Errorf("IntrospectionsOf(token) = %d, want 3 (the requests that authenticated)", n)
	}
	if n := s.Introspections(); n != int64(len(tests)) {
		t.Errorf("Introspections() = %d, want %d (every request)", n, len(tests))
	}
}

// introspectTest is one request to the introspection endpoint and its
// expected answer.
type introspectTest struct {
	name       string
	h          http.Header
	body       string
	wantStatus int
	want       map[string]any // nil: only the status is checked
	wantBody   string
}

// check sends the request to s and compares the answer; minted tokens' iat
// must lie between before and now, and their exp an hour later.
func (tt introspectTest) check(t *testing.T, s *Server, before int64) {
	t.Helper()
	status, h, body := call(t, http.MethodPost, s.IntrospectionURL(), tt.h, tt.body)
	if status != tt.wantStatus {
		t.Fatalf("status %d %s, want %d", status, body, tt.wantStatus)
	}
	if status == 401 && h.Get("WWW-Authenticate") != `Basic realm="PropelAuth", charset="UTF-8"` {
		t.Errorf("401 challenge %q", h.Get("WWW-Authenticate"))
	}
	if tt.wantBody != "" && body != tt.wantBody {
		t.Errorf("body %q, want %q", body, tt.wantBody)
	}
	if tt.want == nil {
		return
	}
	if h.Get("Content-Type") != "application/json" || h.Get("Cache-Control") != "no-store" {
		t.Errorf("headers %v, want JSON, no-store", h)
	}
	got := decode(t, body)
	if got["active"] == true && tt.want["exp"] == nil {
		iat, _ := got["iat"].(float64)
		exp, _ := got["exp"].(float64)
		if int64(iat) < before || int64(iat) > time.Now().Unix() || exp-iat != 3600 {
			t.Errorf("iat %v, exp %v: want now and an hour later", got["iat"], got["exp"])
		}
		delete(got, "iat")
		delete(got, "exp")
	}
	if diff := cmp.Diff(tt.want, got); diff != "" {
		t.Errorf("answer (-want +got):\n%s", diff)
	}
}

func TestLastIntrospection(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	h := hdr("Authorization", basic(s.ClientID, s.ClientSecret), "Content-Type", "application/x-www-form-urlencoded")
	call(t, http.MethodPost, s.IntrospectionURL(), h, "token=t1&token_type_hint=access_token")
	form, auth := s.LastIntrospection()
	if diff := cmp.Diff(url.Values{"token": {"t1"}, "token_type_hint": {"access_token"}}, form); diff != "" || auth != basic(s.ClientID, s.ClientSecret) {
		t.Errorf("LastIntrospection = %v (-want +got):\n%s, %q", form, diff, auth)
	}
	if !strings.Contains(strings.Join(s.Secrets(), " "), s.ClientSecret) {
		t.Error("Secrets() lacks the client secret")
	}
}

func TestFetchUser(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	s.AddUser(User{
		UserID: "u1", Email: "u1@example.com", EmailConfirmed: true, FirstName: "U", Enabled: true,
		CreatedAt: 1700000000, Properties: map[string]any{"k": "v"},
		OrgIDToOrgInfo: map[string]Org{"o1": {OrgID: "o1", OrgName: "O", URLSafeOrgName: "o", UserRole: "Admin",
			InheritedUserRolesPlusCurrentRole: []string{"Admin", "Member"}, UserPermissions: []string{"p"}}},
	})
	s.AddUser(User{UserID: "u2", Email: "u2@example.com"})
	s.SetUserReply("odd|id", http.StatusBadRequest, []byte(`{"user_id":"invalid"}`))
	base := map[string]any{
		"user_id": "u1", "email": "u1@example.com", "email_confirmed": true, "has_password": false,
		"first_name": "U", "locked": false, "enabled": true, "mfa_enabled": false, "can_create_orgs": false,
		"created_at": 1700000000.0, "last_active_at": 0.0, "update_password_required": false,
		"properties": map[string]any{"k": "v"}, "metadata": nil,
	}
	withOrgs := map[string]any{"org_id_to_org_info": map[string]any{"o1": map[string]any{
		"org_id": "o1", "org_name": "O", "url_safe_org_name": "o", "user_role": "Admin",
		"inherited_user_roles_plus_current_role": []any{"Admin", "Member"}, "user_permissions": []any{"p"},
	}}}
	for k, v := range base {
		withOrgs[k] = v
	}
	key := hdr("Authorization", "Bearer "+s.APIKey)
	tests := []struct {
		name, path string
		h          http.Header
		wantStatus int
		want       map[string]any
	}{
		{"without orgs", "u1", key, 200, base},
		{"include_orgs=false", "u1?include_orgs=false", key, 200, base},
		{"include_orgs=true", "u1?include_orgs=true", key, 200, withOrgs},
		{"no orgs, asked for: an empty object", "u2?include_orgs=true", key, 200, nil},
		{"unknown user", "nobody", key, 404, map[string]any{"error": "not_found", "error_description": "user not found"}},
		{"raw reply", "odd|id", key, 400, map[string]any{"user_id": "invalid"}},
		{"bad include_orgs", "u1?include_orgs=yes", key, 400, nil},
		{"no key", "u1", nil, 401, map[string]any{"error": "unauthorized", "error_description": "invalid or missing API key"}},
		{"wrong key", "u1", hdr("Authorization", "Bearer nope"), 401, nil},
		{"key as Basic", "u1", hdr("Authorization", "Basic "+s.APIKey), 401, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			status, _, body := call(t, http.MethodGet, s.AuthURL()+PathUser+tt.path, tt.h, "")
			if status != tt.wantStatus {
				t.Fatalf("status %d %s, want %d", status, body, tt.wantStatus)
			}
			if tt.want != nil {
				if diff := cmp.Diff(tt.want, decode(t, body)); diff != "" {
					t.Errorf("answer (-want +got):\n%s", diff)
				}
			}
			if tt.name == "no orgs, asked for: an empty object" {
				if diff := cmp.Diff(map[string]any{}, decode(t, body)["org_id_to_org_info"]); diff != "" {
					t.Errorf("org_id_to_org_info (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestRateLimitUsers(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	s.AddUser(User{UserID: "u1", Email: "u1@example.com"})
	key := hdr("Authorization", "Bearer "+s.APIKey)
	s.RateLimitUsers(2, "7")
	if status, _, _ := call(t, http.MethodGet, s.AuthURL()+PathUser+"u1", nil, ""); status != 401 {
		t.Errorf("without the key while rate limited = %d, want 401 (the key is checked first)", status)
	}
	for i := range 2 {
		status, h, body := call(t, http.MethodGet, s.AuthURL()+PathUser+"u1", key, "")
		if status != http.StatusTooManyRequests || h.Get("Retry-After") != "7" {
			t.Errorf("request %d = %d (Retry-After %q) %s, want 429 with Retry-After 7", i, status, h.Get("Retry-After"), body)
		}
	}
	if status, _, _ := call(t, http.MethodGet, s.AuthURL()+PathUser+"u1", key, ""); status != 200 {
		t.Errorf("third request = %d, want 200", status)
	}
	if n := s.UserFetches(); n != 4 {
		t.Errorf("UserFetches() = %d, want 4", n)
	}
}

// TestFaults: faults apply to both endpoints, and faulted requests are still
// counted.
func TestFaults(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	s.AddUser(User{UserID: "u1", Email: "u1@example.com"})
	tok := s.MintToken(TokenOptions{Subject: "u1"})
	introspect := func() (int, string, error) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.IntrospectionURL(), strings.NewReader("token="+tok))
		req.Header = hdr("Authorization", basic(s.ClientID, s.ClientSecret), "Content-Type", "application/x-www-form-urlencoded")
		return send(req)
	}
	user := func() (int, string, error) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.AuthURL()+PathUser+"u1", nil)
		req.Header = hdr("Authorization", "Bearer "+s.APIKey)
		return send(req)
	}
	for _, ep := range []func() (int, string, error){introspect, user} {
		s.SetFault(faults.Error500, 0)
		if status, _, err := ep(); err != nil || status != 500 {
			t.Errorf("error500: %d, %v", status, err)
		}
		s.SetFault(faults.Garbage, 0)
		if status, body, err := ep(); err != nil || status != 200 || json.Valid([]byte(body)) {
			t.Errorf("garbage: %d %q, %v; want 200 and not JSON", status, body, err)
		}
		s.SetFault(faults.Down, 0)
		if status, _, err := ep(); err == nil {
			t.Errorf("down: HTTP %d, want a broken connection", status)
		}
		s.SetFault(faults.OK, 0)
		if status, _, err := ep(); err != nil || status != 200 {
			t.Errorf("ok again: %d, %v", status, err)
		}
	}
	if i, u := s.Introspections(), s.UserFetches(); i != 4 || u != 4 {
		t.Errorf("counted %d introspections and %d user fetches, want 4 and 4", i, u)
	}
}

// oneShot sends every request on a connection of its own: net/http resends
// an idempotent request whose reused connection broke, which would count a
// "down" request twice.
var oneShot = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

func send(req *http.Request) (int, string, error) {
	resp, err := oneShot.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func TestNewBackendNeedsData(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Error("NewBackend without Tokens and Users did not panic")
		}
	}()
	NewBackend(Options{})
}
