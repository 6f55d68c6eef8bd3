package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// TestGoSDKClient runs the MCP go-sdk's own OAuth client (the one the
// gateway's end-to-end tests and Go MCP clients use) against devauth:
// protected-resource discovery, RFC 8414 discovery with its issuer and URL
// checks, DCR, the real login and consent pages, RFC 9207 iss validation, and
// the code exchange with resource.
func TestGoSDKClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
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

	const redirect = "http://127.0.0.1:4500/callback"
	b := newBrowser(t, e)
	fetcher := func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
		consent := b.login(b.get(args.URL), aliceEmail, seedusers.AlicePassword)
		done := b.submit(consent, url.Values{"action": {"approve"}})
		if done.location == nil {
			return nil, errors.New("no redirect after consent")
		}
		q := done.location.Query()
		return &auth.AuthorizationResult{Code: q.Get("code"), State: q.Get("state"), Iss: q.Get("iss")}, nil
	}
	h, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		DynamicClientRegistrationConfig: &auth.DynamicClientRegistrationConfig{Metadata: &oauthex.ClientRegistrationMetadata{
			RedirectURIs: []string{redirect}, TokenEndpointAuthMethod: "none", ClientName: "go-sdk test client",
			GrantTypes: []string{"authorization_code", "refresh_token"},
		}},
		AuthorizationCodeFetcher: fetcher,
	})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), "POST", rs.URL+"/mcp", nil)
	challenge := &http.Response{
		StatusCode: http.StatusUnauthorized,
		Header: http.Header{"Www-Authenticate": {`Bearer resource_metadata="` + rs.URL +
			`/.well-known/oauth-protected-resource/mcp", scope="read:user_data"`}},
		Body: io.NopCloser(strings.NewReader("")),
	}
	if err := h.Authorize(t.Context(), req, challenge); err != nil {
		t.Fatalf("go-sdk Authorize: %v", err)
	}
	ts, err := h.TokenSource(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	got := e.introspect(t, tok.AccessToken)
	if got["active"] != true || got["aud"] != rs.URL+"/mcp" || got["sub"] != aliceID || got["scope"] != "read:user_data" {
		t.Errorf("introspection of the go-sdk token: %v", got)
	}
}
