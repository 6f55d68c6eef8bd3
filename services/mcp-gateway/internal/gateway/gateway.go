// Package gateway is the gateway's HTTP surface: the OAuth-protected MCP
// endpoint, the metadata documents and the operational endpoints.
//
// # Routes
//
// The public handler ([Gateway.ServeHTTP], on MCP_LISTEN):
//
//   - POST /mcp and /mcp/ (no redirect): MCP streamable HTTP, go-sdk stateless.
//   - /.well-known/oauth-protected-resource/mcp and
//     /.well-known/oauth-protected-resource: RFC 9728 metadata.
//   - /.well-known/oauth-authorization-server: the authorization server's
//     metadata, proxied (package asmeta).
//   - /healthz (the process serves), for load balancers and container
//     healthchecks that only reach the public port.
//
// The operational handler ([Gateway.OpsHandler], on MCP_METRICS_LISTEN, an
// internal port as authz's AUTHZ_METRICS_LISTEN): /metrics (Prometheus),
// /healthz and /readyz (an authz replica is SERVING). They are not on the
// public listener: metrics name tools, decisions and error rates, and readiness
// probes authz, neither for the internet. With MCP_METRICS_LISTEN equal to
// MCP_LISTEN, [Gateway.OneHandler] serves both sets on one listener.
//
// # One MCP request
//
//  1. Origin (and, on loopback, Host) is checked against DNS rebinding; CORS
//     preflights are answered. Methods other than POST get 405: the server is
//     stateless, with no SSE stream to GET and no session to DELETE.
//  2. The bearer token is taken from the one Authorization header. A token in
//     the query string (access_token=) or several Authorization headers get 400
//     invalid_request (RFC 6750 §2 and §3.1: one method per request, never the
//     URL). No token, or another scheme, gets 401 with resource_metadata and
//     scope only. A value that is not an RFC 6750 b64token gets 401
//     invalid_token without a call to authz, as does an INVALID_ARGUMENT whose
//     google.rpc.BadRequest detail blames the token: either way the client
//     must obtain a new token, and a 400 would make some clients retry
//     forever. (An INVALID_ARGUMENT blaming anything else, the resource or
//     scopes the gateway wrote, or nothing, is the gateway's own fault: 500,
//     no challenge, and an ERROR log line, one per 10s at most.) All of this
//     reads headers only: these requests are answered before their body is
//     read, with Connection: close when one was announced, so that a body that
//     never comes holds nothing. Their challenges name every scope the server
//     supports (see Scopes below).
//  3. At most MCP_MAX_IN_FLIGHT requests go on from here at once; beyond it,
//     503 with Retry-After, still before the body is read.
//  4. The body is read (1 MiB bound, memory following the bytes received,
//     MCP_BODY_TIMEOUT from the headers, else 408 and the connection closed)
//     and the method and tool picked out (package mcpreq); the scopes needed
//     are SCOPES plus, for tools/call, the tool's declared scopes.
//  5. authz Authorize(token, {MCP_SERVER_URL}/mcp, scopes), with include_user
//     when the tool needs the user, and include_orgs only when the scopes
//     asked for include one that allows organizations (read:org_data): who_am_i
//     asks a second question with that scope added, and only when the token
//     may hold it (package operation), and shows no organizations otherwise.
//     Allowed: the request goes on to the go-sdk with the caller in its
//     TokenInfo. Insufficient scope: 403 insufficient_scope naming every scope
//     the operation needs. Any other denial: 401 invalid_token. authz
//     unreachable, UNAVAILABLE, a deadline, or any other error: 503 with
//     Retry-After, never 401, so clients keep their tokens through an outage.
//     With DECISION_CACHE_TTL above 0 (the default), an allowed decision is
//     kept and reused for the same token, scopes and user options (package
//     decisioncache) while authz's invalidation stream is up, never past
//     authz's own cached answer (reusable_until): the answer is the one authz
//     would give; nothing else changes. A decision the TTL ends sooner is
//     refreshed in the background from half its TTL on.
//  6. With RATE_LIMIT set, the allowed principal's budget is charged (package
//     ratelimit, shared across replicas through Redis); over it: 429 with
//     Retry-After. Only authorized requests are charged, so nobody can spend
//     another user's budget without their token.
//  7. With AUDIT_LOG set, a request that reached a decision in steps 2, 5 or
//     6 (allowed, or denied with 400, 401, 403, 429, 500 or 503) is written to
//     the audit log once answered (package audit); an allowed request's
//     context carries an [audit.Record] on which routing code names the
//     upstream.
//
// # Scopes
//
// A 401 (no token, or a token that is invalid, expired or for another
// resource) and the 400 of step 2 ask in their scope parameter for every scope
// the server supports: SCOPES and each tool's scopes, the metadata's
// scopes_supported. MCP clients request exactly what the first 401 names
// (MCP authorization, "Scope Selection Strategy", 2025-11-25 and 2026-07-28:
// the challenge's scope first, scopes_supported only without one; so do the
// go-sdk's AuthorizationCodeHandler and the TypeScript SDK's auth()), so a
// first login asks for every scope and the consent page shows them all; the
// user or the authorization server may grant fewer. Naming only SCOPES there
// left tools needing more invisible: tools/list hides what the token cannot
// call, so no client ever called them and met the 403 that starts step-up.
// The spec allows a challenge's scopes to be a superset of what the request
// needs. A 403 insufficient_scope still names exactly the operation's scopes,
// SCOPES included, so that a client re-authorizing with them alone (the
// TypeScript SDK; the go-sdk adds what it holds) keeps what every request
// needs (step-up).
package gateway

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/ratelog"
	"github.com/mcpauthz/mcpauthz/internal/scopes"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/asmeta"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/audit"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/caller"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/config"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/decisioncache"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/federation"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/httperror"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/identity"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/mcpreq"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/metrics"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/operation"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/ratelimit"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"go.opentelemetry.io/otel/trace"
)

// Authz is what the gateway needs from the authz service
// (authzclient.Client implements it).
type Authz interface {
	// Authorize returns authz's decision; errors are gRPC status errors.
	Authorize(ctx context.Context, req *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error)
	// GetUser returns a user; errors are gRPC status errors.
	GetUser(ctx context.Context, userID string, includeOrgs bool) (*authzv1.User, error)
	// Ready returns nil when authz is serving.
	Ready(ctx context.Context) error
}

// Options configures [New].
type Options struct {
	// Config is the validated configuration.
	Config config.Config
	// Authz answers authorization questions.
	Authz Authz
	// Logger receives the gateway's logs; discarded when nil.
	Logger *slog.Logger
	// Metrics records the gateway's metrics; a private set when nil.
	Metrics *metrics.Metrics
	// HTTPClient fetches the authorization server's metadata; a client with a
	// 5s timeout when nil.
	HTTPClient *http.Client
	// MaxBody bounds request bodies; [mcpreq.DefaultMaxBody] when zero.
	MaxBody int64
	// RateLimiter, if set, limits each principal's requests (RATE_LIMIT).
	RateLimiter *ratelimit.Limiter
	// Tools are the tools served (cmd/mcp-gateway passes tools.BuiltIn());
	// required, and may be empty.
	Tools *tools.Set
	// Tracer, if set, traces each MCP request as a server span, child of
	// the trace context the client sent (trace.go); nil, the default, traces
	// nothing and costs nothing.
	Tracer trace.Tracer
	// Audit, when set, receives one event per MCP request that reached a
	// decision (AUDIT_LOG); with Config.AuditLogArguments the events carry
	// the arguments themselves, not only their hash.
	Audit *audit.Logger
	// Invalidations opens authz's invalidation stream
	// (authzclient.Client.WatchInvalidations); required when
	// Config.DecisionCacheTTL is set, and run by [Gateway.Watch].
	Invalidations decisioncache.OpenFunc
	// Federation, if set (UPSTREAMS_FILE), is the upstream MCP servers
	// fronted: their entries are served beside Tools, requests for them are
	// forwarded, and the identity JWKS is served at
	// {MCP_SERVER_URL}/.well-known/jwks.json. Start it before New.
	Federation *federation.Federation
}

// RetryAfter is what a 503 tells clients to wait before retrying.
const RetryAfter = time.Second

// maxTokenLen bounds the bearer token accepted; real access tokens are far
// shorter, and authz would refuse a longer one anyway.
const maxTokenLen = 4096

// Gateway serves the gateway's routes. Create it once with [New].
type Gateway struct {
	cfg      config.Config
	authz    Authz
	log      *slog.Logger
	metrics  *metrics.Metrics
	maxBody  int64
	resource string
	origins  []string
	host     string
	ops      *operation.Table
	prm      []byte
	asmeta   *asmeta.Proxy
	mcp      http.Handler
	mux      *http.ServeMux // public routes
	opsMux   http.Handler   // operational routes
	limiter  *ratelimit.Limiter
	audit    *audit.Logger          // nil: AUDIT_LOG is off
	fed      *federation.Federation // nil: no UPSTREAMS_FILE

	// answers builds the challenged answers; its supported scopes are
	// scopes_supported, what 401 challenges ask for.
	answers     answers
	maxInFlight int64
	inFlight    atomic.Int64
	bodyTimeout time.Duration

	tracer trace.Tracer // nil: no spans

	decisions     *decisioncache.Cache // nil: DECISION_CACHE_TTL is off
	invalidations decisioncache.OpenFunc

	// badArgLog bounds the ERROR line for an INVALID_ARGUMENT authz blames
	// on the gateway's question: a misconfiguration fails every request.
	badArgLog ratelog.Limiter
}

// badArgLogEvery is the least time between two such ERROR lines.
const badArgLogEvery = 10 * time.Second

// New builds the gateway: the one go-sdk server with the tools of
// opts.Tools, the metadata documents, and the routes. It returns an error if
// an option required is missing, or if the configuration cannot be served
// with these tools (a *config.Error naming the variable).
func New(opts Options) (*Gateway, error) {
	cfg := opts.Config
	if opts.Authz == nil {
		return nil, errors.New("gateway: Options.Authz is nil")
	}
	if opts.Tools == nil {
		return nil, errors.New("gateway: Options.Tools is nil")
	}
	// authz refuses a question with more scopes than it accepts (as
	// INVALID_ARGUMENT): refuse the configuration now rather than fail every
	// request. The largest question is SCOPES plus every tool scope.
	toolScopes := opts.Tools.Scopes()
	if opts.Federation != nil {
		toolScopes = scopes.Union(toolScopes, opts.Federation.Scopes())
	}
	supported := scopes.Union(cfg.Scopes, toolScopes)
	if len(supported) > scopes.MaxCount {
		return nil, fmt.Errorf("invalid configuration: %w", &config.Error{Var: "SCOPES", Msg: fmt.Sprintf("names %d scopes; with the tools' own (%s) that is %d, and authz accepts at most %d in one request", len(cfg.Scopes), strings.Join(toolScopes, " "), len(supported), scopes.MaxCount)})
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	if opts.MaxBody <= 0 {
		opts.MaxBody = mcpreq.DefaultMaxBody
	}
	g := &Gateway{
		cfg:      cfg,
		authz:    opts.Authz,
		log:      opts.Logger,
		metrics:  opts.Metrics,
		maxBody:  opts.MaxBody,
		resource: cfg.Resource(),
		origins:  append([]string{cfg.ServerURL}, cfg.AllowedOrigins...),
		ops:      operation.NewTable(cfg.Scopes, opts.Tools.All()),
		limiter:  opts.RateLimiter,
		tracer:   opts.Tracer,
		audit:    opts.Audit,
		fed:      opts.Federation,

		answers:     newAnswers(cfg.ResourceMetadataURL(), supported),
		maxInFlight: int64(cmp.Or(max(cfg.MaxInFlight, 0), config.DefaultMaxInFlight)),
		bodyTimeout: cmp.Or(max(cfg.BodyTimeout, 0), config.DefaultBodyTimeout),

		badArgLog: ratelog.Limiter{Every: badArgLogEvery},
	}
	g.metrics.ObserveInFlight(g.inFlight.Load)
	if cfg.DecisionCacheTTL > 0 {
		if opts.Invalidations == nil {
			return nil, errors.New("gateway: Options.Invalidations is nil with a decision cache TTL")
		}
		g.decisions = decisioncache.New(decisioncache.Options{TTL: cfg.DecisionCacheTTL, Metrics: opts.Metrics, Logger: opts.Logger, Refresh: g.refreshDecision})
		g.invalidations = opts.Invalidations
	}
	if i := strings.Index(cfg.ServerURL, "://"); i >= 0 {
		g.host = cfg.ServerURL[i+3:]
	}

	prm, err := json.Marshal(&oauthex.ProtectedResourceMetadata{
		Resource:               g.resource,
		AuthorizationServers:   []string{cfg.AuthorizationServer},
		ScopesSupported:        g.answers.supported,
		BearerMethodsSupported: []string{"header"},
		ResourceName:           "mcpauthz MCP gateway",
	})
	if err != nil {
		return nil, fmt.Errorf("encoding protected resource metadata: %w", err)
	}
	g.prm = prm
	g.asmeta = asmeta.New(asmeta.Options{Issuer: cfg.AuthorizationServer, MetadataURL: cfg.ASMetadataURL, Client: opts.HTTPClient, Logger: opts.Logger})

	serverOpts := &mcp.ServerOptions{
		Logger: newSDKLogger(opts.Logger),
		// The same for every caller, so it names no tool: tools/list shows
		// each caller the tools its token's scopes allow.
		Instructions: "Tools about the signed-in user: identity, profile and organizations. tools/list shows the tools your access token's scopes allow; a call needing more scopes is refused with 403 insufficient_scope, and signing in again to grant them makes more tools appear.",
		Capabilities: &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{}},
	}
	installOpts := tools.InstallOptions{ListAll: cfg.ToolsListAll}
	if g.fed != nil {
		serverOpts.Instructions = "Tools, prompts and resources of the MCP servers behind this gateway. Lists show what your access token's scopes allow; a request needing more scopes is refused with 403 insufficient_scope, and signing in again to grant them makes more appear."
		// Stateless: no stream to announce list changes on, so listChanged
		// stays false; clients list again when they need to.
		serverOpts.Capabilities.Prompts = &mcp.PromptCapabilities{}
		serverOpts.Capabilities.Resources = &mcp.ResourceCapabilities{}
		serverOpts.Capabilities.Completions = &mcp.CompletionCapabilities{}
		// Completions about upstream prompts and templates are forwarded
		// before the SDK; any other reference is unknown.
		serverOpts.CompletionHandler = func(context.Context, *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "no prompt or resource template of that name"}
		}
		installOpts.Others = g.fed.ToolScopes
	}
	server := mcp.NewServer(&mcp.Implementation{Name: "mcpauthz-gateway", Title: "mcpauthz MCP gateway", Version: "1.0.0"}, serverOpts)
	opts.Tools.Install(server, &tools.Env{Users: opts.Authz, Logger: opts.Logger}, installOpts)
	if g.fed != nil {
		g.fed.Install(server, cfg.ToolsListAll)
	}
	streamable := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{
		Stateless:    true,
		JSONResponse: true,
		Logger:       opts.Logger,
		// The gateway checks Origin and Host itself (checkOrigin), allowing the
		// configured public host, which the SDK's loopback check would refuse
		// behind a reverse proxy on the same machine.
		DisableLocalhostProtection: true,
		MaxRequestBodyBytes:        opts.MaxBody,
	})
	// RequireBearerToken is the go-sdk's only way to put a TokenInfo where its
	// handlers find it (req.Extra.TokenInfo). By the time it runs, authz has
	// decided; the verifier just returns that decision, and the SDK's own expiry
	// check is neutralised because authz applied exp with its configured skew.
	g.mcp = auth.RequireBearerToken(func(ctx context.Context, _ string, _ *http.Request) (*auth.TokenInfo, error) {
		c := caller.FromContext(ctx)
		if c == nil {
			return nil, auth.ErrInvalidToken
		}
		return c.TokenInfo(), nil
	}, &auth.RequireBearerTokenOptions{AllowMissingExpiration: true, ClockSkew: 100 * 365 * 24 * time.Hour})(streamable)

	mux := http.NewServeMux()
	mux.HandleFunc("/mcp", g.serveMCP)
	mux.HandleFunc("/mcp/{$}", g.serveMCP)
	mux.HandleFunc("/.well-known/oauth-protected-resource", g.servePRM)
	mux.HandleFunc("/.well-known/oauth-protected-resource/mcp", g.servePRM)
	mux.Handle("/.well-known/oauth-authorization-server", g.asmeta)
	if g.fed != nil && g.fed.Signer() != nil {
		mux.Handle("GET "+identity.JWKSPath, g.fed.Signer().JWKSHandler())
	}
	mux.HandleFunc("GET /healthz", serveHealth)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httperror.Response{Status: http.StatusNotFound, Error: "not_found", Description: "no such endpoint; the MCP endpoint is /mcp"}.Write(w)
	})
	g.mux = mux

	ops := http.NewServeMux()
	ops.HandleFunc("GET /healthz", serveHealth)
	ops.HandleFunc("GET /readyz", g.serveReady)
	ops.Handle("GET /metrics", g.metrics.Handler())
	ops.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httperror.Response{Status: http.StatusNotFound, Error: "not_found", Description: "no such endpoint; this port serves /metrics, /healthz and /readyz"}.Write(w)
	})
	g.opsMux = ops
	return g, nil
}

func serveHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// OpsHandler serves the operational routes (/metrics, /healthz, /readyz), for
// the MCP_METRICS_LISTEN listener.
func (g *Gateway) OpsHandler() http.Handler { return g.opsMux }

// OneHandler serves the public and the operational routes together, for a
// gateway whose MCP_METRICS_LISTEN equals MCP_LISTEN.
func (g *Gateway) OneHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", g.opsMux)
	mux.Handle("GET /readyz", g.opsMux)
	mux.Handle("/", g.mux)
	return mux
}

// Watch follows authz's invalidation stream for the decision cache until ctx
// is done, reconnecting as needed; it returns at once when DECISION_CACHE_TTL
// is off. Until it has the stream, every request asks authz. Run it in its own
// goroutine, and stop it after [Serve] has drained: cached decisions stay
// valid for the requests still in flight only while the stream is followed.
func (g *Gateway) Watch(ctx context.Context) {
	if g.decisions == nil {
		return
	}
	g.decisions.Watch(ctx, g.invalidations)
}

// refreshDecision asks authz again for the decision cache's refresh-ahead,
// under AUTHZ_TIMEOUT like a request's call: authzclient applies it too, but
// an Authz need not, and a refresh holds a token in memory until it ends.
func (g *Gateway) refreshDecision(ctx context.Context, req *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) {
	if g.cfg.AuthzTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.cfg.AuthzTimeout)
		defer cancel()
	}
	return g.authz.Authorize(ctx, req)
}

// ServeHTTP serves the public routes (see the package documentation).
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.mux.ServeHTTP(w, r) }

func (g *Gateway) servePRM(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	switch r.Method {
	case http.MethodOptions:
		w.Header().Set("Access-Control-Allow-Methods", "GET, OPTIONS")
		w.Header().Set("Access-Control-Allow-Headers", "*")
		w.Header().Set("Access-Control-Max-Age", "86400")
		w.WriteHeader(http.StatusNoContent)
	case http.MethodGet, http.MethodHead:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		w.Header().Set("Content-Length", strconv.Itoa(len(g.prm)))
		if r.Method == http.MethodGet {
			_, _ = w.Write(g.prm)
		}
	default:
		w.Header().Set("Allow", "GET, HEAD, OPTIONS")
		httperror.Response{Status: http.StatusMethodNotAllowed, Description: "use GET"}.Write(w)
	}
}

func (g *Gateway) serveReady(w http.ResponseWriter, r *http.Request) {
	if err := g.authz.Ready(r.Context()); err != nil {
		g.log.WarnContext(r.Context(), "not ready", "error", err)
		httperror.Response{Status: http.StatusServiceUnavailable, Description: "authz is not reachable", RetryAfter: RetryAfter}.Write(w)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ready\n"))
}

// clientIP is the peer address, for logs.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
