package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/mcpauthz/mcpauthz/services/devauth/internal/config"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/server"
)

// withMCPFile configures devauth from a DEVAUTH_CONFIG_FILE with content
// yaml, read as devauth reads it at start. ${VAR} references resolve from
// vars.
func withMCPFile(t *testing.T, yaml string, vars map[string]string) envOption {
	t.Helper()
	path := filepath.Join(t.TempDir(), "devauth.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	m, scopes, err := config.ReadMCPFile(path, nil, func(k string) string { return vars[k] })
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return func(c *config.Config, _ *server.Options) {
		c.ConfigFile, c.MCP, c.Scopes = path, m, scopes
	}
}

// The clients of PropelAuth's MCP guide, as a user would list them.
const guideClients = `
mcp:
  allowed_redirect_uris: [cursor, loopback]
  token_endpoint_auth_methods: %s
  clients:
    - client_id: cursor-public
      name: Cursor (public)
      type: public
      redirect_uris: [cursor]
      scopes: [read:user_data]
    - client_id: cursor-confidential
      name: Cursor (confidential)
      type: confidential
      client_secret: ${CURSOR_CLIENT_SECRET}
      redirect_uris: [cursor]
`

const (
	cursorRedirect = "cursor://anysphere.cursor-mcp/oauth/callback"
	cursorSecret   = "cursor-secret:with/odd+chars="
)

func guideEnv(t *testing.T, methods string) *env {
	t.Helper()
	return newEnv(t, withMCPFile(t, strings.Replace(guideClients, "%s", methods, 1),
		map[string]string{"CURSOR_CLIENT_SECRET": cursorSecret}))
}

// tokenCall is how a client authenticated one token request.
type tokenCall struct {
	basicID, basicSecret string // from the Authorization header
	formID, formSecret   string // from the form
}

// recorder records every request a client sends, and how it authenticated
// each token request, passing them on unchanged.
type recorder struct {
	mu     sync.Mutex
	paths  []string
	tokens []tokenCall
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	var call *tokenCall
	if req.URL.Path == "/oauth/2.1/token" && req.Body != nil {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(strings.NewReader(string(body)))
		form, _ := url.ParseQuery(string(body))
		call = &tokenCall{formID: form.Get("client_id"), formSecret: form.Get("client_secret")}
		call.basicID, call.basicSecret, _ = req.BasicAuth()
	}
	r.mu.Lock()
	r.paths = append(r.paths, req.Method+" "+req.URL.Path)
	if call != nil {
		r.tokens = append(r.tokens, *call)
	}
	r.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

// resourceServer serves protected resource metadata naming devauth, as the
// gateway does, and returns the challenge a 401 from it carries.
func resourceServer(t *testing.T, e *env) (resourceURL string, challenge *http.Response) {
	t.Helper()
	var rs *httptest.Server
	rs = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/oauth-protected-resource/mcp" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"resource": rs.URL + "/mcp", "authorization_servers": []string{e.URL + "/oauth/2.1"},
			"scopes_supported": []string{"read:user_data"}, "bearer_methods_supported": []string{"header"},
		})
	}))
	t.Cleanup(rs.Close)
	return rs.URL + "/mcp", &http.Response{
		StatusCode: http.StatusUnauthorized,
		Header: http.Header{"Www-Authenticate": {`Bearer resource_metadata="` + rs.URL +
			`/.well-known/oauth-protected-resource/mcp", scope="read:user_data"`}},
		Body: io.NopCloser(strings.NewReader("")),
	}
}

// cursorFlow runs the go-sdk's OAuth client configured as Cursor's mcp.json
// "auth" block configures Cursor: a fixed client ID (and secret, when
// secret is not ""), no registration, Cursor's redirect URI. The browser
// signs in as alice and approves; the redirect to cursor:// is where a
// browser would hand over to Cursor, so the code is read from it. It returns
// the access token, or the error the flow ended with.
func cursorFlow(t *testing.T, e *env, clientID, secret string, rec *recorder) (string, error) {
	t.Helper()
	resourceURL, challenge := resourceServer(t, e)
	creds := &oauthex.ClientCredentials{ClientID: clientID, Issuer: e.URL + "/oauth/2.1"}
	if secret != "" {
		creds.ClientSecretAuth = &oauthex.ClientSecretAuth{ClientSecret: secret}
	}
	b := newBrowser(t, e)
	h, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		PreregisteredClient: creds,
		RedirectURL:         cursorRedirect,
		Client:              &http.Client{Transport: rec},
		AuthorizationCodeFetcher: func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
			p := b.get(args.URL)
			if !strings.Contains(p.body, "Sign in") {
				return nil, errors.New("no login page: " + p.body)
			}
			done := b.submit(b.login(p, aliceEmail, seedusers.AlicePassword), url.Values{"action": {"approve"}})
			if done.location == nil || !strings.HasPrefix(done.location.String(), cursorRedirect+"?") {
				return nil, errors.New("no redirect to Cursor after consent")
			}
			q := done.location.Query()
			return &auth.AuthorizationResult{Code: q.Get("code"), State: q.Get("state"), Iss: q.Get("iss")}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), "POST", resourceURL, nil)
	if err := h.Authorize(t.Context(), req, challenge); err != nil {
		return "", err
	}
	ts, err := h.TokenSource(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if got := e.introspect(t, tok.AccessToken); got["active"] != true || got["client_id"] != clientID || got["sub"] != aliceID || got["aud"] != resourceURL {
		t.Errorf("introspection of the token: %v, want active, client %s, alice, audience %s", got, clientID, resourceURL)
	}
	for _, p := range rec.paths {
		if strings.HasSuffix(p, "/register") {
			t.Errorf("the client registered itself (%s); a pre-registered client must not need to", p)
		}
	}
	return tok.AccessToken, nil
}

// TestPreregisteredPublicClient: a public client from the configuration
// completes the flow with PKCE and its client ID alone, as Cursor does with
// an "auth" block holding only CLIENT_ID.
func TestPreregisteredPublicClient(t *testing.T) {
	t.Parallel()
	e := guideEnv(t, "[none, client_secret_basic, client_secret_post]")
	rec := &recorder{}
	if _, err := cursorFlow(t, e, "cursor-public", "", rec); err != nil {
		t.Fatalf("go-sdk flow with the pre-registered public client: %v", err)
	}
	if len(rec.tokens) != 1 || rec.tokens[0] != (tokenCall{formID: "cursor-public"}) {
		t.Errorf("token requests %+v, want one with client_id in the form and no secret", rec.tokens)
	}

	// Its only scope is read:user_data: asking for more is refused.
	_, challenge := pkce()
	b := newBrowser(t, e)
	p := b.get(authorizeURL(e, "cursor-public", cursorRedirect, challenge, "s", url.Values{"scope": {"read:org_data"}}))
	if p.location == nil || p.location.Query().Get("error") != "invalid_scope" {
		t.Errorf("asking for a scope the client was not given: %d %v, want a redirect with invalid_scope", p.status, p.location)
	}
	// A secret from a public client is refused rather than ignored.
	v, _ := pkce()
	status, body := tokenRequest(t, e, nil, url.Values{"grant_type": {"authorization_code"}, "code": {"x"},
		"redirect_uri": {cursorRedirect}, "client_id": {"cursor-public"}, "client_secret": {"guess"}, "code_verifier": {v}})
	if status != http.StatusUnauthorized || body["error"] != "invalid_client" {
		t.Errorf("public client with a secret: %d %v, want 401 invalid_client", status, body)
	}
}

// TestPreregisteredConfidentialClient: a confidential client from the
// configuration completes the flow with its fixed ID and secret, as Cursor
// does with CLIENT_ID and CLIENT_SECRET, authenticating with
// client_secret_post (what the go-sdk picks when the metadata offers it) and
// with client_secret_basic (when the metadata offers only that).
func TestPreregisteredConfidentialClient(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		method, methods string
		want            tokenCall
	}{
		{"client_secret_post", "[none, client_secret_post]", tokenCall{formID: "cursor-confidential", formSecret: cursorSecret}},
		{"client_secret_basic", "[none, client_secret_basic]", tokenCall{
			// RFC 6749 section 2.3.1: form-encoded, then Basic.
			basicID: "cursor-confidential", basicSecret: url.QueryEscape(cursorSecret)}},
	} {
		t.Run(tc.method, func(t *testing.T) {
			t.Parallel()
			e := guideEnv(t, tc.methods)
			rec := &recorder{}
			if _, err := cursorFlow(t, e, "cursor-confidential", cursorSecret, rec); err != nil {
				t.Fatalf("go-sdk flow with the pre-registered confidential client: %v", err)
			}
			if len(rec.tokens) != 1 || rec.tokens[0] != tc.want {
				t.Errorf("token requests %+v, want one %+v (%s)", rec.tokens, tc.want, tc.method)
			}

			// The wrong secret ends the flow at the token endpoint.
			if _, err := cursorFlow(t, e, "cursor-confidential", "wrong-secret", &recorder{}); err == nil {
				t.Error("the flow succeeded with the wrong secret")
			}
		})
	}
}

// TestConfidentialClientAuthentication: the token endpoint's answers to a
// confidential client, by method: a missing or wrong secret is 401
// invalid_client, with a Basic challenge (RFC 6749 section 5.2); a method the
// configuration does not accept is refused even with the right secret.
func TestConfidentialClientAuthentication(t *testing.T) {
	t.Parallel()
	e := guideEnv(t, "[none, client_secret_basic]")
	basicHdr := func(id, secret string) http.Header {
		h := hdr("Content-Type", "application/x-www-form-urlencoded")
		h.Set("Authorization", "Basic "+basic(url.QueryEscape(id), url.QueryEscape(secret)))
		return h
	}
	form := func(extra ...string) url.Values {
		v := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"unknown"}}
		for i := 0; i+1 < len(extra); i += 2 {
			v.Set(extra[i], extra[i+1])
		}
		return v
	}
	for _, tc := range []struct {
		name       string
		h          http.Header
		form       url.Values
		wantStatus int
		wantError  string
	}{
		{"basic, right secret", basicHdr("cursor-confidential", cursorSecret), form(), 400, "invalid_grant"},
		{"basic, wrong secret", basicHdr("cursor-confidential", "nope"), form(), 401, "invalid_client"},
		{"no secret", nil, form("client_id", "cursor-confidential"), 401, "invalid_client"},
		{"post, not accepted here", nil, form("client_id", "cursor-confidential", "client_secret", cursorSecret), 401, "invalid_client"},
		{"basic and post at once", basicHdr("cursor-confidential", cursorSecret), form("client_secret", cursorSecret), 401, "invalid_client"},
		{"another client's secret", basicHdr("cursor-public", cursorSecret), form(), 401, "invalid_client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := tc.h
			if h == nil {
				h = formHdr
			}
			status, header, b := do(t, "POST", e.URL+"/oauth/2.1/token", h, tc.form.Encode())
			if got := decode[map[string]any](t, b); status != tc.wantStatus || got["error"] != tc.wantError {
				t.Fatalf("%d %s, want %d %s", status, b, tc.wantStatus, tc.wantError)
			}
			if status == http.StatusUnauthorized && !strings.HasPrefix(header.Get("WWW-Authenticate"), "Basic ") {
				t.Errorf("401 without a Basic challenge: %q", header.Get("WWW-Authenticate"))
			}
		})
	}
	if strings.Contains(e.Logs.String(), cursorSecret) || strings.Contains(e.Logs.String(), url.QueryEscape(cursorSecret)) {
		t.Error("the client secret is in devauth's log")
	}
	// The metadata advertises exactly the accepted methods, which is what
	// makes the go-sdk pick client_secret_basic here.
	_, _, b := do(t, "GET", e.URL+"/.well-known/oauth-authorization-server/oauth/2.1", nil, "")
	if got := decode[map[string]any](t, b)["token_endpoint_auth_methods_supported"]; len(got.([]any)) != 2 {
		t.Errorf("token_endpoint_auth_methods_supported = %v, want [none client_secret_basic]", got)
	}
}

// TestRedirectAllowList: a redirect URI that is not on the allow list is
// refused for every kind of client: pre-registered public and confidential
// ones and a CIMD client at /authorize (an error page, nothing sent to the
// URI), DCR at registration with RFC 7591's invalid_redirect_uri. URIs on
// the list work.
func TestRedirectAllowList(t *testing.T) {
	t.Parallel()
	const (
		allowed   = "http://127.0.0.1:4400/callback"
		unlisted  = "https://evil.example/callback"
		webapp    = "https://app.example.com/oauth/callback"
		otherPort = "http://127.0.0.1:5500/callback"
	)
	host := newMetadataHost(t)
	host.docs["/listed.json"] = doc(allowed, "")
	host.docs["/unlisted.json"] = doc(unlisted, "")
	e := newEnv(t, withMCPFile(t, `
mcp:
  allowed_redirect_uris: [loopback, "`+webapp+`"]
  clients:
    - {client_id: pub, type: public, redirect_uris: ["http://127.0.0.1/*"]}
    - {client_id: conf, type: confidential, client_secret: s3cret-s3cret, redirect_uris: ["http://127.0.0.1/*", "`+webapp+`"]}
`, nil))
	// The configuration itself refuses a client outside the list.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte(`mcp: {allowed_redirect_uris: [loopback], clients: [{client_id: c, type: public, redirect_uris: ["`+unlisted+`"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := config.ReadMCPFile(bad, nil, os.Getenv); err == nil || !strings.Contains(err.Error(), "not in mcp.allowed_redirect_uris") {
		t.Errorf("a pre-registered client with an unlisted redirect URI: %v, want a start-up error", err)
	}

	_, challenge := pkce()
	authorize := func(t *testing.T, clientID, redirect string) page {
		t.Helper()
		return newBrowser(t, e).get(authorizeURL(e, clientID, redirect, challenge, "s", nil))
	}
	// A pre-registered client cannot list an unlisted URI (above), so at
	// /authorize one is refused as unregistered; a Client ID Metadata
	// Document can list one, and the allow list refuses it there.
	const unregistered, notAllowed = "not registered for this application", "not among the allowed redirect URIs"
	for _, tc := range []struct {
		name, clientID, redirect string
		wantPage                 string // the error page's message; "" = the login page
	}{
		{"public, listed", "pub", allowed, ""},
		{"public, listed, another port", "pub", otherPort, ""},
		{"public, unlisted", "pub", unlisted, unregistered},
		{"confidential, listed", "conf", webapp, ""},
		{"confidential, unlisted", "conf", unlisted, unregistered},
		{"CIMD, listed", host.srv.URL + "/listed.json", allowed, ""},
		{"CIMD, unlisted", host.srv.URL + "/unlisted.json", unlisted, notAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := authorize(t, tc.clientID, tc.redirect)
			if tc.wantPage == "" {
				if p.status != http.StatusOK || !strings.Contains(p.body, "Sign in") {
					t.Errorf("GET /authorize: %d, want the login page:\n%s", p.status, p.body)
				}
				return
			}
			if p.status != http.StatusBadRequest || p.location != nil || !strings.Contains(p.body, tc.wantPage) {
				t.Errorf("GET /authorize: %d (Location %v), want 400 and an error page saying %q:\n%s", p.status, p.location, tc.wantPage, p.body)
			}
		})
	}

	for _, tc := range []struct {
		name, body, wantError string
	}{
		{"DCR, listed", `{"redirect_uris":["` + allowed + `"]}`, ""},
		{"DCR, listed web app", `{"redirect_uris":["` + webapp + `"],"token_endpoint_auth_method":"client_secret_basic"}`, ""},
		{"DCR, unlisted", `{"redirect_uris":["` + unlisted + `"]}`, "invalid_redirect_uri"},
		{"DCR, one unlisted of two", `{"redirect_uris":["` + allowed + `","` + unlisted + `"]}`, "invalid_redirect_uri"},
		{"DCR, Cursor not listed here", `{"redirect_uris":["cursor://anysphere.cursor-mcp/oauth/callback"]}`, "invalid_redirect_uri"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			status, _, b := do(t, "POST", e.URL+"/oauth/2.1/register", jsonHdr, tc.body)
			got := decode[map[string]any](t, b)
			if tc.wantError == "" {
				if status != http.StatusCreated {
					t.Errorf("register: %d %s, want 201", status, b)
				}
				return
			}
			if status != http.StatusBadRequest || got["error"] != tc.wantError || !strings.Contains(got["error_description"].(string), "allowed redirect URIs") {
				t.Errorf("register: %d %s, want 400 %s naming the allow list", status, b, tc.wantError)
			}
		})
	}
}

// TestDefaultAllowList: without a configuration file, Cursor, Claude and
// ChatGPT register with their fixed callbacks and local clients with
// loopback ones; anything else is refused.
func TestDefaultAllowList(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *config.Config, _ *server.Options) {
		c.MCP = config.DefaultMCP(c.Scopes) // no test additions
	})
	for uri, want := range map[string]int{
		"cursor://anysphere.cursor-mcp/oauth/callback":          http.StatusCreated,
		"https://claude.ai/api/mcp/auth_callback":               http.StatusCreated,
		"https://chatgpt.com/connector_platform_oauth_redirect": http.StatusCreated,
		"https://chatgpt.com/connector/oauth/abc123":            http.StatusCreated,
		"http://localhost:6274/oauth/callback":                  http.StatusCreated,
		"http://127.0.0.1:53682/callback":                       http.StatusCreated,
		"https://app.example/cb":                                http.StatusBadRequest,
		"https://claude.ai/other":                               http.StatusBadRequest,
	} {
		if status, _, b := do(t, "POST", e.URL+"/oauth/2.1/register", jsonHdr, `{"redirect_uris":["`+uri+`"]}`); status != want {
			t.Errorf("register %s: %d %s, want %d", uri, status, b, want)
		}
	}
}

// TestConsentShowsScopeDescriptions: the consent page lists each requested
// scope with the description the configuration gives it.
func TestConsentShowsScopeDescriptions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withMCPFile(t, `
mcp:
  scopes:
    - {name: "read:user_data", description: "Read your name & email"}
    - {name: "tools:execute", description: "Run tools on your behalf"}
    - {name: "plain"}
  clients: [{client_id: c, type: public, redirect_uris: [loopback]}]
`, nil))
	const redirect = "http://127.0.0.1:4500/cb"
	_, challenge := pkce()
	b := newBrowser(t, e)
	consent := b.login(b.get(authorizeURL(e, "c", redirect, challenge, "s", url.Values{"scope": {"read:user_data tools:execute plain"}})), aliceEmail, seedusers.AlicePassword)
	for _, want := range []string{
		"<code>read:user_data</code>: Read your name &amp; email</li>",
		"<code>tools:execute</code>: Run tools on your behalf</li>",
		"<code>plain</code></li>",
	} {
		if !strings.Contains(consent.body, want) {
			t.Errorf("consent page lacks %q:\n%s", want, consent.body)
		}
	}
}

// TestDCRTurnedOff: with mcp.dcr false, registration is refused and the
// metadata advertises no registration endpoint, so clients use a
// pre-registered client instead.
func TestDCRTurnedOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withMCPFile(t, "mcp: {dcr: false}", nil))
	status, _, b := do(t, "POST", e.URL+"/oauth/2.1/register", jsonHdr, `{"redirect_uris":["http://127.0.0.1:4000/cb"]}`)
	if got := decode[map[string]any](t, b); status != http.StatusForbidden || !strings.Contains(got["error_description"].(string), "mcp.dcr") {
		t.Errorf("register with DCR off: %d %s, want 403 naming mcp.dcr", status, b)
	}
	_, _, b = do(t, "GET", e.URL+"/.well-known/oauth-authorization-server/oauth/2.1", nil, "")
	if m := decode[map[string]any](t, b); m["registration_endpoint"] != nil || m["issuer"] != e.URL+"/oauth/2.1" {
		t.Errorf("metadata with DCR off: %s, want no registration_endpoint", b)
	}
	// The demo client still logs in.
	_, challenge := pkce()
	if p := newBrowser(t, e).get(authorizeURL(e, config.DemoClientID, cursorRedirect, challenge, "s", nil)); p.status != http.StatusOK {
		t.Errorf("the demo client with DCR off: /authorize = %d", p.status)
	}
}

// TestMCPDisabled: with mcp.enabled false the OAuth endpoints are gone, as in
// a PropelAuth environment without MCP; the user API still answers.
func TestMCPDisabled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withMCPFile(t, "mcp: {enabled: false}", nil))
	for _, p := range []string{"/.well-known/oauth-authorization-server/oauth/2.1", "/oauth/2.1/authorize"} {
		if status, _, _ := do(t, "GET", e.URL+p, nil, ""); status != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", p, status)
		}
	}
	if status, _, _ := do(t, "POST", e.URL+"/oauth/2.1/introspect", rvHdr(), "token=x"); status != http.StatusNotFound {
		t.Errorf("introspection = %d, want 404", status)
	}
	if status, _, _ := do(t, "GET", e.URL+"/api/backend/v1/user/"+aliceID, apiKeyHdr, ""); status != http.StatusOK {
		t.Errorf("user API = %d, want 200", status)
	}
}
