// Command mcp-gateway is the OAuth-protected MCP server: it serves MCP over
// streamable HTTP at /mcp and asks the authz service to authorize every request.
// Configuration comes from the environment; run with -list-env to see which
// variables it reads.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mcpauthz/mcpauthz/internal/healthprobe"
	"github.com/mcpauthz/mcpauthz/internal/redisconn"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/authzclient"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/config"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/decisioncache"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/gateway"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/metrics"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/ratelimit"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
)

// drainTimeout leaves in-flight requests time to finish on SIGTERM, inside the
// 10s docker compose and Kubernetes allow by default before SIGKILL.
const drainTimeout = 8 * time.Second

// opsDrainTimeout bounds the operational listener's own drain, which starts
// once the public one has drained: its requests (a scrape, a probe) are short.
const opsDrainTimeout = time.Second

// defaultGOGC is GOGC's declared default (config.Config.GOGC).
var defaultGOGC, _ = strconv.Atoi(config.Defaults().GOGC)

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGOGC)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	level := new(slog.LevelVar)
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := run(ctx, logger, level, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "mcp-gateway: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, logger *slog.Logger, level *slog.LevelVar, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("mcp-gateway", flag.ContinueOnError)
	fs.SetOutput(stdout)
	listEnv := fs.Bool("list-env", false, "print every environment variable mcp-gateway reads, one per line, and exit")
	healthcheck := fs.String("healthcheck", "", "GET `URL` and exit 0 if it answers 200, 1 otherwise (for container healthchecks)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; configuration comes from the environment (see -list-env)", fs.Args())
	}
	if *listEnv {
		_, err := fmt.Fprintln(stdout, strings.Join(config.EnvNames(), "\n"))
		return err
	}
	if *healthcheck != "" {
		return healthprobe.Probe(ctx, *healthcheck)
	}

	cfg, err := config.Load(getenv)
	if err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	level.Set(cfg.LogLevel)
	logger.Info("starting mcp-gateway", "config", cfg)

	m := metrics.New()
	authz, err := authzclient.New(cfg.AuthzAddr, authzclient.Options{Timeout: cfg.AuthzTimeout, Observe: m.ObserveAuthz, TLS: cfg.AuthzTLS})
	if err != nil {
		return fmt.Errorf("invalid configuration: AUTHZ_ADDR: %w", err)
	}
	defer authz.Close()

	var limiter *ratelimit.Limiter
	if cfg.RateLimit.Enabled() {
		redis.SetLogger(redisconn.DriverLogger(logger))
		if limiter, err = ratelimit.New(ratelimit.Options{Limit: cfg.RateLimit, RedisURL: cfg.RedisURL, Logger: logger, Metrics: m}); err != nil {
			return fmt.Errorf("invalid configuration: RATE_LIMIT: %w", err)
		}
		defer limiter.Close()
	}

	gw, err := gateway.New(gateway.Options{Config: cfg, Authz: authz, Logger: logger, Metrics: m, RateLimiter: limiter, Tools: tools.BuiltIn(),
		Invalidations: func(ctx context.Context) (decisioncache.Stream, error) { return authz.WatchInvalidations(ctx) }})
	if err != nil {
		return err
	}
	// The decision cache follows the invalidation stream through the drain
	// too, so the stream outlives ctx and stops once Serve has returned.
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	watched := make(chan struct{})
	go func() { defer close(watched); gw.Watch(watchCtx) }()
	defer func() { stopWatch(); <-watched }()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("MCP_LISTEN: listening on %s: %w", cfg.Listen, err)
	}
	ln = gateway.LimitConnections(ln, cfg.MaxConnections)
	var opsLn net.Listener
	opsAddr := ln.Addr().String()
	if !cfg.OneListener() {
		if opsLn, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			ln.Close()
			return fmt.Errorf("MCP_METRICS_LISTEN: listening on %s: %w", cfg.MetricsListen, err)
		}
		opsAddr = opsLn.Addr().String()
	}
	logger.Info("serving MCP", "addr", ln.Addr().String(), "metrics_addr", opsAddr, "resource", cfg.Resource(), "resource_metadata", cfg.ResourceMetadataURL(), "authz", cfg.AuthzAddr,
		"authz_tls", cfg.AuthzTLS != nil, "decision_cache_ttl", cfg.DecisionCacheTTL.String(), "rate_limit", cfg.RateLimit.String(), "rate_limit_shared", cfg.RateLimit.Enabled() && cfg.RedisURL != "")
	if err := serve(ctx, logger, gw, ln, opsLn); err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}

// serve serves gw's public routes on ln and its operational routes on opsLn
// (with opsLn nil, both on ln) until ctx is done. Then the public listener
// closes and drains its requests while the operational one still answers
// /metrics and /readyz, so the drain can be watched; it stops, with its own
// short drain, once the public one has. Either server failing stops the other.
// It returns the servers' errors, joined.
func serve(ctx context.Context, logger *slog.Logger, gw *gateway.Gateway, ln, opsLn net.Listener) error {
	if opsLn == nil {
		return gateway.Serve(ctx, ln, gw.OneHandler(), logger, drainTimeout)
	}
	publicCtx, stopPublic := context.WithCancel(ctx)
	defer stopPublic()
	opsCtx, stopOps := context.WithCancel(context.WithoutCancel(ctx))
	defer stopOps()
	opsDone := make(chan error, 1)
	go func() {
		err := gateway.Serve(opsCtx, opsLn, gw.OpsHandler(), logger.With("listener", "MCP_METRICS_LISTEN"), opsDrainTimeout)
		stopPublic() // a failed operational listener takes the public one down
		opsDone <- err
	}()
	err := gateway.Serve(publicCtx, ln, gw, logger.With("listener", "MCP_LISTEN"), drainTimeout)
	stopOps()
	return errors.Join(err, <-opsDone)
}
