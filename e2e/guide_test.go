package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// cursorRedirect is the redirect URI Cursor uses with the client of its
// mcp.json "auth" block.
const cursorRedirect = "cursor://anysphere.cursor-mcp/oauth/callback"

// guideMCPJSON is the part of the banner's mcp.json the tests read.
type guideMCPJSON struct {
	MCPServers map[string]struct {
		URL  string `json:"url"`
		Auth struct {
			ClientID     string   `json:"CLIENT_ID"`
			ClientSecret string   `json:"CLIENT_SECRET"`
			Scopes       []string `json:"scopes"`
		} `json:"auth"`
	} `json:"mcpServers"`
}

var bannerClientLine = regexp.MustCompile(`(?m)^    Client ID:     (\S+)\n(?:    Client secret: (\S+)   \(confidential|    No secret \(public)`)

// checkGuideClient reads the pre-registered client and the Cursor mcp.json
// that run-stack.sh printed in out, checks they agree with each other and
// with what is wanted, then does what a user does with them: Cursor's
// OAuth flow (the go-sdk client with that fixed client ID and secret, no
// registration, Cursor's redirect URI and the mcp.json's scopes) through the
// gateway and devauth's login and consent pages, and a who_am_i call with
// the token.
func checkGuideClient(t *testing.T, out, mcpURL, wantID, wantSecret string) {
	t.Helper()
	m := bannerClientLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the banner names no pre-registered client (Client ID: ..., then its secret or No secret):\n%s", out)
	}
	if m[1] != wantID || m[2] != wantSecret {
		t.Errorf("banner: client %q, secret %q; want %q, %q", m[1], m[2], wantID, wantSecret)
	}
	const header = "  Cursor with that client, as PropelAuth's MCP guide sets it up (~/.cursor/mcp.json):\n"
	_, rest, ok := strings.Cut(out, header)
	if !ok {
		t.Fatalf("the banner has no line %q", header)
	}
	var block strings.Builder
	for _, line := range strings.Split(rest, "\n") {
		body, ok := strings.CutPrefix(line, "    ")
		if !ok {
			break
		}
		block.WriteString(body + "\n")
	}
	var doc guideMCPJSON
	if err := json.Unmarshal([]byte(block.String()), &doc); err != nil {
		t.Fatalf("the banner's mcp.json is not JSON: %v\n%s", err, block.String())
	}
	srv, ok := doc.MCPServers["mcpauthz"]
	if len(doc.MCPServers) != 1 || !ok || srv.URL != mcpURL {
		t.Fatalf("the banner's mcp.json: %+v, want one server mcpauthz at %s", doc, mcpURL)
	}
	if srv.Auth.ClientID != wantID || srv.Auth.ClientSecret != wantSecret || len(srv.Auth.Scopes) == 0 {
		t.Errorf("its auth block %+v, want client %q, secret %q and scopes", srv.Auth, wantID, wantSecret)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	creds := &oauthex.ClientCredentials{ClientID: srv.Auth.ClientID}
	if srv.Auth.ClientSecret != "" {
		creds.ClientSecretAuth = &oauthex.ClientSecretAuth{ClientSecret: srv.Auth.ClientSecret}
	}
	b := newBrowser(t)
	var pages []string
	h, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		PreregisteredClient: creds,
		RedirectURL:         cursorRedirect,
		// Cursor asks for the scopes its mcp.json lists.
		ScopeFilter: func([]string) []string { return srv.Auth.Scopes },
		AuthorizationCodeFetcher: func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
			if u, err := url.Parse(args.URL); err != nil || u.Query().Get("client_id") != wantID {
				return nil, fmt.Errorf("authorization URL %s is not for client %s", args.URL, wantID)
			}
			// The browser stops at the redirect to cursor://, where it would
			// hand the code to Cursor.
			loc, visited, err := b.authorize(ctx, args.URL, cursorRedirect, aliceEmail, seedusers.AlicePassword)
			pages = visited
			if err != nil {
				return nil, err
			}
			q := loc.Query()
			if e := q.Get("error"); e != "" {
				return nil, fmt.Errorf("authorization error %s: %s", e, q.Get("error_description"))
			}
			return &auth.AuthorizationResult{Code: q.Get("code"), State: q.Get("state"), Iss: q.Get("iss")}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-cursor-like", Version: "1.0.0"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: srv.URL, OAuthHandler: h}, nil)
	if err != nil {
		t.Fatalf("connecting with the banner's client: %v (pages: %v)", err, pages)
	}
	defer cs.Close()
	if diff := cmp.Diff([]string{"login", "consent"}, pages); diff != "" {
		t.Errorf("pages the browser filled in (-want +got):\n%s", diff)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "who_am_i", Arguments: map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	who, _ := res.StructuredContent.(map[string]any)
	if res.IsError || who["subject"] != aliceID || who["client_id"] != wantID {
		t.Errorf("who_am_i = %v (isError %v), want alice through client %s", res.StructuredContent, res.IsError, wantID)
	}
}
