// Package server wires devauth's handlers into one http.Handler: the OAuth
// endpoints, PropelAuth's backend endpoints (introspection and the user API,
// served by the shared propelauthfake backend over devauth's store and user
// directory), the optional test API and /healthz.
package server

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/faults"
	"github.com/mcpauthz/mcpauthz/internal/propelauthfake"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/config"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/oauth"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/redirects"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/stats"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/store"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/testapi"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/users"
)

// Options tune a [Server] beyond the configuration; the zero value is fine
// for production use.
type Options struct {
	// Now replaces the clock (tests).
	Now func() time.Time
	// Limits caps the store; zero fields take store.DefaultLimits.
	Limits store.Limits
	// HTTPClient fetches Client ID Metadata Documents.
	HTTPClient *http.Client
	// AllowLoopbackMetadata permits http:// client_id URLs on loopback hosts.
	AllowLoopbackMetadata bool
	// LoginHint is shown under the login form.
	LoginHint string
	// Sessions bounds the login sessions; zero fields take
	// oauth.DefaultSessionLimits.
	Sessions oauth.SessionLimits
	// Logins throttles failed sign-ins; zero fields take
	// oauth.DefaultLoginLimits.
	Logins oauth.LoginLimits
	// ReadTimeout bounds reading one request, body included; zero is
	// [DefaultReadTimeout].
	ReadTimeout time.Duration
}

// Limits of devauth's HTTP server. ReadTimeout bounds reading a whole
// request, so a client that trickles its body holds a connection for at most
// that long; handlers that wait (injected latency) read the body first, and
// the deadline does not apply to writing the answer. No endpoint takes a
// body larger than MaxRequestBody.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	MaxRequestBody           = 64 << 10
)

// Server is an assembled devauth.
type Server struct {
	Handler  http.Handler
	Store    *store.Store
	Counters *stats.Counters
	Faults   *faults.Injector
	OAuth    *oauth.Server

	readTimeout time.Duration
}

// New assembles devauth from a validated configuration ([config.Load]) and
// user directory. It panics if cfg was not validated.
func New(cfg config.Config, dir *users.Directory, logger *slog.Logger, opts Options) *Server {
	st := store.New(opts.Now, opts.Limits)
	allowed, err := redirects.NewAllowList(cfg.MCP.AllowedRedirectURIs)
	if err != nil {
		panic(fmt.Sprintf("server.New: configuration not validated: %v", err))
	}
	for _, c := range preregistered(cfg.MCP.Clients) {
		if err := st.AddClient(c); err != nil {
			panic(fmt.Sprintf("server.New: adding client %s: %v", c.ID, err))
		}
	}
	counters := &stats.Counters{}
	inj := faults.New()
	oa := oauth.New(oauth.Options{
		BaseURL:                cfg.BaseURL,
		Scopes:                 cfg.Scopes,
		TokenTTL:               cfg.TokenTTL,
		ValidationClientID:     cfg.ValidationClientID,
		ValidationClientSecret: cfg.ValidationClientSecret,
		AutoApprove:            cfg.AutoApprove,
		Users:                  dir,
		Store:                  st,
		Counters:               counters,
		Logger:                 logger,
		HTTPClient:             opts.HTTPClient,
		AllowLoopbackMetadata:  opts.AllowLoopbackMetadata,
		LoginHint:              opts.LoginHint,
		Sessions:               opts.Sessions,
		Logins:                 opts.Logins,
		AllowedRedirects:       allowed,
		ScopeDescriptions:      cfg.MCP.ScopeDescriptions,
		DCR:                    cfg.MCP.DCR,
		TokenAuthMethods:       cfg.MCP.TokenAuthMethods,
	})

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	backend := propelauthfake.NewBackend(propelauthfake.Options{
		ClientID:     cfg.ValidationClientID,
		ClientSecret: cfg.ValidationClientSecret,
		APIKey:       cfg.APIKey,
		Tokens:       oa,
		Users:        dir,
		Faults:       inj,
		Counters:     &counters.Counters,
		Realm:        "devauth",
	})
	if cfg.MCP.Enabled {
		oa.Register(mux)
		mux.Handle(propelauthfake.IntrospectPattern, backend.IntrospectHandler())
	}
	mux.Handle(propelauthfake.UserPattern, backend.UserHandler())
	if cfg.TestAPI {
		testapi.Register(mux, testapi.Deps{
			APIKey: cfg.APIKey, Users: dir, Store: st, Counters: counters, Faults: inj, Logger: logger,
		})
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = DefaultReadTimeout
	}
	return &Server{
		Handler:     logRequests(logger, limitBody(mux)),
		Store:       st,
		Counters:    counters,
		Faults:      inj,
		OAuth:       oa,
		readTimeout: opts.ReadTimeout,
	}
}

// preregistered turns the configuration's OAuth clients into store clients.
// Only a secret's hash is kept, as for clients registered through DCR.
func preregistered(clients []config.Client) []store.Client {
	out := make([]store.Client, 0, len(clients))
	for _, c := range clients {
		sc := store.Client{
			ID: c.ID, Name: c.Name, RedirectURIs: c.RedirectURIs, TokenEndpointAuthMethod: config.AuthNone,
			GrantTypes: []string{"authorization_code", "refresh_token"}, ResponseTypes: []string{"code"},
			Scope: strings.Join(c.Scopes, " "), Preregistered: true,
		}
		if c.Confidential {
			sc.TokenEndpointAuthMethod = config.AuthBasic
			sc.SecretHash = store.HashSecret(c.Secret)
		}
		out = append(out, sc)
	}
	return out
}

// HTTPServer returns the http.Server to serve s with: its timeouts bound
// how long a client can hold a connection without completing a request.
// errorLog receives the server's own errors (failed TLS handshakes, panics).
func (s *Server) HTTPServer(errorLog *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           s.Handler,
		ReadHeaderTimeout: DefaultReadHeaderTimeout,
		ReadTimeout:       s.readTimeout,
		IdleTimeout:       DefaultIdleTimeout,
		ErrorLog:          slog.NewLogLogger(errorLog.Handler(), slog.LevelWarn),
	}
}

// limitBody caps every request body at MaxRequestBody, whatever the handler
// does with it; endpoints with a smaller bound apply their own as well.
func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, MaxRequestBody)
		next.ServeHTTP(w, r)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Hijack and Flush.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// logRequests logs method, path, status and duration at debug level. The
// query string is left out: it carries authorization codes and state.
func logRequests(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		logger.LogAttrs(r.Context(), slog.LevelDebug, "request",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", rec.status), slog.Duration("duration", time.Since(start)))
	})
}
