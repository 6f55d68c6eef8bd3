package server_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"
)

// browser is a cookie-keeping HTTP client that stops at redirects leaving
// devauth, the way a browser hands the redirect to the client application.
type browser struct {
	t    *testing.T
	c    *http.Client
	base string
}

func newBrowser(t *testing.T, e *env) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, base: e.URL}
	b.c = &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if !strings.HasPrefix(req.URL.String(), e.URL) {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	return b
}

type page struct {
	status   int
	header   http.Header
	body     string
	location *url.URL
}

func (b *browser) send(req *http.Request) page {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	p := page{status: resp.StatusCode, header: resp.Header, body: string(body)}
	if loc := resp.Header.Get("Location"); loc != "" {
		p.location, _ = url.Parse(loc)
	}
	return p
}

func (b *browser) get(u string) page {
	req, err := http.NewRequestWithContext(b.t.Context(), "GET", u, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.send(req)
}

var (
	formRe   = regexp.MustCompile(`(?s)<form method="post" action="([^"]+)">(.*?)</form>`)
	hiddenRe = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)
)

// submit fills the page's form with the hidden fields plus extra and posts it.
func (b *browser) submit(p page, extra url.Values) page {
	b.t.Helper()
	m := formRe.FindStringSubmatch(p.body)
	if m == nil {
		b.t.Fatalf("no form on page (status %d):\n%s", p.status, p.body)
	}
	form := url.Values{}
	for _, h := range hiddenRe.FindAllStringSubmatch(m[2], -1) {
		form.Set(h[1], h[2])
	}
	if form.Get("csrf_token") == "" || form.Get("request_id") == "" {
		b.t.Fatalf("form lacks csrf_token or request_id: %v", form)
	}
	for k, vs := range extra {
		form[k] = vs
	}
	req, err := http.NewRequestWithContext(b.t.Context(), "POST", m[1], strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.send(req)
}

// login signs in on a login page and returns the consent page.
func (b *browser) login(p page, email, password string) page {
	b.t.Helper()
	if !strings.Contains(p.body, "Sign in") {
		b.t.Fatalf("expected the login page, got %d:\n%s", p.status, p.body)
	}
	return b.submit(p, url.Values{"email": {email}, "password": {password}})
}

func pkce() (verifier, challenge string) {
	v := oauth2.GenerateVerifier()
	return v, oauth2.S256ChallengeFromVerifier(v)
}

func authorizeURL(e *env, clientID, redirect, challenge, state string, extra url.Values) string {
	q := url.Values{
		"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {redirect},
		"code_challenge": {challenge}, "code_challenge_method": {"S256"}, "state": {state},
		"resource": {resource}, "scope": {"read:user_data"},
	}
	for k, vs := range extra {
		if vs == nil {
			q.Del(k)
		} else {
			q[k] = vs
		}
	}
	return e.URL + "/oauth/2.1/authorize?" + q.Encode()
}

func tokenRequest(t *testing.T, e *env, h http.Header, form url.Values) (int, map[string]any) {
	t.Helper()
	if h == nil {
		h = formHdr
	}
	status, _, b := do(t, "POST", e.URL+"/oauth/2.1/token", h, form.Encode())
	return status, decode[map[string]any](t, b)
}

// TestFullFlow walks the whole life of a grant the way a real MCP client and
// user do: register, sign in and consent in a browser, exchange the code,
// introspect, rotate the refresh token, detect a replay, revoke.
func TestFullFlow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const redirect = "http://127.0.0.1:33418/callback"
	reg := e.register(t, `{"redirect_uris":["`+redirect+`"],"client_name":"Flow <Test> Client","token_endpoint_auth_method":"none"}`)
	clientID := reg["client_id"].(string)
	if _, ok := reg["client_secret"]; ok {
		t.Error("public client got a client_secret")
	}

	b := newBrowser(t, e)
	verifier, challenge := pkce()
	loginPage := b.get(authorizeURL(e, clientID, redirect, challenge, "st-123", url.Values{"scope": {"read:user_data read:org_data"}}))
	if loginPage.status != 200 || !strings.Contains(loginPage.body, "Flow &lt;Test&gt; Client") {
		t.Fatalf("login page %d does not name the client (escaped):\n%s", loginPage.status, loginPage.body)
	}
	if got := loginPage.header.Get("Content-Security-Policy"); !strings.Contains(got, "frame-ancestors 'none'") {
		t.Errorf("CSP = %q", got)
	}
	var cookie *http.Cookie
	for _, c := range b.c.Jar.Cookies(mustURL(t, e.URL+"/oauth/2.1/authorize")) {
		if c.Name == "devauth_session" {
			cookie = c
		}
	}
	if cookie == nil {
		t.Fatal("no session cookie")
	}
	if sc := loginPage.header.Get("Set-Cookie"); !strings.Contains(sc, "HttpOnly") || !strings.Contains(sc, "SameSite=Lax") {
		t.Errorf("session cookie attributes: %q", sc)
	}

	bad := b.login(loginPage, aliceEmail, "wrong-password")
	if !strings.Contains(bad.body, "Invalid email or password") {
		t.Fatalf("wrong password did not show an error:\n%s", bad.body)
	}
	consent := b.login(bad, aliceEmail, seedusers.AlicePassword)
	for _, want := range []string{"Approve", "Deny", "read:user_data", "read:org_data", resource, aliceEmail, redirect} {
		if !strings.Contains(consent.body, want) {
			t.Errorf("consent page lacks %q", want)
		}
	}
	// Signing in replaced the session cookie (no session fixation).
	for _, c := range b.c.Jar.Cookies(mustURL(t, e.URL+"/oauth/2.1/authorize")) {
		if c.Name == "devauth_session" && c.Value == cookie.Value {
			t.Error("session id was not rotated at sign-in")
		}
	}

	done := b.submit(consent, url.Values{"action": {"approve"}})
	if done.status != http.StatusSeeOther || done.location == nil {
		t.Fatalf("approve = %d, want 303 to the client", done.status)
	}
	q := done.location.Query()
	if got := done.location.Scheme + "://" + done.location.Host + done.location.Path; got != redirect {
		t.Errorf("redirected to %q, want %q", got, redirect)
	}
	if q.Get("state") != "st-123" || q.Get("iss") != e.URL+"/oauth/2.1" || q.Get("code") == "" {
		t.Fatalf("redirect query %v: want code, state and iss", q)
	}
	code := q.Get("code")

	// The consent decision is single-use.
	if again := b.submit(consent, url.Values{"action": {"approve"}}); again.status != http.StatusBadRequest {
		t.Errorf("re-submitting consent = %d, want 400", again.status)
	}

	status, tok := tokenRequest(t, e, nil, url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect},
		"client_id": {clientID}, "code_verifier": {verifier}, "resource": {resource},
	})
	if status != 200 {
		t.Fatalf("code exchange = %d %v", status, tok)
	}
	if tok["token_type"] != "Bearer" || tok["expires_in"] != 3600.0 || tok["scope"] != "read:user_data read:org_data" {
		t.Errorf("token response %v", tok)
	}
	access, refresh := tok["access_token"].(string), tok["refresh_token"].(string)

	in := e.introspect(t, access)
	want := map[string]any{"active": true, "sub": aliceID, "client_id": clientID, "scope": "read:user_data read:org_data",
		"aud": resource, "iss": e.URL + "/oauth/2.1", "token_type": "Bearer", "exp": in["exp"], "iat": in["iat"]}
	if diff := cmp.Diff(want, in); diff != "" {
		t.Errorf("introspection (-want +got):\n%s", diff)
	}
	if in["exp"].(float64)-in["iat"].(float64) != 3600 {
		t.Errorf("exp-iat = %v", in["exp"].(float64)-in["iat"].(float64))
	}
	if got := e.introspect(t, refresh); got["active"] != false {
		t.Errorf("refresh token introspected as %v, want inactive", got)
	}

	// The code is single-use: a replay fails and revokes what it issued.
	status, errBody := tokenRequest(t, e, nil, url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect},
		"client_id": {clientID}, "code_verifier": {verifier},
	})
	if status != 400 || errBody["error"] != "invalid_grant" {
		t.Errorf("code replay = %d %v, want invalid_grant", status, errBody)
	}
	if e.introspect(t, access)["active"] != false {
		t.Error("code replay did not revoke the tokens issued from it")
	}

	// Start over (a new grant) for the refresh checks.
	access, refresh = browserGrant(t, e, clientID, redirect)

	status, tok2 := tokenRequest(t, e, nil, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}, "client_id": {clientID}, "scope": {"read:user_data"}})
	if status != 200 {
		t.Fatalf("refresh = %d %v", status, tok2)
	}
	access2, refresh2 := tok2["access_token"].(string), tok2["refresh_token"].(string)
	if refresh2 == refresh || access2 == access {
		t.Fatal("refresh did not rotate")
	}
	if tok2["scope"] != "read:user_data" {
		t.Errorf("down-scoped refresh scope = %v", tok2["scope"])
	}
	if e.introspect(t, access)["active"] != true || e.introspect(t, access2)["active"] != true {
		t.Error("old or new access token inactive after an honest refresh")
	}
	// The old refresh token is refused, and its reuse revokes the family.
	status, errBody = tokenRequest(t, e, nil, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}, "client_id": {clientID}})
	if status != 400 || errBody["error"] != "invalid_grant" {
		t.Errorf("old refresh token = %d %v, want invalid_grant", status, errBody)
	}
	for name, tk := range map[string]string{"first access": access, "second access": access2} {
		if e.introspect(t, tk)["active"] != false {
			t.Errorf("%s token still active after refresh-token reuse", name)
		}
	}
	status, _ = tokenRequest(t, e, nil, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh2}, "client_id": {clientID}})
	if status != 400 {
		t.Errorf("newest refresh token after reuse = %d, want 400 (family revoked)", status)
	}

	// Revocation: a fresh grant, revoke its access token, then its refresh token.
	access, refresh = browserGrant(t, e, clientID, redirect)
	for _, tk := range []string{access, "never-issued"} {
		if status, _, body := do(t, "POST", e.URL+"/oauth/2.1/revoke", formHdr, url.Values{"token": {tk}, "client_id": {clientID}}.Encode()); status != 200 {
			t.Errorf("revoke = %d %s, want 200", status, body)
		}
	}
	if e.introspect(t, access)["active"] != false {
		t.Error("revoked access token still active")
	}
	status, tok3 := tokenRequest(t, e, nil, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}, "client_id": {clientID}})
	if status != 200 {
		t.Fatalf("refresh after access revocation = %d %v", status, tok3)
	}
	do(t, "POST", e.URL+"/oauth/2.1/revoke", formHdr, url.Values{"token": {tok3["refresh_token"].(string)}, "token_type_hint": {"refresh_token"}, "client_id": {clientID}}.Encode())
	if e.introspect(t, tok3["access_token"].(string))["active"] != false {
		t.Error("revoking the refresh token left its access token active")
	}

	logs := e.Logs.String()
	for _, secret := range []string{access, access2, refresh, refresh2, code, verifier, seedusers.AlicePassword} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain a secret (%s...)", secret[:6])
		}
	}
}

// browserGrant runs sign-in, consent and the code exchange, returning tokens.
func browserGrant(t *testing.T, e *env, clientID, redirect string) (access, refresh string) {
	t.Helper()
	b := newBrowser(t, e)
	verifier, challenge := pkce()
	consent := b.login(b.get(authorizeURL(e, clientID, redirect, challenge, "s", nil)), aliceEmail, seedusers.AlicePassword)
	done := b.submit(consent, url.Values{"action": {"approve"}})
	if done.location == nil {
		t.Fatalf("approve did not redirect: %d", done.status)
	}
	status, tok := tokenRequest(t, e, nil, url.Values{
		"grant_type": {"authorization_code"}, "code": {done.location.Query().Get("code")}, "redirect_uri": {redirect},
		"client_id": {clientID}, "code_verifier": {verifier},
	})
	if status != 200 {
		t.Fatalf("code exchange = %d %v", status, tok)
	}
	return tok["access_token"].(string), tok["refresh_token"].(string)
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestConsentDeny(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const redirect = "cursor://anysphere.cursor-mcp/oauth/callback"
	clientID := e.register(t, `{"redirect_uris":["`+redirect+`"],"client_name":"Cursor"}`)["client_id"].(string)
	b := newBrowser(t, e)
	_, challenge := pkce()
	consent := b.login(b.get(authorizeURL(e, clientID, redirect, challenge, "xyz", nil)), seedusers.BobEmail, seedusers.BobPassword)
	done := b.submit(consent, url.Values{"action": {"deny"}})
	if done.location == nil || done.location.Scheme != "cursor" {
		t.Fatalf("deny = %d, want a redirect to cursor://", done.status)
	}
	q := done.location.Query()
	if q.Get("error") != "access_denied" || q.Get("state") != "xyz" || q.Get("iss") != e.URL+"/oauth/2.1" || q.Get("code") != "" {
		t.Errorf("deny redirect query = %v", q)
	}
}

func TestSecondAuthorizationSkipsLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const redirect = "http://localhost:5555/cb"
	clientID := e.register(t, `{"redirect_uris":["`+redirect+`"]}`)["client_id"].(string)
	b := newBrowser(t, e)
	_, challenge := pkce()
	b.submit(b.login(b.get(authorizeURL(e, clientID, redirect, challenge, "1", nil)), aliceEmail, seedusers.AlicePassword), url.Values{"action": {"approve"}})
	p := b.get(authorizeURL(e, clientID, redirect, challenge, "2", nil))
	if !strings.Contains(p.body, "Approve") || strings.Contains(p.body, `name="password"`) {
		t.Errorf("signed-in user was not taken straight to consent:\n%s", p.body)
	}
}

func TestAuthorizeFormMalformed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const redirect = "http://127.0.0.1:9999/cb"
	clientID := e.register(t, `{"redirect_uris":["`+redirect+`"]}`)["client_id"].(string)
	b := newBrowser(t, e)
	_, challenge := pkce()
	loginPage := b.get(authorizeURL(e, clientID, redirect, challenge, "s", nil))
	hidden := map[string]string{}
	for _, h := range hiddenRe.FindAllStringSubmatch(loginPage.body, -1) {
		hidden[h[1]] = h[2]
	}
	post := func(c *http.Client, form url.Values) int {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", e.URL+"/oauth/2.1/authorize", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	base := func() url.Values {
		return url.Values{"csrf_token": {hidden["csrf_token"]}, "request_id": {hidden["request_id"]}}
	}
	with := func(k, v string) url.Values {
		f := base()
		if v == "" {
			f.Del(k)
		} else {
			f.Set(k, v)
		}
		return f
	}
	tests := []struct {
		name   string
		client *http.Client
		form   url.Values
		want   int
	}{
		{"no cookie", http.DefaultClient, with("action", "login"), 400},
		{"missing csrf", b.c, with("csrf_token", ""), 403},
		{"wrong csrf", b.c, func() url.Values { f := with("action", "approve"); f.Set("csrf_token", "x"); return f }(), 403},
		{"unknown request", b.c, func() url.Values { f := with("action", "approve"); f.Set("request_id", "nope"); return f }(), 400},
		{"unknown action", b.c, with("action", "explode"), 400},
		{"approve before login", b.c, with("action", "approve"), 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := post(tt.client, tt.form); got != tt.want {
				t.Errorf("status %d, want %d", got, tt.want)
			}
		})
	}
}

func TestAutoApprove(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withAutoApprove(seedusers.BobEmail), withTTL(90*time.Second))
	const redirect = "http://127.0.0.1:7777/cb"
	clientID := e.register(t, `{"redirect_uris":["`+redirect+`"]}`)["client_id"].(string)
	verifier, challenge := pkce()
	status, h, _ := do(t, "GET", authorizeURL(e, clientID, redirect, challenge, "auto", nil), nil, "")
	if status != http.StatusFound {
		t.Fatalf("auto-approve authorize = %d, want 302", status)
	}
	loc := mustURL(t, h.Get("Location"))
	if loc.Query().Get("state") != "auto" || loc.Query().Get("iss") != e.URL+"/oauth/2.1" {
		t.Errorf("redirect %v", loc)
	}
	st, tok := tokenRequest(t, e, nil, url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")},
		"redirect_uri": {redirect}, "client_id": {clientID}, "code_verifier": {verifier}})
	if st != 200 {
		t.Fatalf("exchange = %d %v", st, tok)
	}
	got := e.introspect(t, tok["access_token"].(string))
	if got["sub"] != bobID || got["scope"] != "read:user_data" {
		t.Errorf("introspection %v", got)
	}
	if tok["expires_in"] != 90.0 || got["exp"].(float64)-got["iat"].(float64) != 90 {
		t.Errorf("DEVAUTH_TOKEN_TTL not applied: expires_in %v, exp-iat %v", tok["expires_in"], got["exp"].(float64)-got["iat"].(float64))
	}
}

// TestStandardClient proves golang.org/x/oauth2, a widely used client,
// interoperates: PKCE S256, code exchange, and refresh, for a public client
// and for confidential clients with either authentication style.
func TestStandardClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withAutoApprove(aliceEmail))
	const redirect = "http://127.0.0.1:8765/callback"
	tests := []struct {
		method string
		style  oauth2.AuthStyle
	}{
		{"none", oauth2.AuthStyleInParams},
		{"client_secret_basic", oauth2.AuthStyleInHeader},
		{"client_secret_post", oauth2.AuthStyleInParams},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			t.Parallel()
			reg := e.register(t, `{"redirect_uris":["`+redirect+`"],"token_endpoint_auth_method":"`+tt.method+`"}`)
			secret, _ := reg["client_secret"].(string)
			if (secret != "") != (tt.method != "none") {
				t.Fatalf("client_secret %q for %s", secret, tt.method)
			}
			if tt.method != "none" && reg["client_secret_expires_at"] != 0.0 {
				t.Errorf("client_secret_expires_at = %v, want 0", reg["client_secret_expires_at"])
			}
			cfg := &oauth2.Config{
				ClientID: reg["client_id"].(string), ClientSecret: secret, RedirectURL: redirect,
				Scopes: []string{"read:user_data", "read:org_data"},
				Endpoint: oauth2.Endpoint{
					AuthURL: e.URL + "/oauth/2.1/authorize", TokenURL: e.URL + "/oauth/2.1/token", AuthStyle: tt.style,
				},
			}
			verifier := oauth2.GenerateVerifier()
			authURL := cfg.AuthCodeURL("state-1", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("resource", resource))
			status, h, body := do(t, "GET", authURL, nil, "")
			if status != http.StatusFound {
				t.Fatalf("authorize = %d %s", status, body)
			}
			code := mustURL(t, h.Get("Location")).Query().Get("code")
			tok, err := cfg.Exchange(t.Context(), code, oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("Exchange: %v", err)
			}
			if tok.TokenType != "Bearer" || tok.RefreshToken == "" || tok.Extra("scope") != "read:user_data read:org_data" {
				t.Errorf("token %+v scope %v", tok, tok.Extra("scope"))
			}
			if got := e.introspect(t, tok.AccessToken); got["aud"] != resource || got["client_id"] != cfg.ClientID {
				t.Errorf("introspection %v", got)
			}
			// Force a refresh through the standard TokenSource.
			tok.Expiry = tok.Expiry.Add(-2 * e.Cfg.TokenTTL)
			fresh, err := cfg.TokenSource(t.Context(), tok).Token()
			if err != nil {
				t.Fatalf("refresh via TokenSource: %v", err)
			}
			if fresh.AccessToken == tok.AccessToken || fresh.RefreshToken == tok.RefreshToken {
				t.Error("TokenSource refresh did not rotate the tokens")
			}
			// The code was consumed by the exchange.
			if _, err := cfg.Exchange(t.Context(), code, oauth2.VerifierOption(verifier)); err == nil {
				t.Error("a second exchange of the same code succeeded")
			}
		})
	}
}
