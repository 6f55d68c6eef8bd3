// Package app assembles authz from its configuration: caches, clients, the gRPC
// server (AuthzService, health, reflection) and the metrics/health HTTP server, and
// runs them until the context ends, then shuts down gracefully.
//
// # Shutdown
//
// When the context ends: gRPC health turns NOT_SERVING and /healthz, /readyz answer
// 503 (load balancers stop sending), in-flight RPCs get ShutdownTimeout to finish
// (GracefulStop) while WatchInvalidations streams, which would otherwise stay open
// for as long as their callers, are ended at once; then the server is stopped
// hard; the HTTP server and Redis client are closed last.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/tracing"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/admission"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/ashttp"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/config"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/decision"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/introspect"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/metrics"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/mtls"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/rediscache"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/server"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/tokencache"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/users"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/watch"
)

// Names of the client spans of the calls to the authorization server.
const (
	SpanIntrospect = "introspect token"
	SpanFetchUser  = "fetch user"
)

// Options are knobs that are not configuration: tests use them.
type Options struct {
	Logger *slog.Logger
	// ShutdownTimeout bounds graceful stop; default 5s.
	ShutdownTimeout time.Duration
	// UserRetryBackoff and UserMaxRetryWait tune 429 retries (see users.ClientConfig).
	UserRetryBackoff time.Duration
	UserMaxRetryWait time.Duration
	// RedisBackoff is how long Redis is skipped after a failure (default 500ms).
	RedisBackoff time.Duration
}

// App is one authz instance.
type App struct {
	cfg     config.Config
	o       Options
	logger  *slog.Logger
	Metrics *metrics.Metrics
	store   *rediscache.Store
	tokens  *tokencache.Cache
	users   *users.Service
	watch   *watch.Hub
	grpc    *grpc.Server
	health  *health.Server
	http    *http.Server
	serving atomic.Bool
}

// New builds an instance. It does not listen or contact anything yet. It returns an
// error only for configuration the config package could not catch.
func New(cfg config.Config, o Options) (*App, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 5 * time.Second
	}
	a := &App{cfg: cfg, o: o, logger: o.Logger, Metrics: metrics.New()}
	a.watch = watch.New(watch.Options{Watchers: a.Metrics.WatchStreams, Overflows: a.Metrics.WatchOverflows})
	if cfg.RedisURL != "" {
		st, err := rediscache.New(cfg.RedisURL, rediscache.Options{Logger: a.logger, Metrics: a.Metrics, Backoff: o.RedisBackoff, OpTimeout: cfg.RedisTimeout})
		if err != nil {
			return nil, err
		}
		a.store = st
	}
	// One transport for both APIs of the authorization server: INTROSPECTION_MAX_CONNS
	// bounds the connections to its host, whichever API they serve.
	transport := ashttp.NewTransport(cfg.IntrospectTimeout, cfg.MaxConns)
	// With tracing on, each client's requests are spans of their own name
	// over the one shared pool.
	ic, err := introspect.NewClient(introspect.Config{
		Endpoint:     cfg.IntrospectionURL,
		ClientID:     cfg.ClientID,
		ClientSecret: cfg.ClientSecret,
		AuthMethod:   introspect.AuthMethod(cfg.IntrospectionAuth),
		Timeout:      cfg.IntrospectTimeout,
		Transport:    tracing.Transport(transport, SpanIntrospect),
	})
	if err != nil {
		return nil, fmt.Errorf("creating introspection client: %w", err)
	}
	// Introspections and user lookups each get INTROSPECTION_MAX_IN_FLIGHT, so a
	// flood of unknown user IDs cannot starve token checks, nor the reverse.
	limiter := func(upstream string) (*admission.Limiter, error) {
		return admission.New(admission.Options{
			Max:      cfg.MaxInFlight,
			InFlight: a.Metrics.UpstreamInFlight.WithLabelValues(upstream),
			Rejected: a.Metrics.UpstreamRejected.WithLabelValues(upstream),
		})
	}
	introspections, err := limiter(metrics.UpstreamIntrospection)
	if err != nil {
		return nil, err
	}
	userCalls, err := limiter(metrics.UpstreamUser)
	if err != nil {
		return nil, err
	}
	a.tokens, err = tokencache.New(tokencache.Options{
		Fetcher:     ic,
		L1Max:       cfg.L1MaxEntries,
		Store:       a.store,
		CacheTTL:    cfg.CacheTTL,
		NegativeTTL: cfg.NegativeCacheTTL,
		ClockSkew:   cfg.ClockSkew,
		Limiter:     introspections,
		// Longer than any fetch that may have read the authorization server
		// before a revocation, with room for a stalled process.
		TombstoneTTL: cfg.IntrospectTimeout + cfg.RedisTimeout + 5*time.Second,
		Logger:       a.logger,
		Metrics:      a.Metrics,
		// Every invalidation this replica hears of, and every time it may have
		// missed some, reaches the WatchInvalidations streams.
		OnInvalidate: a.watch.Publish,
		OnReset:      a.watch.Reset,
	})
	if err != nil {
		return nil, err
	}
	uc, err := users.NewClient(users.ClientConfig{
		AuthURL:      cfg.AuthURL,
		APIKey:       cfg.APIKey,
		Timeout:      cfg.IntrospectTimeout,
		BaseBackoff:  o.UserRetryBackoff,
		MaxRetryWait: o.UserMaxRetryWait,
		Transport:    tracing.Transport(transport, SpanFetchUser),
		Logger:       a.logger,
		Metrics:      a.Metrics,
	})
	if err != nil {
		return nil, fmt.Errorf("creating user client: %w", err)
	}
	us, err := users.NewService(users.ServiceOptions{
		Client:      uc,
		TTL:         cfg.UserCacheTTL,
		NegativeTTL: cfg.UserNegativeCacheTTL,
		L1Max:       min(cfg.L1MaxEntries, 10_000),
		Store:       a.store,
		Limiter:     userCalls,
		Logger:      a.logger,
		Metrics:     a.Metrics,
	})
	if err != nil {
		return nil, err
	}
	a.users = us
	srv := server.New(server.Options{
		Tokens:  a.tokens,
		Users:   us,
		Policy:  &decision.Policy{Issuer: cfg.Issuer, Skew: cfg.ClockSkew, Hierarchy: cfg.ScopeHierarchy},
		Metrics: a.Metrics,
		Watch:   a.watch,
		Logger:  a.logger,
	})
	unary := []grpc.UnaryServerInterceptor{server.UnaryInterceptor(a.Metrics, a.logger)}
	stream := []grpc.StreamServerInterceptor{server.StreamInterceptor(a.Metrics, a.logger)}
	if cfg.TLS != nil && cfg.TLS.ClientCAs != nil {
		// Inside the metrics interceptors, so PERMISSION_DENIED is counted.
		// WatchInvalidations is not restricted: it carries only token hashes,
		// which are useful only to a caller that already has the token, and the
		// callers that keep decisions need it to drop them in time.
		restricted := map[string][]string{}
		if len(cfg.GetUserCallers) > 0 {
			restricted[authzv1.AuthzService_GetUser_FullMethodName] = cfg.GetUserCallers
		}
		if len(cfg.InvalidateCallers) > 0 {
			restricted[authzv1.AuthzService_InvalidateToken_FullMethodName] = cfg.InvalidateCallers
		}
		u, st := mtls.Interceptors(mtls.Options{Restricted: restricted, Logger: a.logger, Metrics: a.Metrics})
		unary, stream = append(unary, u), append(stream, st)
	}
	// Traced (when on): every RPC but WatchInvalidations, a stream as long
	// as the gateway's connection rather than a request.
	opts := tracing.GRPCServerOptions(authzv1.AuthzService_WatchInvalidations_FullMethodName)
	opts = append(opts,
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(256<<10),
		// Clients (the gateway pings a connection silent for 10s, to find a
		// frozen replica fast) keep connections alive with pings; allow them
		// rather than closing the connection with ENHANCE_YOUR_CALM.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 2 * time.Second, PermitWithoutStream: true}),
	)
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	a.grpc = grpc.NewServer(opts...)
	authzv1.RegisterAuthzServiceServer(a.grpc, srv)
	a.health = health.NewServer()
	healthpb.RegisterHealthServer(a.grpc, a.health)
	reflection.Register(a.grpc)

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.Metrics.Handler())
	mux.HandleFunc("GET /healthz", a.probe)
	mux.HandleFunc("GET /readyz", a.probe)
	a.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(a.logger.Handler(), slog.LevelWarn)}
	return a, nil
}

// Tokens exposes the token cache (benchmarks and tests inspect it).
func (a *App) Tokens() *tokencache.Cache { return a.tokens }

func (a *App) probe(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !a.serving.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("shutting down\n"))
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// sweepInterval is how often expired entries leave the in-process caches. Memory
// is bounded by L1_MAX_ENTRIES regardless; sweeping keeps a churning cache from
// sitting at that bound with dead entries.
const sweepInterval = 30 * time.Second

// sweep drops expired L1 entries every sweepInterval until ctx is done.
func (a *App) sweep(ctx context.Context) {
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n := a.tokens.Sweep() + a.users.Sweep()
			a.logger.Debug("swept expired cache entries", "entries", n)
		}
	}
}

// Serve serves gRPC on gl and metrics/health on hl until ctx ends or a server fails,
// then shuts down. It returns nil after a clean shutdown caused by ctx.
func (a *App) Serve(ctx context.Context, gl, hl net.Listener) error {
	g, gctx := errgroup.WithContext(ctx)
	a.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	a.health.SetServingStatus(authzv1.AuthzService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	a.serving.Store(true)
	if a.store != nil {
		if err := a.store.Ping(ctx); err != nil {
			a.logger.Warn("redis not reachable at start; continuing with the in-process cache until it is", "err", err.Error())
		}
	}
	a.logger.Info("authz serving", "grpc", gl.Addr().String(), "http", hl.Addr().String(), "redis", a.store != nil, "grpc_security", a.security())
	g.Go(func() error {
		if err := a.grpc.Serve(gl); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serving gRPC: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := a.http.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving HTTP: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		a.tokens.Run(gctx)
		return nil
	})
	g.Go(func() error {
		a.sweep(gctx)
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		a.shutdown()
		return nil
	})
	err := g.Wait()
	if a.store != nil {
		_ = a.store.Close()
	}
	return err
}

// security names the gRPC port's transport security for the start-up log.
func (a *App) security() string {
	switch {
	case a.cfg.TLS == nil:
		return "plaintext"
	case a.cfg.TLS.ClientCAs == nil:
		return "tls"
	}
	s := "mtls"
	if len(a.cfg.GetUserCallers) > 0 {
		s += ", GetUser restricted to AUTHZ_GETUSER_CALLERS"
	}
	if len(a.cfg.InvalidateCallers) > 0 {
		s += ", InvalidateToken restricted to AUTHZ_INVALIDATE_CALLERS"
	}
	return s
}

func (a *App) shutdown() {
	a.logger.Info("shutting down", "grace", a.o.ShutdownTimeout.String())
	a.serving.Store(false)
	a.health.Shutdown()
	done := make(chan struct{})
	go func() {
		a.grpc.GracefulStop()
		close(done)
	}()
	// GracefulStop waits for every open stream, and a WatchInvalidations stream
	// stays open as long as its caller does: end them (UNAVAILABLE, so callers
	// drop what they keep and watch another replica). A caller that reconnects
	// before GracefulStop's GOAWAY reaches it is refused at once the same way: a
	// closed hub ends new streams immediately. (A stream whose caller stopped
	// reading can still be stuck in Send until the timeout below.)
	if n := a.watch.Len(); n > 0 {
		a.logger.Info("ending invalidation watch streams", "streams", n)
	}
	a.watch.Close()
	t := time.NewTimer(a.o.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		a.logger.Warn("graceful stop timed out; closing remaining connections")
		a.grpc.Stop()
		<-done
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = a.http.Shutdown(ctx)
}
