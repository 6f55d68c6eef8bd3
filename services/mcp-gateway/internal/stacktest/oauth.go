package stacktest

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// RedirectURL is the redirect URI test clients register. Nothing listens there:
// devauth's auto-approve redirects to it at once and [AutoApprove] reads the
// code from the Location header.
const RedirectURL = "http://127.0.0.1:53682/callback"

// AutoApprove is an auth.AuthorizationCodeFetcher for devauth with
// DEVAUTH_AUTO_APPROVE: it follows the authorization URL's redirects without a
// browser and returns the code, state and iss from the redirect to
// RedirectURL. It records the requested scopes in *scopes, if not nil.
func AutoApprove(client *http.Client, scopes *[]string) auth.AuthorizationCodeFetcher {
	return func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
		noFollow := *client
		noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		next := args.URL
		if scopes != nil {
			if u, err := url.Parse(next); err == nil {
				*scopes = strings.Fields(u.Query().Get("scope"))
			}
		}
		for range 5 {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, next, nil)
			if err != nil {
				return nil, err
			}
			res, err := noFollow.Do(req)
			if err != nil {
				return nil, err
			}
			res.Body.Close()
			loc, err := res.Location()
			if err != nil {
				return nil, fmt.Errorf("%w: %s answered %s", ErrNoCode, next, res.Status)
			}
			if strings.HasPrefix(loc.String(), RedirectURL) {
				q := loc.Query()
				if e := q.Get("error"); e != "" {
					return nil, fmt.Errorf("authorization failed: %s: %s", e, q.Get("error_description"))
				}
				return &auth.AuthorizationResult{Code: q.Get("code"), State: q.Get("state"), Iss: q.Get("iss")}, nil
			}
			next = loc.String()
		}
		return nil, fmt.Errorf("%w: too many redirects", ErrNoCode)
	}
}

// Recorder is an http.RoundTripper that logs "METHOD path -> status" for every
// request, so a test can check the steps an OAuth flow took, and keeps the
// bearer tokens the client sent, so a test can look for them where they must
// not be.
type Recorder struct {
	Base http.RoundTripper

	mu     sync.Mutex
	steps  []string
	tokens []string
}

// RoundTrip implements http.RoundTripper.
func (r *Recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	base := r.Base
	if base == nil {
		base = http.DefaultTransport
	}
	res, err := base.RoundTrip(req)
	if tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer "); ok && tok != "" {
		r.mu.Lock()
		if !slices.Contains(r.tokens, tok) {
			r.tokens = append(r.tokens, tok)
		}
		r.mu.Unlock()
	}
	step := req.Method + " " + req.URL.Path
	if err != nil {
		step += " -> error"
	} else {
		step += fmt.Sprintf(" -> %d", res.StatusCode)
	}
	r.mu.Lock()
	r.steps = append(r.steps, step)
	r.mu.Unlock()
	return res, err
}

// Steps returns the requests recorded so far.
func (r *Recorder) Steps() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.steps...)
}

// Tokens returns the bearer tokens sent so far, each once.
func (r *Recorder) Tokens() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.tokens)
}

// OAuthClient is a go-sdk MCP client that authorizes itself against devauth
// with auth.AuthorizationCodeHandler: discovery, dynamic client registration,
// PKCE authorization (auto-approved) and token exchange.
type OAuthClient struct {
	Handler  *auth.AuthorizationCodeHandler
	Recorder *Recorder
	// Requested holds the scopes of the latest authorization request.
	Requested []string
}

// NewOAuthClient returns an unauthorized OAuth client; it authorizes on its
// first 401. With firstScopes, its first authorization asks for those scopes
// only, whatever the server names, as when a user grants less than asked at
// the first consent; later ones (step-up) ask for what the server names.
func NewOAuthClient(tb testing.TB, firstScopes ...string) *OAuthClient {
	tb.Helper()
	c := &OAuthClient{Recorder: &Recorder{}}
	hc := &http.Client{Transport: c.Recorder}
	var authorized atomic.Bool
	h, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		ScopeFilter: func(discovered []string) []string {
			if len(firstScopes) == 0 || authorized.Swap(true) {
				return discovered
			}
			return firstScopes
		},
		DynamicClientRegistrationConfig: &auth.DynamicClientRegistrationConfig{
			Metadata: &oauthex.ClientRegistrationMetadata{
				ClientName:              "mcp-gateway test client",
				RedirectURIs:            []string{RedirectURL},
				GrantTypes:              []string{"authorization_code", "refresh_token"},
				ResponseTypes:           []string{"code"},
				TokenEndpointAuthMethod: "none",
			},
		},
		RedirectURL:              RedirectURL,
		AuthorizationCodeFetcher: AutoApprove(hc, &c.Requested),
		Client:                   hc,
	})
	if err != nil {
		tb.Fatal(err)
	}
	c.Handler = h
	return c
}

// Connect opens an MCP session to endpoint with protocol version (the SDK's
// latest when empty).
func (c *OAuthClient) Connect(ctx context.Context, endpoint, version string) (*mcp.ClientSession, error) {
	return c.ConnectWith(ctx, endpoint, version, nil)
}

// ConnectWith is [OAuthClient.Connect] with client options (notification
// handlers).
func (c *OAuthClient) ConnectWith(ctx context.Context, endpoint, version string, opts *mcp.ClientOptions) (*mcp.ClientSession, error) {
	client := mcp.NewClient(&mcp.Implementation{Name: "mcp-gateway-test", Version: "1.0.0"}, opts)
	t := &mcp.StreamableClientTransport{
		Endpoint:             endpoint,
		HTTPClient:           &http.Client{Transport: c.Recorder},
		OAuthHandler:         c.Handler,
		DisableStandaloneSSE: true,
		MaxRetries:           -1,
	}
	var sessOpts *mcp.ClientSessionOptions
	if version != "" {
		sessOpts = &mcp.ClientSessionOptions{ProtocolVersion: version}
	}
	return client.Connect(ctx, t, sessOpts)
}
