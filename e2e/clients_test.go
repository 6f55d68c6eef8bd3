package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// TestTypeScriptSDKClient runs the official TypeScript MCP SDK client (pinned in
// ts/package-lock.json) against the stack: discovery, dynamic registration, PKCE
// authorization through devauth's real login and consent pages, the token, then
// tools/list, who_am_i and list_my_orgs. A first login asks for every scope the
// 401 names, so the user can use every tool at once.
func TestTypeScriptSDKClient(t *testing.T) {
	slow(t)
	t.Parallel()
	node := nodeModules(t)
	top := startTopology(t, 1, 1)

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client.mjs", top.resource)
	cmd.Dir = "ts"
	cmd.Env = append(os.Environ(), "E2E_EMAIL="+aliceEmail, "E2E_PASSWORD=alice-password")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node client.mjs: %v\n%s", err, stderr.String())
	}
	var got struct {
		Events            []string       `json:"events"`
		Issuer            string         `json:"issuer"`
		RequestedScope    string         `json:"requested_scope"`
		RequestedResource string         `json:"requested_resource"`
		Tools             []string       `json:"tools"`
		WhoAmI            map[string]any `json:"who_am_i"`
		IsError           bool           `json:"is_error"`
		ListMyOrgs        myOrgs         `json:"list_my_orgs"`
		ListMyOrgsIsError bool           `json:"list_my_orgs_is_error"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("decoding the client's output %q: %v", out, err)
	}
	if diff := cmp.Diff([]string{"registered", "authorize", "login", "consent", "tokens"}, got.Events); diff != "" {
		t.Errorf("OAuth steps the TypeScript client took (-want +got):\n%s", diff)
	}
	if got.Issuer != top.devauthURL+"/oauth/2.1" {
		t.Errorf("iss in the authorization response = %q, want %q", got.Issuer, top.devauthURL+"/oauth/2.1")
	}
	if got.RequestedResource != top.resource {
		t.Errorf("resource the client asked a token for = %q, want %q", got.RequestedResource, top.resource)
	}
	if got.RequestedScope != "read:user_data read:org_data" {
		t.Errorf("scope the client asked for = %q, want every scope the 401 names", got.RequestedScope)
	}
	if diff := cmp.Diff([]string{"list_my_orgs", "who_am_i"}, got.Tools); diff != "" {
		t.Errorf("tools/list after the first login (-want +got):\n%s", diff)
	}
	checkMyOrgs(t, got.ListMyOrgs, got.ListMyOrgsIsError)
	if got.IsError || got.WhoAmI["subject"] != aliceID {
		t.Fatalf("who_am_i = %v (isError %v), want subject %s", got.WhoAmI, got.IsError, aliceID)
	}
	if user, _ := got.WhoAmI["user"].(map[string]any); user["email"] != aliceEmail {
		t.Errorf("who_am_i user = %v, want alice's profile", got.WhoAmI["user"])
	}
}

// nodeModules returns the node binary after making sure the TypeScript client's
// pinned packages are installed (npm ci from the committed lockfile).
func nodeModules(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node not found on PATH: `make test` installs it (Debian packages nodejs and npm)")
	}
	if _, err := os.Stat(filepath.Join("ts", "node_modules", "@modelcontextprotocol", "sdk", "package.json")); err == nil {
		return node
	}
	cmd := exec.CommandContext(t.Context(), "npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = "ts"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in e2e/ts: %v\n%s", err, out)
	}
	return node
}

// TestGoSDKClientThroughLoginPage drives the go-sdk client, with its
// AuthorizationCodeHandler, through the gateway and devauth's real login and
// consent pages, filled in the way a browser would (following redirects, keeping
// cookies, posting the forms with their CSRF fields): 401 -> metadata -> DCR ->
// PKCE authorization -> token -> tools/list -> who_am_i and list_my_orgs, which
// a first login allows: the 401 asks for every scope.
func TestGoSDKClientThroughLoginPage(t *testing.T) {
	t.Parallel()
	top := startTopology(t, 1, 1)
	const redirect = "http://127.0.0.1:4567/callback"

	h, login := loginHandler(t, redirect)
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-go-sdk", Version: "1.0.0"}, nil)
	cs, err := client.Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: top.resource, OAuthHandler: h}, nil)
	if err != nil {
		t.Fatalf("Connect: %v (pages: %v)", err, login.pages)
	}
	defer cs.Close()
	if diff := cmp.Diff([]string{"login", "consent"}, login.pages); diff != "" {
		t.Errorf("pages the browser filled in (-want +got):\n%s", diff)
	}
	// The go-sdk client may order the scopes either way (it goes through a map).
	if got := slices.Sorted(strings.FieldsSeq(login.requested)); !slices.Equal(got, []string{"read:org_data", "read:user_data"}) {
		t.Errorf("scope the client asked for = %q, want every scope the 401 names", login.requested)
	}

	list, err := cs.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range list.Tools {
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	if diff := cmp.Diff([]string{"list_my_orgs", "who_am_i"}, names); diff != "" {
		t.Errorf("tools/list after the first login (-want +got):\n%s", diff)
	}
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "who_am_i", Arguments: map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := res.StructuredContent.(map[string]any)
	if res.IsError || out["subject"] != aliceID {
		t.Fatalf("who_am_i = %v (isError %v), want subject %s", res.StructuredContent, res.IsError, aliceID)
	}
	res, err = cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "list_my_orgs", Arguments: map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	var orgs myOrgs
	raw, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(raw, &orgs); err != nil {
		t.Fatalf("list_my_orgs = %s: %v", raw, err)
	}
	checkMyOrgs(t, orgs, res.IsError)
}

// login records what [loginHandler]'s browser did: the pages it filled in
// and the scope the client asked for.
type login struct {
	pages     []string
	requested string
}

// loginHandler is the go-sdk client's OAuth handler for the gateway, as a
// user's: dynamic registration, then PKCE authorization through devauth's
// real login and consent pages as alice, filled in the way a browser would
// (following redirects, keeping cookies, posting the forms with their CSRF
// fields), redirecting to redirect (nothing needs to listen there).
func loginHandler(t *testing.T, redirect string) (*auth.AuthorizationCodeHandler, *login) {
	t.Helper()
	b := newBrowser(t)
	rec := &login{}
	fetcher := func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
		if u, err := url.Parse(args.URL); err == nil {
			rec.requested = u.Query().Get("scope")
		}
		loc, visited, err := b.authorize(ctx, args.URL, redirect, aliceEmail, seedusers.AlicePassword)
		rec.pages = visited
		if err != nil {
			return nil, err
		}
		q := loc.Query()
		if e := q.Get("error"); e != "" {
			return nil, fmt.Errorf("authorization error %s: %s", e, q.Get("error_description"))
		}
		return &auth.AuthorizationResult{Code: q.Get("code"), State: q.Get("state"), Iss: q.Get("iss")}, nil
	}
	h, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		DynamicClientRegistrationConfig: &auth.DynamicClientRegistrationConfig{Metadata: &oauthex.ClientRegistrationMetadata{
			RedirectURIs: []string{redirect}, TokenEndpointAuthMethod: "none", ClientName: "e2e go-sdk client",
			GrantTypes: []string{"authorization_code", "refresh_token"},
		}},
		AuthorizationCodeFetcher: fetcher,
	})
	if err != nil {
		t.Fatal(err)
	}
	return h, rec
}

// myOrgs is the part of list_my_orgs' result the tests read.
type myOrgs struct {
	Orgs []struct {
		OrgName string `json:"org_name"`
		Role    string `json:"role"`
	} `json:"orgs"`
}

// checkMyOrgs checks a list_my_orgs result for alice: Acme, as Admin.
func checkMyOrgs(t *testing.T, got myOrgs, isError bool) {
	t.Helper()
	if isError || len(got.Orgs) != 1 || got.Orgs[0].OrgName != "Acme" || got.Orgs[0].Role != "Admin" {
		t.Errorf("list_my_orgs = %+v (isError %v), want alice's org Acme as Admin", got, isError)
	}
}

// browser is the part of a web browser an OAuth login needs: a cookie jar, manual
// redirects, and submitting the page's form with its hidden fields.
type browser struct {
	client *http.Client
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browser{client: &http.Client{
		Jar:           jar,
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

var (
	formAction  = regexp.MustCompile(`<form[^>]*action="([^"]*)"`)
	hiddenInput = regexp.MustCompile(`<input[^>]*type="hidden"[^>]*>`)
	inputName   = regexp.MustCompile(`name="([^"]*)"`)
	inputValue  = regexp.MustCompile(`value="([^"]*)"`)
)

// authorize opens authURL and goes through whatever pages come, signing in as
// email and approving, until a redirect to redirectURI. It returns that redirect
// and the pages it filled in ("login", "consent").
func (b *browser) authorize(ctx context.Context, authURL, redirectURI, email, password string) (*url.URL, []string, error) {
	var visited []string
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	for range 8 {
		resp, err := b.client.Do(req)
		if err != nil {
			return nil, visited, err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); loc != "" {
			next, err := req.URL.Parse(loc)
			if err != nil {
				return nil, visited, err
			}
			if strings.HasPrefix(next.String(), redirectURI) {
				return next, visited, nil
			}
			req, _ = http.NewRequestWithContext(ctx, http.MethodGet, next.String(), nil)
			continue
		}
		if resp.StatusCode != http.StatusOK {
			return nil, visited, fmt.Errorf("%s %s: %s: %s", req.Method, req.URL, resp.Status, body)
		}
		page := string(body)
		m := formAction.FindStringSubmatch(page)
		if m == nil {
			return nil, visited, fmt.Errorf("no form on the page: %.300s", page)
		}
		action, err := req.URL.Parse(unescapeHTML(m[1]))
		if err != nil {
			return nil, visited, err
		}
		form := url.Values{}
		for _, in := range hiddenInput.FindAllString(page, -1) {
			name, value := inputName.FindStringSubmatch(in), inputValue.FindStringSubmatch(in)
			if name != nil && value != nil {
				form.Set(name[1], unescapeHTML(value[1]))
			}
		}
		switch {
		case form.Get("action") == "login":
			visited = append(visited, "login")
			form.Set("email", email)
			form.Set("password", password)
		case strings.Contains(page, `value="approve"`):
			visited = append(visited, "consent")
			form.Set("action", "approve")
		default:
			return nil, visited, fmt.Errorf("unexpected page: %.300s", page)
		}
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, action.String(), strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	return nil, visited, errors.New("authorization did not finish within 8 steps")
}

func unescapeHTML(s string) string {
	return strings.NewReplacer("&amp;", "&", "&#43;", "+", "&#34;", `"`, "&#39;", "'", "&lt;", "<", "&gt;", ">").Replace(s)
}
