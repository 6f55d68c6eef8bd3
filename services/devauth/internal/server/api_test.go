package server_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestHealthz(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	status, _, b := do(t, "GET", e.URL+"/healthz", nil, "")
	if status != http.StatusOK || string(b) != "ok\n" {
		t.Errorf("GET /healthz = %d %q", status, b)
	}
}

func TestMetadata(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	iss := e.URL + "/oauth/2.1"
	want := map[string]any{
		"issuer":                                         iss,
		"authorization_endpoint":                         iss + "/authorize",
		"token_endpoint":                                 iss + "/token",
		"registration_endpoint":                          iss + "/register",
		"introspection_endpoint":                         iss + "/introspect",
		"revocation_endpoint":                            iss + "/revoke",
		"response_types_supported":                       []any{"code"},
		"response_modes_supported":                       []any{"query"},
		"grant_types_supported":                          []any{"authorization_code", "refresh_token"},
		"code_challenge_methods_supported":               []any{"S256"},
		"token_endpoint_auth_methods_supported":          []any{"none", "client_secret_basic", "client_secret_post"},
		"introspection_endpoint_auth_methods_supported":  []any{"client_secret_basic", "client_secret_post"},
		"revocation_endpoint_auth_methods_supported":     []any{"none", "client_secret_basic", "client_secret_post"},
		"scopes_supported":                               []any{"read:user_data", "read:org_data"},
		"client_id_metadata_document_supported":          true,
		"authorization_response_iss_parameter_supported": true,
	}
	oidc := map[string]any{
		"subject_types_supported":               []any{"public"},
		"id_token_signing_alg_values_supported": []any{"none"},
		"jwks_uri":                              iss + "/jwks",
	}
	for k, v := range want {
		oidc[k] = v
	}
	tests := []struct {
		path string
		want map[string]any
	}{
		{"/.well-known/oauth-authorization-server/oauth/2.1", want},
		{"/.well-known/openid-configuration/oauth/2.1", oidc},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			status, h, b := do(t, "GET", e.URL+tt.path, nil, "")
			if status != http.StatusOK || h.Get("Content-Type") != "application/json" {
				t.Fatalf("GET %s = %d %s", tt.path, status, h.Get("Content-Type"))
			}
			if diff := cmp.Diff(tt.want, decode[map[string]any](t, b)); diff != "" {
				t.Errorf("metadata mismatch (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("jwks", func(t *testing.T) {
		status, _, b := do(t, "GET", iss+"/jwks", nil, "")
		if status != http.StatusOK || strings.TrimSpace(string(b)) != `{"keys":[]}` {
			t.Errorf("GET jwks = %d %s", status, b)
		}
	})
	t.Run("malformed", func(t *testing.T) {
		for _, tc := range []struct {
			method, path string
			want         int
		}{
			{"POST", "/.well-known/oauth-authorization-server/oauth/2.1", http.StatusMethodNotAllowed},
			{"GET", "/.well-known/oauth-authorization-server", http.StatusNotFound},
			{"GET", "/.well-known/oauth-authorization-server/other", http.StatusNotFound},
		} {
			if status, _, _ := do(t, tc.method, e.URL+tc.path, nil, ""); status != tc.want {
				t.Errorf("%s %s = %d, want %d", tc.method, tc.path, status, tc.want)
			}
		}
	})
}

func TestTestAPIMintAndIntrospect(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	before := time.Now().Unix()
	status, _, b := do(t, "POST", e.URL+"/dev/tokens", apiKeyHdr,
		`{"email":"alice@example.com","scopes":["read:user_data","read:org_data"],"resource":"`+resource+`","client_id":"c1","expires_in":120}`)
	if status != http.StatusOK {
		t.Fatalf("mint = %d %s", status, b)
	}
	mint := decode[map[string]any](t, b)
	tok, _ := mint["access_token"].(string)
	if len(tok) != 43 {
		t.Errorf("access_token %q: want 43 base64url characters", tok)
	}
	if diff := cmp.Diff(map[string]any{"token_type": "Bearer", "expires_in": 120.0, "scope": "read:user_data read:org_data"},
		mint, cmpopts.IgnoreMapEntries(func(k string, _ any) bool { return k == "access_token" })); diff != "" {
		t.Errorf("mint response (-want +got):\n%s", diff)
	}
	got := e.introspect(t, tok)
	iat, _ := got["iat"].(float64)
	if int64(iat) < before || int64(iat) > time.Now().Unix() {
		t.Errorf("iat %v not in [%d, now]", iat, before)
	}
	want := map[string]any{
		"active": true, "sub": aliceID, "client_id": "c1", "scope": "read:user_data read:org_data",
		"exp": iat + 120, "iat": iat, "aud": resource, "iss": e.URL + "/oauth/2.1", "token_type": "Bearer",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("introspection (-want +got):\n%s", diff)
	}
	if strings.Contains(e.Logs.String(), tok) {
		t.Error("logs contain the raw token")
	}
}

func TestTestAPITokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tests := []struct {
		name      string
		body      string
		active    bool
		wantSub   string
		wantScope string
		wantAud   any
		wantCID   string
	}{
		{"by user id, defaults", `{"user_id":"` + bobID + `","resource":"` + resource + `"}`, true, bobID, "", resource, "devauth-test-client"},
		{"unknown user id allowed", `{"user_id":"deleted-user","scopes":["read:user_data"],"resource":"` + resource + `"}`, true, "deleted-user", "read:user_data", resource, "devauth-test-client"},
		{"no resource, no aud", `{"email":"alice@example.com"}`, true, aliceID, "", nil, "devauth-test-client"},
		{"expired (0)", `{"email":"alice@example.com","expires_in":0}`, false, "", "", nil, ""},
		{"expired (negative)", `{"email":"alice@example.com","expires_in":-60}`, false, "", "", nil, ""},
		{"email case-insensitive", `{"email":"ALICE@example.com","user_id":"` + aliceID + `"}`, true, aliceID, "", nil, "devauth-test-client"},
		{"arbitrary scopes", `{"user_id":"u","scopes":["admin","x:y"]}`, true, "u", "admin x:y", nil, "devauth-test-client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := e.introspect(t, e.mint(t, tt.body))
			if got["active"] != tt.active {
				t.Fatalf("active = %v, want %v (%v)", got["active"], tt.active, got)
			}
			if !tt.active {
				if diff := cmp.Diff(map[string]any{"active": false}, got); diff != "" {
					t.Errorf("inactive answer (-want +got):\n%s", diff)
				}
				return
			}
			if got["sub"] != tt.wantSub || got["aud"] != tt.wantAud || got["client_id"] != tt.wantCID {
				t.Errorf("got sub=%v aud=%v client_id=%v, want %v %v %v", got["sub"], got["aud"], got["client_id"], tt.wantSub, tt.wantAud, tt.wantCID)
			}
			if s, _ := got["scope"].(string); s != tt.wantScope {
				t.Errorf("scope = %q, want %q", s, tt.wantScope)
			}
		})
	}
}

func TestTestAPIMalformed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	noAuth := hdr("Content-Type", "application/json")
	badAuth := hdr("Authorization", "Bearer wrong", "Content-Type", "application/json")
	basicAuth := hdr("Authorization", "Basic "+basic(apiKey, ""), "Content-Type", "application/json")
	tests := []struct {
		name   string
		method string
		path   string
		h      http.Header
		body   string
		want   int
	}{
		{"tokens no auth", "POST", "/dev/tokens", noAuth, `{"email":"alice@example.com"}`, 401},
		{"tokens bad key", "POST", "/dev/tokens", badAuth, `{"email":"alice@example.com"}`, 401},
		{"tokens basic auth", "POST", "/dev/tokens", basicAuth, `{"email":"alice@example.com"}`, 401},
		{"stats no auth", "GET", "/dev/stats", noAuth, "", 401},
		{"reset no auth", "POST", "/dev/stats/reset", noAuth, "", 401},
		{"faults no auth", "POST", "/dev/faults", noAuth, `{"mode":"ok"}`, 401},
		{"tokens GET", "GET", "/dev/tokens", apiKeyHdr, "", 405},
		{"stats POST", "POST", "/dev/stats", apiKeyHdr, "", 405},
		{"tokens empty body", "POST", "/dev/tokens", apiKeyHdr, "", 400},
		{"tokens not JSON", "POST", "/dev/tokens", apiKeyHdr, "user_id=x", 400},
		{"tokens array", "POST", "/dev/tokens", apiKeyHdr, `[]`, 400},
		{"tokens no user", "POST", "/dev/tokens", apiKeyHdr, `{"scopes":["a"]}`, 400},
		{"tokens unknown email", "POST", "/dev/tokens", apiKeyHdr, `{"email":"eve@example.com"}`, 400},
		{"tokens id/email conflict", "POST", "/dev/tokens", apiKeyHdr, `{"email":"alice@example.com","user_id":"` + bobID + `"}`, 400},
		{"tokens unknown field", "POST", "/dev/tokens", apiKeyHdr, `{"email":"alice@example.com","scope":"a"}`, 400},
		{"tokens bad scope", "POST", "/dev/tokens", apiKeyHdr, `{"email":"alice@example.com","scopes":["a b"]}`, 400},
		{"tokens relative resource", "POST", "/dev/tokens", apiKeyHdr, `{"email":"alice@example.com","resource":"/mcp"}`, 400},
		{"tokens scopes wrong type", "POST", "/dev/tokens", apiKeyHdr, `{"email":"alice@example.com","scopes":"a"}`, 400},
		{"tokens trailing data", "POST", "/dev/tokens", apiKeyHdr, `{"email":"alice@example.com"} {}`, 400},
		{"tokens huge expires", "POST", "/dev/tokens", apiKeyHdr, `{"email":"alice@example.com","expires_in":99999999999}`, 400},
		{"tokens oversized", "POST", "/dev/tokens", apiKeyHdr, `{"email":"` + strings.Repeat("a", 70<<10) + `"}`, 400},
		{"faults unknown mode", "POST", "/dev/faults", apiKeyHdr, `{"mode":"explode"}`, 400},
		{"faults negative latency", "POST", "/dev/faults", apiKeyHdr, `{"mode":"ok","latency_ms":-1}`, 400},
		{"faults huge latency", "POST", "/dev/faults", apiKeyHdr, `{"mode":"ok","latency_ms":600000}`, 400},
		{"faults not JSON", "POST", "/dev/faults", apiKeyHdr, `mode=ok`, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			status, h, b := do(t, tt.method, e.URL+tt.path, tt.h, tt.body)
			if status != tt.want {
				t.Errorf("%s %s = %d %s, want %d", tt.method, tt.path, status, b, tt.want)
			}
			if tt.want == 401 && h.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
}

func TestTestAPIDisabled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withTestAPI(false))
	for _, p := range []struct{ method, path string }{
		{"POST", "/dev/tokens"}, {"GET", "/dev/stats"}, {"POST", "/dev/stats/reset"}, {"POST", "/dev/faults"},
	} {
		if status, _, _ := do(t, p.method, e.URL+p.path, apiKeyHdr, `{}`); status != http.StatusNotFound {
			t.Errorf("%s %s with the test API off = %d, want 404", p.method, p.path, status)
		}
	}
}

func TestStats(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stats := func() map[string]any {
		status, _, b := do(t, "GET", e.URL+"/dev/stats", apiKeyHdr, "")
		if status != http.StatusOK {
			t.Fatalf("GET /dev/stats = %d", status)
		}
		return decode[map[string]any](t, b)
	}
	if diff := cmp.Diff(map[string]any{"introspections": 0.0, "user_fetches": 0.0, "tokens_issued": 0.0}, stats()); diff != "" {
		t.Errorf("initial stats (-want +got):\n%s", diff)
	}
	tok := e.mint(t, `{"email":"alice@example.com"}`)
	e.mint(t, `{"email":"alice@example.com"}`)
	e.introspect(t, tok)
	e.introspect(t, "unknown")
	do(t, "POST", e.URL+"/oauth/2.1/introspect", formHdr, "token=x") // rejected, still counted
	do(t, "GET", e.URL+"/api/backend/v1/user/"+aliceID, apiKeyHdr, "")
	if diff := cmp.Diff(map[string]any{"introspections": 3.0, "user_fetches": 1.0, "tokens_issued": 2.0}, stats()); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
	if status, _, _ := do(t, "POST", e.URL+"/dev/stats/reset", apiKeyHdr, ""); status != http.StatusNoContent {
		t.Errorf("reset = %d, want 204", status)
	}
	if diff := cmp.Diff(map[string]any{"introspections": 0.0, "user_fetches": 0.0, "tokens_issued": 0.0}, stats()); diff != "" {
		t.Errorf("stats after reset (-want +got):\n%s", diff)
	}
}

func setFault(t *testing.T, e *env, body string) {
	t.Helper()
	if status, _, b := do(t, "POST", e.URL+"/dev/faults", apiKeyHdr, body); status != http.StatusNoContent {
		t.Fatalf("POST /dev/faults %s = %d %s", body, status, b)
	}
}

func TestFaults(t *testing.T) {
	t.Parallel()
	tok := func(e *env) string { return e.mint(t, `{"email":"alice@example.com","resource":"`+resource+`"}`) }
	endpoints := []struct {
		name string
		req  func(e *env, ctx context.Context) (*http.Request, error)
	}{
		{"introspect", func(e *env, ctx context.Context) (*http.Request, error) {
			r, err := http.NewRequestWithContext(ctx, "POST", e.URL+"/oauth/2.1/introspect", strings.NewReader(url.Values{"token": {tok(e)}}.Encode()))
			if err == nil {
				r.Header = rvHdr()
			}
			return r, err
		}},
		{"user", func(e *env, ctx context.Context) (*http.Request, error) {
			r, err := http.NewRequestWithContext(ctx, "GET", e.URL+"/api/backend/v1/user/"+aliceID, nil)
			if err == nil {
				r.Header.Set("Authorization", "Bearer "+apiKey)
			}
			return r, err
		}},
	}
	for _, ep := range endpoints {
		t.Run(ep.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			send := func(timeout time.Duration) (int, string, time.Duration, error) {
				start := time.Now()
				ctx, cancel := context.WithTimeout(t.Context(), timeout)
				defer cancel()
				req, err := ep.req(e, ctx)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return 0, "", time.Since(start), err
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b), time.Since(start), nil
			}

			setFault(t, e, `{"mode":"error500"}`)
			if status, _, _, err := send(5 * time.Second); err != nil || status != 500 {
				t.Errorf("error500: status %d err %v, want 500", status, err)
			}

			setFault(t, e, `{"mode":"garbage"}`)
			status, body, _, err := send(5 * time.Second)
			if err != nil || status != 200 || strings.HasPrefix(body, "{") {
				t.Errorf("garbage: status %d body %q err %v, want 200 with non-JSON", status, body, err)
			}

			setFault(t, e, `{"mode":"hang"}`)
			_, _, took, err := send(200 * time.Millisecond)
			if !errors.Is(err, context.DeadlineExceeded) || took < 200*time.Millisecond {
				t.Errorf("hang: err %v after %v, want the client's deadline", err, took)
			}

			setFault(t, e, `{"mode":"down"}`)
			if status, _, _, err := send(5 * time.Second); err == nil {
				t.Errorf("down: got HTTP %d, want a connection error", status)
			}

			setFault(t, e, `{"mode":"ok","latency_ms":150}`)
			status, _, took, err = send(5 * time.Second)
			if err != nil || status != 200 || took < 150*time.Millisecond {
				t.Errorf("latency: status %d after %v err %v, want 200 after >= 150ms", status, took, err)
			}

			setFault(t, e, `{"mode":"error500","latency_ms":100}`)
			status, _, took, err = send(5 * time.Second)
			if err != nil || status != 500 || took < 100*time.Millisecond {
				t.Errorf("latency+error500: status %d after %v err %v", status, took, err)
			}

			setFault(t, e, `{"mode":"ok"}`)
			if status, _, _, err := send(5 * time.Second); err != nil || status != 200 {
				t.Errorf("back to ok: status %d err %v", status, err)
			}
		})
	}
	t.Run("other endpoints unaffected", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		setFault(t, e, `{"mode":"down"}`)
		for _, p := range []string{"/healthz", "/.well-known/oauth-authorization-server/oauth/2.1"} {
			if status, _, _ := do(t, "GET", e.URL+p, nil, ""); status != 200 {
				t.Errorf("GET %s during fault = %d", p, status)
			}
		}
	})
}

func TestIntrospectMalformed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := e.mint(t, `{"email":"alice@example.com","resource":"`+resource+`"}`)
	form := url.Values{"token": {tok}}.Encode()
	postAuth := formHdr
	tests := []struct {
		name       string
		h          http.Header
		body       string
		wantStatus int
		wantActive any
	}{
		{"no credentials", formHdr, form, 401, nil},
		{"wrong secret", hdr("Authorization", "Basic "+basic(rvID, "nope"), "Content-Type", "application/x-www-form-urlencoded"), form, 401, nil},
		{"wrong id", hdr("Authorization", "Basic "+basic("other", rvSecret), "Content-Type", "application/x-www-form-urlencoded"), form, 401, nil},
		{"bearer instead of basic", hdr("Authorization", "Bearer "+tok, "Content-Type", "application/x-www-form-urlencoded"), form, 401, nil},
		{"basic plus form secret", rvHdr(), form + "&client_secret=" + url.QueryEscape(rvSecret), 401, nil},
		{"client_secret_post", postAuth, form + "&" + url.Values{"client_id": {rvID}, "client_secret": {rvSecret}}.Encode(), 200, true},
		{"form-encoded basic", hdr("Authorization", "Basic "+basic(url.QueryEscape(rvID), url.QueryEscape(rvSecret)), "Content-Type", "application/x-www-form-urlencoded"), form, 200, true},
		{"no token", rvHdr(), "token_type_hint=access_token", 400, nil},
		{"unknown token", rvHdr(), "token=nope", 200, false},
		{"token in query only", rvHdr(), "", 400, nil},
		{"bad form encoding", rvHdr(), "token=%zz", 400, nil},
		{"JSON body", hdr("Authorization", "Basic "+basic(rvID, rvSecret), "Content-Type", "application/json"), `{"token":"` + tok + `"}`, 400, nil},
		{"oversized", rvHdr(), "token=" + strings.Repeat("a", 70<<10), 400, nil},
		{"refresh hint, access token", rvHdr(), form + "&token_type_hint=refresh_token", 200, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := e.URL + "/oauth/2.1/introspect"
			if tt.name == "token in query only" {
				u += "?token=" + tok
			}
			status, h, b := do(t, "POST", u, tt.h, tt.body)
			if status != tt.wantStatus {
				t.Fatalf("status %d %s, want %d", status, b, tt.wantStatus)
			}
			if status == 401 && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Basic") {
				t.Errorf("401 WWW-Authenticate = %q", h.Get("WWW-Authenticate"))
			}
			m := decode[map[string]any](t, b)
			if tt.wantActive != nil && m["active"] != tt.wantActive {
				t.Errorf("active = %v, want %v", m["active"], tt.wantActive)
			}
			if tt.wantActive == nil && m["error"] == nil {
				t.Errorf("error body without error: %s", b)
			}
		})
	}
	if status, _, _ := do(t, "GET", e.URL+"/oauth/2.1/introspect", rvHdr(), ""); status != http.StatusMethodNotAllowed {
		t.Errorf("GET introspect = %d, want 405", status)
	}
}

func TestUserAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	aliceBase := map[string]any{
		"user_id": aliceID, "email": seedusers.AliceEmail, "email_confirmed": true, "has_password": true,
		"username": "alice", "first_name": "Alice", "last_name": "Liddell",
		"picture_url": "https://img.propelauth.com/2a27d237-db8c-4f82-84fb-5824dfaedc87.png",
		"locked":      false, "enabled": true, "mfa_enabled": false, "can_create_orgs": true,
		"created_at": 1735689600.0, "last_active_at": 1767225600.0, "update_password_required": false,
		"properties": map[string]any{}, "metadata": map[string]any{},
	}
	aliceOrgs := map[string]any{}
	for k, v := range aliceBase {
		aliceOrgs[k] = v
	}
	aliceOrgs["org_id_to_org_info"] = map[string]any{
		seedusers.AcmeOrgID: map[string]any{
			"org_id": seedusers.AcmeOrgID, "org_name": "Acme", "url_safe_org_name": "acme",
			"user_role": "Admin", "inherited_user_roles_plus_current_role": []any{"Admin", "Member"},
			"user_permissions": []any{"read:org", "write:org"},
		},
	}
	auth := hdr("Authorization", "Bearer "+apiKey)
	tests := []struct {
		name   string
		path   string
		h      http.Header
		status int
		want   map[string]any
	}{
		{"alice without orgs", "/api/backend/v1/user/" + aliceID, auth, 200, aliceBase},
		{"alice include_orgs=false", "/api/backend/v1/user/" + aliceID + "?include_orgs=false", auth, 200, aliceBase},
		{"alice with orgs", "/api/backend/v1/user/" + aliceID + "?include_orgs=true", auth, 200, aliceOrgs},
		{"bob with orgs (none)", "/api/backend/v1/user/" + bobID + "?include_orgs=true", auth, 200, nil},
		{"unknown user", "/api/backend/v1/user/00000000-0000-0000-0000-000000000000", auth, 404, nil},
		{"no key", "/api/backend/v1/user/" + aliceID, nil, 401, nil},
		{"wrong key", "/api/backend/v1/user/" + aliceID, hdr("Authorization", "Bearer nope"), 401, nil},
		{"key as basic", "/api/backend/v1/user/" + aliceID, hdr("Authorization", "Basic "+apiKey), 401, nil},
		{"bad include_orgs", "/api/backend/v1/user/" + aliceID + "?include_orgs=yes", auth, 400, nil},
		{"empty id", "/api/backend/v1/user/", auth, 404, nil},
		{"nested path", "/api/backend/v1/user/" + aliceID + "/x", auth, 404, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			status, _, b := do(t, "GET", e.URL+tt.path, tt.h, "")
			if status != tt.status {
				t.Fatalf("status %d %s, want %d", status, b, tt.status)
			}
			if tt.want != nil {
				if diff := cmp.Diff(tt.want, decode[map[string]any](t, b)); diff != "" {
					t.Errorf("user JSON (-want +got):\n%s", diff)
				}
			}
		})
	}
	t.Run("bob orgs is an empty object", func(t *testing.T) {
		_, _, b := do(t, "GET", e.URL+"/api/backend/v1/user/"+bobID+"?include_orgs=true", auth, "")
		m := decode[map[string]any](t, b)
		if diff := cmp.Diff(map[string]any{}, m["org_id_to_org_info"]); diff != "" {
			t.Errorf("org_id_to_org_info (-want +got):\n%s", diff)
		}
		if m["mfa_enabled"] != false || m["first_name"] != "Bob" {
			t.Errorf("bob = %v", m)
		}
	})
	if status, _, _ := do(t, "POST", e.URL+"/api/backend/v1/user/"+aliceID, auth, ""); status != http.StatusMethodNotAllowed {
		t.Errorf("POST user = %d, want 405", status)
	}
}
