package server_test

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpauthz/mcpauthz/services/devauth/internal/server"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/store"
)

func TestRegister(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tests := []struct {
		name      string
		h         http.Header
		body      string
		status    int
		wantError string
		check     func(t *testing.T, m map[string]any)
	}{
		{"public defaults", jsonHdr, `{"redirect_uris":["http://localhost:3000/cb"]}`, 201, "", func(t *testing.T, m map[string]any) {
			for k, want := range map[string]any{
				"token_endpoint_auth_method": "none", "grant_types": []any{"authorization_code", "refresh_token"},
				"response_types": []any{"code"}, "redirect_uris": []any{"http://localhost:3000/cb"},
				"scope": "read:user_data read:org_data",
			} {
				if diff := cmp.Diff(want, m[k]); diff != "" {
					t.Errorf("%s (-want +got):\n%s", k, diff)
				}
			}
			if m["client_id"] == "" || m["client_id_issued_at"] == nil || m["client_secret"] != nil {
				t.Errorf("registration %v", m)
			}
		}},
		{"cursor private-use scheme", jsonHdr, `{"redirect_uris":["cursor://anysphere.cursor-mcp/oauth/callback"],"client_name":"Cursor"}`, 201, "", nil},
		{"claude https callback", jsonHdr, `{"redirect_uris":["https://claude.ai/api/mcp/auth_callback"],"scope":"claudeai","client_name":"Claude"}`, 201, "", func(t *testing.T, m map[string]any) {
			if m["scope"] != "read:user_data read:org_data" {
				t.Errorf("unknown scopes not replaced: %v", m["scope"])
			}
		}},
		{"ipv6 loopback", jsonHdr, `{"redirect_uris":["http://[::1]:8080/cb"]}`, 201, "", nil},
		{"no content type", nil, `{"redirect_uris":["http://127.0.0.1/cb"]}`, 201, "", nil},
		{"unknown fields ignored", jsonHdr, `{"redirect_uris":["http://127.0.0.1/cb"],"contacts":["a@b"],"software_statement":"x","jwks":{}}`, 201, "", nil},
		{"confidential post", jsonHdr, `{"redirect_uris":["https://app.example/cb"],"token_endpoint_auth_method":"client_secret_post"}`, 201, "", func(t *testing.T, m map[string]any) {
			if s, _ := m["client_secret"].(string); len(s) != 43 {
				t.Errorf("client_secret %q", s)
			}
		}},
		{"subset scope", jsonHdr, `{"redirect_uris":["http://127.0.0.1/cb"],"scope":"read:org_data bogus"}`, 201, "", func(t *testing.T, m map[string]any) {
			if m["scope"] != "read:org_data" {
				t.Errorf("scope %v", m["scope"])
			}
		}},
		{"no redirect_uris", jsonHdr, `{"client_name":"x"}`, 400, "invalid_redirect_uri", nil},
		{"empty redirect_uris", jsonHdr, `{"redirect_uris":[]}`, 400, "invalid_redirect_uri", nil},
		{"http remote", jsonHdr, `{"redirect_uris":["http://evil.example/cb"]}`, 400, "invalid_redirect_uri", nil},
		{"relative", jsonHdr, `{"redirect_uris":["/cb"]}`, 400, "invalid_redirect_uri", nil},
		{"fragment", jsonHdr, `{"redirect_uris":["https://app.example/cb#x"]}`, 400, "invalid_redirect_uri", nil},
		{"javascript", jsonHdr, `{"redirect_uris":["javascript:alert(1)"]}`, 400, "invalid_redirect_uri", nil},
		{"data", jsonHdr, `{"redirect_uris":["data:text/html,hi"]}`, 400, "invalid_redirect_uri", nil},
		{"userinfo", jsonHdr, `{"redirect_uris":["https://user:pw@app.example/cb"]}`, 400, "invalid_redirect_uri", nil},
		{"one bad of two", jsonHdr, `{"redirect_uris":["https://ok.example/cb","http://bad.example/cb"]}`, 400, "invalid_redirect_uri", nil},
		{"redirect not string", jsonHdr, `{"redirect_uris":[1]}`, 400, "invalid_client_metadata", nil},
		{"bad auth method", jsonHdr, `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt"}`, 400, "invalid_client_metadata", nil},
		{"implicit grant", jsonHdr, `{"redirect_uris":["https://a.example/cb"],"grant_types":["implicit"]}`, 400, "invalid_client_metadata", nil},
		{"token response type", jsonHdr, `{"redirect_uris":["https://a.example/cb"],"response_types":["token"]}`, 400, "invalid_client_metadata", nil},
		{"refresh only", jsonHdr, `{"redirect_uris":["https://a.example/cb"],"grant_types":["refresh_token"]}`, 400, "invalid_client_metadata", nil},
		{"bad client_uri", jsonHdr, `{"redirect_uris":["https://a.example/cb"],"client_uri":"javascript:x"}`, 400, "invalid_client_metadata", nil},
		{"not JSON", jsonHdr, `redirect_uris=https://a.example/cb`, 400, "invalid_client_metadata", nil},
		{"JSON array", jsonHdr, `[]`, 400, "invalid_client_metadata", nil},
		{"empty body", jsonHdr, ``, 400, "invalid_client_metadata", nil},
		{"form content type", formHdr, `{"redirect_uris":["https://a.example/cb"]}`, 400, "invalid_client_metadata", nil},
		{"oversized", jsonHdr, `{"redirect_uris":["https://a.example/cb"],"client_name":"` + strings.Repeat("x", 40<<10) + `"}`, 400, "invalid_client_metadata", nil},
		// 12 KB of valid metadata: within the old 32 KB bound, over the 8 KB one.
		{"over 8 KB", jsonHdr, `{"redirect_uris":["https://a.example/` + strings.Repeat("x", 1000) + `","https://b.example/` + strings.Repeat("x", 1000) + `"],"client_name":"x","client_uri":"https://a.example/` + strings.Repeat("y", 2000) + `","logo_uri":"https://a.example/` + strings.Repeat("z", 2000) + `","software_id":"` + strings.Repeat("s", 6000) + `"}`, 400, "invalid_client_metadata", func(t *testing.T, m map[string]any) {
			if m["error_description"] != "the body is larger than 8192 bytes" {
				t.Errorf("error_description %q", m["error_description"])
			}
		}},
		{"long name", jsonHdr, `{"redirect_uris":["https://a.example/cb"],"client_name":"` + strings.Repeat("x", 300) + `"}`, 400, "invalid_client_metadata", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			status, _, b := do(t, "POST", e.URL+"/oauth/2.1/register", tt.h, tt.body)
			if status != tt.status {
				t.Fatalf("status %d %s, want %d", status, b, tt.status)
			}
			m := decode[map[string]any](t, b)
			if tt.wantError != "" && m["error"] != tt.wantError {
				t.Errorf("error %v, want %s", m["error"], tt.wantError)
			}
			if tt.check != nil {
				tt.check(t, m)
			}
		})
	}
	if status, _, _ := do(t, "GET", e.URL+"/oauth/2.1/register", nil, ""); status != http.StatusMethodNotAllowed {
		t.Errorf("GET register = %d, want 405", status)
	}
}

func TestAuthorizeMalformed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const redirect = "http://127.0.0.1:4000/cb"
	clientID := e.register(t, `{"redirect_uris":["`+redirect+`","https://app.example/cb?x=1"]}`)["client_id"].(string)
	_, challenge := pkce()
	del := url.Values(nil)
	tests := []struct {
		name  string
		extra url.Values
		raw   string // appended to the query as is
		// page: an HTML error page (400), never a redirect.
		page bool
		// wantErr: the error sent back to the client in the redirect.
		wantErr string
	}{
		{name: "no client_id", extra: url.Values{"client_id": del["x"]}, page: true},
		{name: "unknown client", extra: url.Values{"client_id": {"nope"}}, page: true},
		{name: "repeated client_id", raw: "&client_id=" + clientID, page: true},
		{name: "no redirect_uri", extra: url.Values{"redirect_uri": del["x"]}, page: true},
		{name: "unregistered redirect_uri", extra: url.Values{"redirect_uri": {"http://127.0.0.1:4000/other"}}, page: true},
		{name: "redirect_uri differs by slash", extra: url.Values{"redirect_uri": {redirect + "/"}}, page: true},
		{name: "redirect_uri other host", extra: url.Values{"redirect_uri": {"https://evil.example/cb"}}, page: true},
		{name: "CIMD client unreachable", extra: url.Values{"client_id": {"https://127.0.0.1:1/client.json"}}, page: true},
		{name: "no response_type", extra: url.Values{"response_type": del["x"]}, wantErr: "invalid_request"},
		{name: "response_type token", extra: url.Values{"response_type": {"token"}}, wantErr: "unsupported_response_type"},
		{name: "no code_challenge", extra: url.Values{"code_challenge": del["x"]}, wantErr: "invalid_request"},
		{name: "plain method", extra: url.Values{"code_challenge_method": {"plain"}}, wantErr: "invalid_request"},
		{name: "no method (plain default)", extra: url.Values{"code_challenge_method": del["x"]}, wantErr: "invalid_request"},
		{name: "short challenge", extra: url.Values{"code_challenge": {"abc"}}, wantErr: "invalid_request"},
		{name: "challenge bad chars", extra: url.Values{"code_challenge": {strings.Repeat("+", 43)}}, wantErr: "invalid_request"},
		{name: "unknown scope", extra: url.Values{"scope": {"read:user_data admin"}}, wantErr: "invalid_scope"},
		{name: "no resource", extra: url.Values{"resource": del["x"]}, wantErr: "invalid_request"},
		{name: "relative resource", extra: url.Values{"resource": {"/mcp"}}, wantErr: "invalid_target"},
		{name: "resource with fragment", extra: url.Values{"resource": {"https://a.example/mcp#f"}}, wantErr: "invalid_target"},
		{name: "two resources", raw: "&resource=https%3A%2F%2Fother.example%2Fmcp", wantErr: "invalid_request"},
		{name: "long state", extra: url.Values{"state": {strings.Repeat("s", 3000)}}, wantErr: "invalid_request"},
		{name: "prompt none", extra: url.Values{"prompt": {"none"}}, wantErr: "consent_required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := authorizeURL(e, clientID, redirect, challenge, "st", tt.extra) + tt.raw
			status, h, b := do(t, "GET", u, nil, "")
			if tt.page {
				if status != http.StatusBadRequest || h.Get("Location") != "" || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
					t.Fatalf("got %d Location=%q, want a 400 HTML page", status, h.Get("Location"))
				}
				if !strings.Contains(string(b), "Authorization failed") {
					t.Errorf("error page:\n%s", b)
				}
				return
			}
			if status != http.StatusFound {
				t.Fatalf("status %d, want 302 to the client\n%s", status, b)
			}
			loc := mustURL(t, h.Get("Location"))
			q := loc.Query()
			if !strings.HasPrefix(loc.String(), redirect+"?") || q.Get("error") != tt.wantErr || q.Get("iss") != e.URL+"/oauth/2.1" || q.Get("code") != "" {
				t.Errorf("redirect %s, want error=%s with iss", loc, tt.wantErr)
			}
			if tt.name != "long state" && q.Get("state") != "st" {
				t.Errorf("state %q not echoed", q.Get("state"))
			}
		})
	}
	t.Run("registered query is kept", func(t *testing.T) {
		t.Parallel()
		e2 := newEnv(t, withAutoApprove(aliceEmail))
		id := e2.register(t, `{"redirect_uris":["https://app.example/cb?x=1"]}`)["client_id"].(string)
		_, h, _ := do(t, "GET", authorizeURL(e2, id, "https://app.example/cb?x=1", challenge, "st", nil), nil, "")
		q := mustURL(t, h.Get("Location")).Query()
		if q.Get("x") != "1" || q.Get("code") == "" {
			t.Errorf("redirect query %v", q)
		}
	})
	t.Run("offline_access accepted and dropped", func(t *testing.T) {
		t.Parallel()
		e2 := newEnv(t, withAutoApprove(aliceEmail))
		id := e2.register(t, `{"redirect_uris":["`+redirect+`"]}`)["client_id"].(string)
		v, c := pkce()
		_, h, _ := do(t, "GET", authorizeURL(e2, id, redirect, c, "st", url.Values{"scope": {"offline_access read:org_data"}}), nil, "")
		code := mustURL(t, h.Get("Location")).Query().Get("code")
		at, _ := exchangeOK(t, e2, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}, "client_id": {id}, "code_verifier": {v}})
		if got := e2.introspect(t, at)["scope"]; got != "read:org_data" {
			t.Errorf("scope = %v, want read:org_data", got)
		}
	})
	t.Run("registered scope enforced (RFC 7591)", func(t *testing.T) {
		t.Parallel()
		e2 := newEnv(t, withAutoApprove(aliceEmail))
		id := e2.register(t, `{"redirect_uris":["`+redirect+`"],"scope":"read:user_data"}`)["client_id"].(string)
		for _, tc := range []struct{ scope, wantErr string }{
			{"read:user_data read:org_data", "invalid_scope"},
			{"read:org_data", "invalid_scope"},
			{"read:user_data", ""},
			{"", ""}, // the registered scope
		} {
			v, c := pkce()
			status, h, b := do(t, "GET", authorizeURL(e2, id, redirect, c, "st", url.Values{"scope": {tc.scope}}), nil, "")
			if status != http.StatusFound {
				t.Fatalf("scope %q: status %d, want a redirect to the client\n%s", tc.scope, status, b)
			}
			q := mustURL(t, h.Get("Location")).Query()
			if q.Get("error") != tc.wantErr || q.Get("state") != "st" {
				t.Errorf("scope %q: redirect %v, want error %q", tc.scope, q, tc.wantErr)
			}
			if tc.wantErr != "" {
				if d := q.Get("error_description"); !strings.Contains(d, "read:org_data") {
					t.Errorf("scope %q: error_description %q does not name the scope", tc.scope, d)
				}
				continue
			}
			at, _ := exchangeOK(t, e2, url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")}, "redirect_uri": {redirect}, "client_id": {id}, "code_verifier": {v}})
			if got := e2.introspect(t, at)["scope"]; got != "read:user_data" {
				t.Errorf("scope %q: token scope %v, want read:user_data", tc.scope, got)
			}
		}
	})
	t.Run("loopback port may differ (RFC 8252)", func(t *testing.T) {
		t.Parallel()
		e2 := newEnv(t, withAutoApprove(aliceEmail))
		id := e2.register(t, `{"redirect_uris":["http://127.0.0.1:4000/cb"]}`)["client_id"].(string)
		status, h, _ := do(t, "GET", authorizeURL(e2, id, "http://127.0.0.1:51234/cb", challenge, "st", nil), nil, "")
		if status != http.StatusFound || !strings.HasPrefix(h.Get("Location"), "http://127.0.0.1:51234/cb?") {
			t.Errorf("got %d %s", status, h.Get("Location"))
		}
	})
}

func TestTokenMalformed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withAutoApprove(aliceEmail))
	const redirect = "http://127.0.0.1:4100/cb"
	pub := e.register(t, `{"redirect_uris":["`+redirect+`"]}`)["client_id"].(string)
	other := e.register(t, `{"redirect_uris":["`+redirect+`"]}`)["client_id"].(string)
	conf := e.register(t, `{"redirect_uris":["`+redirect+`"],"token_endpoint_auth_method":"client_secret_basic"}`)
	confID, confSecret := conf["client_id"].(string), conf["client_secret"].(string)
	noRefresh := e.register(t, `{"redirect_uris":["`+redirect+`"],"grant_types":["authorization_code"]}`)["client_id"].(string)

	// codeFor runs an auto-approved authorization and returns a fresh code.
	codeFor := func(t *testing.T, clientID, challenge string) string {
		_, h, _ := do(t, "GET", authorizeURL(e, clientID, redirect, challenge, "s", nil), nil, "")
		c := mustURL(t, h.Get("Location")).Query().Get("code")
		if c == "" {
			t.Fatalf("no code in %s", h.Get("Location"))
		}
		return c
	}
	verifier, challenge := pkce()
	exch := func(code string) url.Values {
		return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}, "client_id": {pub}, "code_verifier": {verifier}}
	}
	set := func(v url.Values, kv ...string) url.Values {
		out := url.Values{}
		for k, vs := range v {
			out[k] = vs
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				out.Del(kv[i])
			} else {
				out.Set(kv[i], kv[i+1])
			}
		}
		return out
	}
	basicHdr := func(id, secret string) http.Header {
		return hdr("Content-Type", "application/x-www-form-urlencoded", "Authorization", "Basic "+basic(id, secret))
	}
	tests := []struct {
		name   string
		h      http.Header
		form   func(t *testing.T) url.Values
		raw    string
		status int
		err    string
	}{
		{"no client", nil, func(t *testing.T) url.Values { return set(exch(codeFor(t, pub, challenge)), "client_id", "") }, "", 401, "invalid_client"},
		{"unknown client", nil, func(t *testing.T) url.Values { return set(exch("x"), "client_id", "nope") }, "", 401, "invalid_client"},
		{"public client sends secret", nil, func(t *testing.T) url.Values { return set(exch("x"), "client_secret", "s") }, "", 401, "invalid_client"},
		{"confidential without secret", nil, func(t *testing.T) url.Values { return set(exch("x"), "client_id", confID) }, "", 401, "invalid_client"},
		{"confidential wrong secret", basicHdr(confID, "wrong"), func(t *testing.T) url.Values { return set(exch("x"), "client_id", "") }, "", 401, "invalid_client"},
		{"basic and post together", basicHdr(confID, confSecret), func(t *testing.T) url.Values {
			return set(exch("x"), "client_id", confID, "client_secret", confSecret)
		}, "", 401, "invalid_client"},
		{"basic id differs from form id", basicHdr(confID, confSecret), func(t *testing.T) url.Values { return exch("x") }, "", 401, "invalid_client"},
		{"JSON content type", jsonHdr, func(t *testing.T) url.Values { return exch("x") }, "", 400, "invalid_request"},
		{"no content type", http.Header{}, func(t *testing.T) url.Values { return exch("x") }, "", 400, "invalid_request"},
		{"bad form encoding", nil, func(t *testing.T) url.Values { return exch("x") }, "&%zz", 400, "invalid_request"},
		{"no grant_type", nil, func(t *testing.T) url.Values { return set(exch("x"), "grant_type", "") }, "", 400, "invalid_request"},
		{"password grant", nil, func(t *testing.T) url.Values { return set(exch("x"), "grant_type", "password") }, "", 400, "unsupported_grant_type"},
		{"client_credentials grant", nil, func(t *testing.T) url.Values { return set(exch("x"), "grant_type", "client_credentials") }, "", 400, "unsupported_grant_type"},
		{"refresh not registered", nil, func(t *testing.T) url.Values {
			return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}, "client_id": {noRefresh}}
		}, "", 400, "unauthorized_client"},
		{"repeated parameter", nil, func(t *testing.T) url.Values { return exch("x") }, "&code=y", 400, "invalid_request"},
		{"no code", nil, func(t *testing.T) url.Values { return set(exch(""), "code", "") }, "", 400, "invalid_request"},
		{"no verifier", nil, func(t *testing.T) url.Values { return set(exch(codeFor(t, pub, challenge)), "code_verifier", "") }, "", 400, "invalid_request"},
		{"no redirect_uri", nil, func(t *testing.T) url.Values { return set(exch(codeFor(t, pub, challenge)), "redirect_uri", "") }, "", 400, "invalid_request"},
		{"unknown code", nil, func(t *testing.T) url.Values { return exch("not-a-code") }, "", 400, "invalid_grant"},
		{"wrong verifier", nil, func(t *testing.T) url.Values {
			v, _ := pkce()
			return set(exch(codeFor(t, pub, challenge)), "code_verifier", v)
		}, "", 400, "invalid_grant"},
		{"verifier equals challenge (plain)", nil, func(t *testing.T) url.Values {
			return set(exch(codeFor(t, pub, challenge)), "code_verifier", challenge)
		}, "", 400, "invalid_grant"},
		{"short verifier", nil, func(t *testing.T) url.Values { return set(exch(codeFor(t, pub, challenge)), "code_verifier", "abc") }, "", 400, "invalid_grant"},
		{"wrong redirect_uri", nil, func(t *testing.T) url.Values {
			return set(exch(codeFor(t, pub, challenge)), "redirect_uri", "http://127.0.0.1:4100/other")
		}, "", 400, "invalid_grant"},
		{"code of another client", nil, func(t *testing.T) url.Values { return set(exch(codeFor(t, pub, challenge)), "client_id", other) }, "", 400, "invalid_grant"},
		{"wrong resource", nil, func(t *testing.T) url.Values {
			return set(exch(codeFor(t, pub, challenge)), "resource", "https://other.example/mcp")
		}, "", 400, "invalid_target"},
		{"unknown refresh token", nil, func(t *testing.T) url.Values {
			return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"nope"}, "client_id": {pub}}
		}, "", 400, "invalid_grant"},
		{"no refresh token", nil, func(t *testing.T) url.Values {
			return url.Values{"grant_type": {"refresh_token"}, "client_id": {pub}}
		}, "", 400, "invalid_request"},
		{"refresh of another client", nil, func(t *testing.T) url.Values {
			_, rt := exchangeOK(t, e, exch(codeFor(t, pub, challenge)))
			return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {other}}
		}, "", 400, "invalid_grant"},
		{"refresh widens scope", nil, func(t *testing.T) url.Values {
			_, rt := exchangeOK(t, e, exch(codeFor(t, pub, challenge)))
			return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {pub}, "scope": {"read:org_data"}}
		}, "", 400, "invalid_scope"},
		{"refresh with wrong resource", nil, func(t *testing.T) url.Values {
			_, rt := exchangeOK(t, e, exch(codeFor(t, pub, challenge)))
			return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {pub}, "resource": {"https://x.example/"}}
		}, "", 400, "invalid_target"},
		{"access token as refresh token", nil, func(t *testing.T) url.Values {
			at, _ := exchangeOK(t, e, exch(codeFor(t, pub, challenge)))
			return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {at}, "client_id": {pub}}
		}, "", 400, "invalid_grant"},
		{"confidential basic ok", basicHdr(confID, confSecret), func(t *testing.T) url.Values {
			return set(exch(codeFor(t, confID, challenge)), "client_id", "")
		}, "", 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := tt.h
			if h == nil {
				h = formHdr
			}
			status, rh, b := do(t, "POST", e.URL+"/oauth/2.1/token", h, tt.form(t).Encode()+tt.raw)
			if status != tt.status {
				t.Fatalf("status %d %s, want %d", status, b, tt.status)
			}
			m := decode[map[string]any](t, b)
			if tt.err != "" && m["error"] != tt.err {
				t.Errorf("error %v (%v), want %s", m["error"], m["error_description"], tt.err)
			}
			if status == 401 && rh.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if rh.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q", rh.Get("Cache-Control"))
			}
		})
	}
	t.Run("failed check keeps the code usable", func(t *testing.T) {
		t.Parallel()
		code := codeFor(t, pub, challenge)
		bad, _ := pkce()
		if status, _ := tokenRequest(t, e, nil, set(exch(code), "code_verifier", bad)); status != 400 {
			t.Fatalf("wrong verifier accepted")
		}
		exchangeOK(t, e, exch(code))
	})
	t.Run("GET", func(t *testing.T) {
		if status, _, _ := do(t, "GET", e.URL+"/oauth/2.1/token?"+exch("x").Encode(), nil, ""); status != http.StatusMethodNotAllowed {
			t.Errorf("GET token = %d, want 405", status)
		}
	})
}

func exchangeOK(t *testing.T, e *env, form url.Values) (access, refresh string) {
	t.Helper()
	status, m := tokenRequest(t, e, nil, form)
	if status != 200 {
		t.Fatalf("exchange = %d %v", status, m)
	}
	return m["access_token"].(string), m["refresh_token"].(string)
}

func TestRevoke(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withAutoApprove(aliceEmail))
	const redirect = "http://127.0.0.1:4200/cb"
	pub := e.register(t, `{"redirect_uris":["`+redirect+`"]}`)["client_id"].(string)
	other := e.register(t, `{"redirect_uris":["`+redirect+`"]}`)["client_id"].(string)
	conf := e.register(t, `{"redirect_uris":["`+redirect+`"],"token_endpoint_auth_method":"client_secret_post"}`)
	grant := func(t *testing.T) (string, string) {
		v, c := pkce()
		_, h, _ := do(t, "GET", authorizeURL(e, pub, redirect, c, "s", nil), nil, "")
		code := mustURL(t, h.Get("Location")).Query().Get("code")
		return exchangeOK(t, e, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}, "client_id": {pub}, "code_verifier": {v}})
	}
	tests := []struct {
		name       string
		h          http.Header
		form       func(at, rt string) url.Values
		status     int
		stillValid bool
	}{
		{"owner revokes access", formHdr, func(at, _ string) url.Values { return url.Values{"token": {at}, "client_id": {pub}} }, 200, false},
		{"owner revokes refresh", formHdr, func(_, rt string) url.Values { return url.Values{"token": {rt}, "client_id": {pub}} }, 200, false},
		{"other client cannot revoke", formHdr, func(at, _ string) url.Values { return url.Values{"token": {at}, "client_id": {other}} }, 200, true},
		{"validation client revokes any", rvHdr(), func(at, _ string) url.Values { return url.Values{"token": {at}} }, 200, false},
		{"anonymous holder revokes", formHdr, func(at, _ string) url.Values { return url.Values{"token": {at}} }, 200, false},
		{"unknown hint ignored", formHdr, func(at, _ string) url.Values { return url.Values{"token": {at}, "token_type_hint": {"id_token"}} }, 200, false},
		{"unknown token", formHdr, func(_, _ string) url.Values { return url.Values{"token": {"nope"}, "client_id": {pub}} }, 200, true},
		{"no token", formHdr, func(_, _ string) url.Values { return url.Values{"client_id": {pub}} }, 400, true},
		{"JSON content type", jsonHdr, func(at, _ string) url.Values { return url.Values{"token": {at}} }, 400, true},
		{"unknown client", formHdr, func(at, _ string) url.Values { return url.Values{"token": {at}, "client_id": {"nope"}} }, 401, true},
		{"confidential wrong secret", formHdr, func(at, _ string) url.Values {
			return url.Values{"token": {at}, "client_id": {conf["client_id"].(string)}, "client_secret": {"bad"}}
		}, 401, true},
		{"secret without client id", formHdr, func(at, _ string) url.Values { return url.Values{"token": {at}, "client_secret": {"x"}} }, 401, true},
		{"bearer auth header", hdr("Content-Type", "application/x-www-form-urlencoded", "Authorization", "Bearer x"), func(at, _ string) url.Values {
			return url.Values{"token": {at}}
		}, 401, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			at, rt := grant(t)
			status, _, b := do(t, "POST", e.URL+"/oauth/2.1/revoke", tt.h, tt.form(at, rt).Encode())
			if status != tt.status {
				t.Fatalf("status %d %s, want %d", status, b, tt.status)
			}
			if got := e.introspect(t, at)["active"] == true; got != tt.stillValid {
				t.Errorf("access token active = %v, want %v", got, tt.stillValid)
			}
		})
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	origin := hdr("Origin", "http://localhost:6274")
	for _, p := range []string{
		"/.well-known/oauth-authorization-server/oauth/2.1", "/.well-known/openid-configuration/oauth/2.1",
		"/oauth/2.1/jwks", "/oauth/2.1/register", "/oauth/2.1/token", "/oauth/2.1/revoke",
	} {
		t.Run(p, func(t *testing.T) {
			status, h, _ := do(t, "OPTIONS", e.URL+p, hdr("Origin", "http://localhost:6274", "Access-Control-Request-Method", "POST"), "")
			if status != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(h.Get("Access-Control-Allow-Headers"), "Content-Type") {
				t.Errorf("preflight = %d %v", status, h)
			}
			method := "POST"
			if strings.Contains(p, "well-known") || strings.HasSuffix(p, "jwks") {
				method = "GET"
			}
			if _, h, _ := do(t, method, e.URL+p, origin, ""); h.Get("Access-Control-Allow-Origin") != "*" {
				t.Errorf("%s without CORS header", method)
			}
		})
	}
	for _, p := range []string{"/oauth/2.1/introspect", "/api/backend/v1/user/" + aliceID} {
		if _, h, _ := do(t, "OPTIONS", e.URL+p, origin, ""); h.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%s answers CORS; it is server-to-server only", p)
		}
	}
}

// TestRegistrationTableFull: when the client table is full, registration is
// refused with RFC 7591's error format and no client in use is evicted; a
// registration unused for its TTL makes room again.
func TestRegistrationTableFull(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	e := newEnv(t, withAutoApprove(aliceEmail), withOptions(func(o *server.Options) {
		o.Now = clock
		o.Limits = store.Limits{Clients: 2, ClientTTL: time.Hour}
	}))
	const redirect = "http://127.0.0.1:4000/cb"
	reg := `{"redirect_uris":["` + redirect + `"]}`
	used := e.register(t, reg)["client_id"].(string)
	e.register(t, reg)
	status, _, b := do(t, "POST", e.URL+"/oauth/2.1/register", jsonHdr, reg)
	m := decode[map[string]any](t, b)
	if status != http.StatusServiceUnavailable || m["error"] != "temporarily_unavailable" || !strings.Contains(m["error_description"].(string), "1h0m0s") {
		t.Fatalf("third registration: %d %s, want 503 temporarily_unavailable naming the TTL", status, b)
	}
	// "used" authorizes within the hour; the other one is left alone.
	advance(50 * time.Minute)
	_, challenge := pkce()
	if status, h, _ := do(t, "GET", authorizeURL(e, used, redirect, challenge, "s", nil), nil, ""); status != http.StatusFound || h.Get("Location") == "" {
		t.Fatalf("authorize as the used client: %d", status)
	}
	advance(10 * time.Minute)
	e.register(t, reg) // room made by the unused client, not by "used"
	if status, _, _ := do(t, "GET", authorizeURL(e, used, redirect, challenge, "s", nil), nil, ""); status != http.StatusFound {
		t.Errorf("the client in use was evicted: authorize = %d", status)
	}
	if status, _, _ := do(t, "POST", e.URL+"/oauth/2.1/register", jsonHdr, reg); status != http.StatusServiceUnavailable {
		t.Errorf("registration with two clients in use = %d, want 503", status)
	}
}
