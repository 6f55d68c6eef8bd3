package server_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"
)

// TestAnonymousFloodKeepsSignedInSessions: anonymous authorization requests
// (anyone can send them, no cookie needed) far beyond every session bound
// never push out a signed-in user's session: alice, signed in before the
// flood, is still taken straight to consent after it.
func TestAnonymousFloodKeepsSignedInSessions(t *testing.T) {
	if testing.Short() {
		t.Skip("floods the server: go test without -short runs it")
	}
	t.Parallel()
	e := newEnv(t)
	const redirect = "http://localhost:5555/cb"
	clientID := e.register(t, `{"redirect_uris":["`+redirect+`"]}`)["client_id"].(string)
	b := newBrowser(t, e)
	_, challenge := pkce()
	b.login(b.get(authorizeURL(e, clientID, redirect, challenge, "before", nil)), aliceEmail, seedusers.AlicePassword)

	// Straight into the handler: 40,000 requests over loopback would be slow.
	// Each starts a new anonymous session, four times the default bound.
	for i := range 40_000 {
		rec := httptest.NewRecorder()
		e.Srv.Handler.ServeHTTP(rec, httptest.NewRequest("GET", authorizeURL(e, clientID, redirect, challenge, fmt.Sprint(i), nil), nil))
		if rec.Code != http.StatusOK || len(rec.Result().Cookies()) != 1 {
			t.Fatalf("anonymous authorization %d: %d %v", i, rec.Code, rec.Result().Cookies())
		}
	}
	p := b.get(authorizeURL(e, clientID, redirect, challenge, "after", nil))
	if !strings.Contains(p.body, "Approve") || strings.Contains(p.body, `name="password"`) {
		t.Fatalf("alice's session did not survive the anonymous flood (want the consent page):\n%s", p.body)
	}
	if done := b.submit(p, url.Values{"action": {"approve"}}); done.location == nil || done.location.Query().Get("code") == "" {
		t.Errorf("approve after the flood = %d %v", done.status, done.location)
	}
}
