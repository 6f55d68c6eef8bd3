// Package oauth implements devauth's OAuth 2.1 authorization server with
// PropelAuth's MCP paths and wire formats: metadata (RFC 8414), dynamic client
// registration (RFC 7591), Client ID Metadata Documents, the authorization
// endpoint with login and consent pages, the token endpoint (authorization
// code with PKCE S256, rotating refresh tokens) and revocation (RFC 7009). The
// introspection endpoint (RFC 7662) is the shared PropelAuth backend's
// (propelauthfake); this package answers it from the store ([Server.Introspect]).
//
// # Errors
//
// Token, introspection, revocation and registration errors are JSON bodies
// of the form {"error": "...", "error_description": "..."} with the status
// codes RFC 6749 section 5.2 and RFC 7591 section 3.2.2 prescribe. Errors at
// /authorize are shown as an HTML page while the redirect URI is not yet
// trusted, and redirected to the client afterwards (RFC 6749 section 4.1.2.1).
package oauth

import (
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/mcpauthz/mcpauthz/services/devauth/internal/redirects"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/stats"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/store"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/users"
)

// Paths served under the base URL.
const (
	PathPrefix         = "/oauth/2.1"
	PathAuthorize      = PathPrefix + "/authorize"
	PathToken          = PathPrefix + "/token"
	PathRegister       = PathPrefix + "/register"
	PathIntrospect     = PathPrefix + "/introspect"
	PathRevoke         = PathPrefix + "/revoke"
	PathJWKS           = PathPrefix + "/jwks"
	PathMetadata       = "/.well-known/oauth-authorization-server" + PathPrefix
	PathOpenIDMetadata = "/.well-known/openid-configuration" + PathPrefix
)

// Lifetimes that are not configurable: short codes limit the damage of a
// leaked redirect, refresh tokens outlive access tokens so clients rarely
// have to log in again.
const (
	CodeTTL    = 2 * time.Minute
	RefreshTTL = 30 * 24 * time.Hour
	SessionTTL = 12 * time.Hour
)

// Options configure the [Server].
type Options struct {
	// BaseURL is the public base URL without trailing slash.
	BaseURL string
	// Scopes are the scopes clients may request.
	Scopes []string
	// TokenTTL is the access-token lifetime.
	TokenTTL time.Duration
	// ValidationClientID and ValidationClientSecret authenticate introspection.
	ValidationClientID     string
	ValidationClientSecret string
	// AutoApprove, if set, is the email of the user /authorize signs in and
	// consents for without any page.
	AutoApprove string
	// Users is the user directory.
	Users *users.Directory
	// Store holds clients, codes and tokens.
	Store *store.Store
	// Counters count issued tokens.
	Counters *stats.Counters
	// Logger receives request-level logs; never raw secrets.
	Logger *slog.Logger
	// HTTPClient fetches Client ID Metadata Documents; nil uses a client with
	// a short timeout that refuses redirects.
	HTTPClient *http.Client
	// LoginHint, if set, is shown under the login form (the seeded logins).
	LoginHint string
	// AllowLoopbackMetadata permits http:// client_id URLs on loopback hosts,
	// and fetching metadata documents from loopback addresses, so tests can
	// serve a metadata document from httptest.
	AllowLoopbackMetadata bool
	// Sessions bounds the login sessions; zero fields take
	// [DefaultSessionLimits].
	Sessions SessionLimits
	// Logins throttles failed sign-ins; zero fields take [DefaultLoginLimits].
	Logins LoginLimits
	// AllowedRedirects is the allow list every client's redirect URIs must be
	// on, whatever registered the client; nil allows every valid URI.
	AllowedRedirects *redirects.AllowList
	// ScopeDescriptions say on the consent page what each scope allows.
	ScopeDescriptions map[string]string
	// DCR turns dynamic client registration on.
	DCR bool
	// TokenAuthMethods are the token endpoint authentication methods
	// advertised and accepted; nil means [AuthMethods].
	TokenAuthMethods []string
}

// Server holds the handlers' shared state.
type Server struct {
	opts     Options
	issuer   string
	log      *slog.Logger
	sessions *sessions
	logins   *loginThrottle
	cimd     *metadataResolver
}

// New returns a Server. opts.Store and opts.Users are required. It starts
// nothing in the background.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Counters == nil {
		opts.Counters = &stats.Counters{}
	}
	if opts.TokenAuthMethods == nil {
		opts.TokenAuthMethods = AuthMethods
	}
	return &Server{
		opts:     opts,
		issuer:   opts.BaseURL + PathPrefix,
		log:      opts.Logger,
		sessions: newSessions(opts.Store.Now, opts.Sessions, strings.HasPrefix(opts.BaseURL, "https://")),
		logins:   newLoginThrottle(opts.Logins, opts.Users.Len(), opts.Store.Now),
		cimd:     newMetadataResolver(opts.HTTPClient, opts.AllowLoopbackMetadata, opts.Store.Now, opts.Scopes, opts.Logger),
	}
}

// Issuer returns the issuer identifier, {base}/oauth/2.1.
func (s *Server) Issuer() string { return s.issuer }

// Register adds every OAuth route to mux except introspection, which the
// PropelAuth backend serves at PathIntrospect.
func (s *Server) Register(mux *http.ServeMux) {
	// Browser-based clients (MCP Inspector) call discovery, registration,
	// token and revocation with fetch from their own origin, so those answer
	// CORS. They use no cookies, so "*" exposes nothing. /authorize is a
	// navigation, and introspection is server-to-server, so neither does.
	public := func(pattern string, h http.HandlerFunc) {
		mux.Handle(pattern, cors(h))
		mux.Handle("OPTIONS "+pattern[strings.Index(pattern, " ")+1:], cors(nil))
	}
	public("GET "+PathMetadata, s.metadata)
	public("GET "+PathOpenIDMetadata, s.openIDMetadata)
	public("GET "+PathJWKS, s.jwks)
	public("POST "+PathRegister, s.register)
	public("POST "+PathToken, s.token)
	public("POST "+PathRevoke, s.revoke)
	mux.HandleFunc("GET "+PathAuthorize, s.authorize)
	mux.HandleFunc("POST "+PathAuthorize, s.authorizeSubmit)
}

// cors adds CORS headers; with a nil handler it answers a preflight.
func cors(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Access-Control-Allow-Origin", "*")
		if h == nil {
			hd.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
			hd.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, MCP-Protocol-Version")
			hd.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h(w, r)
	})
}
