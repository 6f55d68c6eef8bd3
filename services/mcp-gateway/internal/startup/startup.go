// Package startup assembles a gateway from its parts and serves it, in the
// one order both cmd/mcp-gateway and the test stack (package stacktest) run,
// so that what the tests start is what production starts.
//
// # Order
//
//  1. The tool set, and the federation of UPSTREAMS_FILE (package
//     federation): child processes started, the identity signing key
//     loaded.
//  2. The public listener (MCP_LISTEN) starts serving at once. Until the
//     gateway is built it answers only the identity JWKS
//     ({MCP_SERVER_URL}/.well-known/jwks.json); every other request waits
//     for the gateway, as it would in the listener's accept queue.
//  3. The upstreams' catalogs are fetched ([federation.Federation.Start]).
//     An upstream that verifies the gateway's identity assertions fetches the
//     JWKS from step 2 while it answers, so it is listed from the start
//     instead of after a retry. A clash of names stops the start.
//  4. The gateway is built and takes over the public listener; the
//     operational listener (MCP_METRICS_LISTEN), the decision cache's
//     invalidation watch and the catalog refresh loop start.
//
// # Stop
//
// When the context given to [Start] is done, the public listener drains its
// requests while the operational one still answers /metrics and /readyz; the
// operational one stops after, with its own short drain. The invalidation
// watch and the catalog refreshes run through the drain, as requests may
// still be forwarded, and the upstream connections close last
// ([Server.Wait]).
package startup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/audit"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/authzclient"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/config"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/decisioncache"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/federation"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/gateway"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/httperror"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/identity"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/metrics"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/ratelimit"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
)

// Options are the parts [Start] assembles. The caller builds the clients
// and closes them after [Server.Wait] returns.
type Options struct {
	Config  config.Config
	Logger  *slog.Logger
	Metrics *metrics.Metrics
	Authz   *authzclient.Client
	// RateLimiter, Audit and Tracer are optional (nil: off).
	RateLimiter *ratelimit.Limiter
	Audit       *audit.Logger
	Tracer      trace.Tracer
	// Listener is the public listener (MCP_LISTEN), already bounded by
	// MCP_MAX_CONNECTIONS; OpsListener the operational one
	// (MCP_METRICS_LISTEN), nil when Listener serves both.
	Listener    net.Listener
	OpsListener net.Listener
	// Drain and OpsDrain bound the listeners' drains at stop.
	Drain    time.Duration
	OpsDrain time.Duration
}

// Server is a gateway serving.
type Server struct {
	// Federation is the upstreams fronted; nil without UPSTREAMS_FILE.
	Federation *federation.Federation

	done chan struct{}
	err  error
}

// Start builds the gateway described by opts.Config and serves it on the
// listeners until ctx is done. It returns once the gateway itself serves,
// or the error that kept it from starting: an invalid UPSTREAMS_FILE (the
// error names it, and both upstreams of a clash, a
// *[federation.CollisionError]), or a listener failing. On error the
// listeners are closed and everything Start started has stopped.
func Start(ctx context.Context, opts Options) (_ *Server, err error) {
	cfg, logger := opts.Config, opts.Logger
	defer func() {
		if err != nil {
			opts.Listener.Close()
			if opts.OpsListener != nil {
				opts.OpsListener.Close()
			}
		}
	}()
	toolSet := tools.BuiltIn()
	var fed *federation.Federation
	if cfg.Upstreams != nil {
		var builtin []string
		if cfg.Upstreams.BuiltinTools {
			for _, t := range toolSet.All() {
				builtin = append(builtin, t.Name)
			}
		} else if toolSet, err = tools.NewSet(); err != nil {
			return nil, err
		}
		fed, err = federation.New(federation.Options{File: cfg.Upstreams, Issuer: cfg.ServerURL, Builtin: builtin, Logger: logger, Metrics: opts.Metrics})
		if err != nil {
			return nil, upstreamsError(cfg, err)
		}
	}

	// The public listener serves from here on, the JWKS first.
	front := &frontHandler{ready: make(chan struct{}), failed: make(chan struct{})}
	if fed != nil && fed.Signer() != nil {
		front.jwks = fed.Signer().JWKSHandler()
	}
	publicCtx, stopPublic := context.WithCancel(ctx)
	publicDone := make(chan error, 1)
	go func() {
		publicDone <- gateway.Serve(publicCtx, opts.Listener, front, logger.With("listener", "MCP_LISTEN"), opts.Drain)
	}()
	abort := func() {
		close(front.failed)
		stopPublic()
		<-publicDone
		if fed != nil {
			fed.Close()
		}
	}

	if fed != nil {
		if err := fed.Start(ctx); err != nil {
			abort()
			return nil, upstreamsError(cfg, err)
		}
	}
	gw, err := gateway.New(gateway.Options{Config: cfg, Authz: opts.Authz, Logger: logger, Metrics: opts.Metrics, RateLimiter: opts.RateLimiter,
		Tools: toolSet, Federation: fed, Audit: opts.Audit, Tracer: opts.Tracer,
		Invalidations: func(ctx context.Context) (decisioncache.Stream, error) { return opts.Authz.WatchInvalidations(ctx) }})
	if err != nil {
		abort()
		return nil, err
	}
	if opts.OpsListener == nil {
		front.set(gw.OneHandler())
	} else {
		front.set(gw)
	}

	s := &Server{Federation: fed, done: make(chan struct{})}
	opsCtx, stopOps := context.WithCancel(context.WithoutCancel(ctx))
	opsDone := make(chan error, 1)
	if opts.OpsListener == nil {
		opsDone <- nil
	} else {
		go func() {
			err := gateway.Serve(opsCtx, opts.OpsListener, gw.OpsHandler(), logger.With("listener", "MCP_METRICS_LISTEN"), opts.OpsDrain)
			stopPublic() // a failed operational listener takes the public one down
			opsDone <- err
		}()
	}
	// The invalidation watch and the catalog refreshes outlive ctx: they
	// stop once the listeners have drained.
	bgCtx, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	watched := make(chan struct{})
	go func() { defer close(watched); gw.Watch(bgCtx) }()
	followed := make(chan struct{})
	if fed != nil {
		go func() { defer close(followed); fed.Run(bgCtx) }()
	} else {
		close(followed)
	}
	go func() {
		defer close(s.done)
		err := <-publicDone
		stopPublic()
		stopOps()
		s.err = errors.Join(err, <-opsDone)
		stopBg()
		<-watched
		<-followed
		if fed != nil {
			if err := fed.Close(); err != nil {
				logger.Warn("closing the upstream connections", "error", err)
			}
		}
	}()
	return s, nil
}

// Wait waits until the gateway has stopped (the context given to [Start] is
// done, or a listener failed) and the upstream connections are closed. It
// returns the listeners' errors, joined: nil after a clean drain.
func (s *Server) Wait() error {
	<-s.done
	return s.err
}

// upstreamsError names UPSTREAMS_FILE in err, as every configuration error
// names its variable.
func upstreamsError(cfg config.Config, err error) error {
	return fmt.Errorf("invalid configuration: UPSTREAMS_FILE: %s: %w", cfg.UpstreamsFile, err)
}

// frontHandler serves the public listener while the gateway starts: the
// JWKS at once, anything else once the gateway is set (or 503 if the start
// fails), and then everything through the gateway.
type frontHandler struct {
	jwks   http.Handler // nil: no upstream uses identity: jwt
	ready  chan struct{}
	failed chan struct{}
	h      atomic.Pointer[http.Handler]
}

func (f *frontHandler) set(h http.Handler) {
	f.h.Store(&h)
	close(f.ready)
}

func (f *frontHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := f.h.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	if f.jwks != nil && r.Method == http.MethodGet && r.URL.Path == identity.JWKSPath {
		f.jwks.ServeHTTP(w, r)
		return
	}
	select {
	case <-f.ready:
		(*f.h.Load()).ServeHTTP(w, r)
	case <-f.failed:
		httperror.Response{Status: http.StatusServiceUnavailable, Description: "the gateway did not start", RetryAfter: gateway.RetryAfter}.Write(w)
	case <-r.Context().Done():
	}
}
