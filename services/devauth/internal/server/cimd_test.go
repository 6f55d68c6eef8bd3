package server_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/server"
)

// metadataHost serves Client ID Metadata Documents on loopback, one per path.
type metadataHost struct {
	srv     *httptest.Server
	fetches atomic.Int64
	docs    map[string]func(id string) (status int, contentType, body string)
}

func newMetadataHost(t *testing.T) *metadataHost {
	h := &metadataHost{docs: map[string]func(string) (int, string, string){}}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.fetches.Add(1)
		f, ok := h.docs[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		status, ct, body := f(h.srv.URL + r.URL.Path)
		if ct != "" {
			w.Header().Set("Content-Type", ct)
		}
		if status == http.StatusFound {
			w.Header().Set("Location", h.srv.URL+"/good.json")
		}
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func doc(redirect, extra string) func(id string) (int, string, string) {
	return func(id string) (int, string, string) {
		return 200, "application/json", `{"client_id":"` + id + `","client_name":"CIMD Client","redirect_uris":["` + redirect + `"],"token_endpoint_auth_method":"none"` + extra + `}`
	}
}

func TestClientIDMetadataDocument(t *testing.T) {
	t.Parallel()
	const redirect = "http://127.0.0.1:4300/callback"
	host := newMetadataHost(t)
	host.docs["/good.json"] = doc(redirect, "")
	host.docs["/wrong-id.json"] = func(string) (int, string, string) {
		return 200, "application/json", `{"client_id":"https://elsewhere.example/c.json","redirect_uris":["` + redirect + `"]}`
	}
	host.docs["/secret.json"] = doc(redirect, `,"client_secret":"s"`)
	host.docs["/basic.json"] = func(id string) (int, string, string) {
		return 200, "application/json", `{"client_id":"` + id + `","redirect_uris":["` + redirect + `"],"token_endpoint_auth_method":"client_secret_basic"}`
	}
	host.docs["/no-redirects.json"] = func(id string) (int, string, string) {
		return 200, "application/json", `{"client_id":"` + id + `"}`
	}
	host.docs["/bad-redirect.json"] = doc("http://evil.example/cb", "")
	host.docs["/html.json"] = func(id string) (int, string, string) { return 200, "text/html", "<html>" }
	host.docs["/not-json.json"] = func(id string) (int, string, string) { return 200, "application/json", "{nope" }
	host.docs["/big.json"] = doc(redirect, `,"padding":"`+strings.Repeat("x", 6<<10)+`"`)
	host.docs["/500.json"] = func(string) (int, string, string) { return 500, "", "" }
	host.docs["/redirect.json"] = func(string) (int, string, string) { return http.StatusFound, "", "" }

	e := newEnv(t)
	verifier, challenge := pkce()
	id := host.srv.URL + "/good.json"

	t.Run("full flow", func(t *testing.T) {
		b := newBrowser(t, e)
		loginPage := b.get(authorizeURL(e, id, redirect, challenge, "c1", nil))
		if loginPage.status != 200 || !strings.Contains(loginPage.body, "CIMD Client") {
			t.Fatalf("login page %d:\n%s", loginPage.status, loginPage.body)
		}
		consent := b.login(loginPage, aliceEmail, seedusers.AlicePassword)
		if !strings.Contains(consent.body, id) {
			t.Error("consent page does not show the client_id URL")
		}
		done := b.submit(consent, url.Values{"action": {"approve"}})
		if done.location == nil {
			t.Fatalf("approve = %d", done.status)
		}
		at, _ := exchangeOK(t, e, url.Values{"grant_type": {"authorization_code"}, "code": {done.location.Query().Get("code")},
			"redirect_uri": {redirect}, "client_id": {id}, "code_verifier": {verifier}})
		if got := e.introspect(t, at); got["client_id"] != id || got["sub"] != aliceID {
			t.Errorf("introspection %v", got)
		}
		// The document was fetched once and then served from cache.
		if n := host.fetches.Load(); n != 1 {
			t.Errorf("document fetched %d times, want 1 (cached)", n)
		}
	})

	tests := []struct {
		name     string
		clientID string
		redirect string
	}{
		{"redirect not in document", id, "http://127.0.0.1:4300/other"},
		{"client_id mismatch", host.srv.URL + "/wrong-id.json", redirect},
		{"document has a secret", host.srv.URL + "/secret.json", redirect},
		{"shared-secret auth method", host.srv.URL + "/basic.json", redirect},
		{"no redirect_uris", host.srv.URL + "/no-redirects.json", redirect},
		{"invalid redirect in document", host.srv.URL + "/bad-redirect.json", "http://evil.example/cb"},
		{"wrong content type", host.srv.URL + "/html.json", redirect},
		{"not JSON", host.srv.URL + "/not-json.json", redirect},
		{"too large", host.srv.URL + "/big.json", redirect},
		{"server error", host.srv.URL + "/500.json", redirect},
		{"redirect not followed", host.srv.URL + "/redirect.json", redirect},
		{"missing document", host.srv.URL + "/missing.json", redirect},
		{"no path", host.srv.URL, redirect},
		{"root path", host.srv.URL + "/", redirect},
		{"dot segment", host.srv.URL + "/a/../good.json", redirect},
		{"fragment", host.srv.URL + "/good.json#x", redirect},
		{"http remote", "http://client.example/c.json", redirect},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			status, h, b := do(t, "GET", authorizeURL(e, tt.clientID, tt.redirect, challenge, "s", nil), nil, "")
			if status != http.StatusBadRequest || h.Get("Location") != "" {
				t.Errorf("got %d Location=%q, want the 400 error page\n%s", status, h.Get("Location"), b)
			}
		})
	}

	t.Run("token endpoint refuses a secret", func(t *testing.T) {
		status, m := tokenRequest(t, e, nil, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}, "client_id": {id}, "client_secret": {"s"}})
		if status != 401 || m["error"] != "invalid_client" {
			t.Errorf("got %d %v", status, m)
		}
	})
}

func TestClientIDMetadataDocumentLoopbackRefusedByDefault(t *testing.T) {
	t.Parallel()
	host := newMetadataHost(t)
	host.docs["/c.json"] = doc("http://127.0.0.1:4400/cb", "")
	e := newEnv(t, withOptions(func(o *server.Options) { o.AllowLoopbackMetadata = false }))
	_, challenge := pkce()
	status, _, _ := do(t, "GET", authorizeURL(e, host.srv.URL+"/c.json", "http://127.0.0.1:4400/cb", challenge, "s", nil), nil, "")
	if status != http.StatusBadRequest {
		t.Errorf("http loopback client_id accepted without AllowLoopbackMetadata: %d", status)
	}
	if n := host.fetches.Load(); n != 0 {
		t.Errorf("document fetched %d times, want 0", n)
	}
}

// TestClientIDMetadataDocumentErrorsRevealNothing: whatever the client_id URL
// answers (a status, a content type, a body too large) the user sees one
// message, so /authorize cannot be used to learn what a URL serves; the
// detail is in devauth's log.
func TestClientIDMetadataDocumentErrorsRevealNothing(t *testing.T) {
	t.Parallel()
	host := newMetadataHost(t)
	host.docs["/teapot.json"] = func(string) (int, string, string) { return 418, "text/plain", "secret-teapot-body" }
	host.docs["/html.json"] = func(string) (int, string, string) { return 200, "text/x-secret-type", "secret-html-body" }
	host.docs["/big.json"] = func(id string) (int, string, string) {
		return 200, "application/json", `{"client_id":"` + id + `","padding":"` + strings.Repeat("x", 6<<10) + `"}`
	}
	e := newEnv(t)
	_, challenge := pkce()
	var pages []string
	for _, path := range []string{"/teapot.json", "/html.json", "/big.json", "/missing.json"} {
		status, _, b := do(t, "GET", authorizeURL(e, host.srv.URL+path, "http://127.0.0.1:4300/cb", challenge, "s", nil), nil, "")
		if status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want the 400 error page", path, status)
		}
		page := string(b)
		for _, leak := range []string{"418", "404", "secret", "text/", "larger"} {
			if strings.Contains(page[strings.Index(page, "<body"):], leak) {
				t.Errorf("%s: the error page reveals %q:\n%s", path, leak, page)
			}
		}
		pages = append(pages, page)
	}
	for _, p := range pages[1:] {
		if p != pages[0] {
			t.Errorf("error pages differ:\n%s\n---\n%s", pages[0], p)
		}
	}
	if logs := e.Logs.String(); !strings.Contains(logs, "status 418") || !strings.Contains(logs, `content type \"text/x-secret-type\"`) {
		t.Errorf("the log lacks the detail:\n%s", logs)
	}
}

// TestClientIDMetadataDocumentResolvedAddressChecked: the address check runs
// on what a name resolves to, at connect time: https://localhost/... passes
// the URL checks but is never connected to unless loopback is allowed.
func TestClientIDMetadataDocumentResolvedAddressChecked(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var accepted atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	id := "https://localhost:" + port + "/client.json"
	_, challenge := pkce()
	refuse := newEnv(t, withOptions(func(o *server.Options) { o.AllowLoopbackMetadata = false }))
	if status, _, _ := do(t, "GET", authorizeURL(refuse, id, "http://127.0.0.1:4300/cb", challenge, "s", nil), nil, ""); status != http.StatusBadRequest {
		t.Errorf("status %d, want 400", status)
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("devauth connected %d times to a name resolving to loopback", n)
	}
	if !strings.Contains(refuse.Logs.String(), "not a public address") {
		t.Errorf("the log does not say why:\n%s", refuse.Logs.String())
	}
	// The same fetch with loopback allowed does connect (then fails TLS).
	allow := newEnv(t)
	do(t, "GET", authorizeURL(allow, id, "http://127.0.0.1:4300/cb", challenge, "s", nil), nil, "")
	if accepted.Load() == 0 {
		t.Error("with loopback allowed devauth never connected: the test proves nothing")
	}
}
