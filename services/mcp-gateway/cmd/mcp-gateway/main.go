// Command mcp-gateway is the OAuth-protected MCP server: it serves MCP over
// streamable HTTP at /mcp and asks the authz service to authorize every request.
// Configuration comes from the environment; run with -h to see every variable
// it reads.
package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/redisconn"
	"github.com/mcpauthz/mcpauthz/internal/service"
	"github.com/mcpauthz/mcpauthz/internal/tracing"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/audit"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/authzclient"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/config"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/gateway"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/metrics"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/ratelimit"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/startup"
)

// drainTimeout leaves in-flight requests time to finish on SIGTERM, inside the
// 10s docker compose and Kubernetes allow by default before SIGKILL.
const drainTimeout = 8 * time.Second

// opsDrainTimeout bounds the operational listener's own drain, which starts
// once the public one has drained: its requests (a scrape, a probe) are short.
const opsDrainTimeout = time.Second

var gatewayService = service.Service[config.Config]{
	Name:    "mcp-gateway",
	Summary: "mcp-gateway is the OAuth-protected MCP server: it serves MCP over streamable HTTP at /mcp and asks the authz service to authorize every request.",
	Load:    config.Load,
	Serve:   serve,
}

func main() { service.Main(gatewayService) }

// serve listens on MCP_LISTEN (and MCP_METRICS_LISTEN), builds the gateway
// and serves until ctx is done.
func serve(ctx context.Context, cfg config.Config, env service.Env) (err error) {
	// The runtime applies a GOGC that is set; unset, the declared default
	// replaces Go's 100.
	if strings.TrimSpace(env.Getenv("GOGC")) == "" {
		if n, err := strconv.Atoi(cfg.GOGC); err == nil {
			debug.SetGCPercent(n)
		}
	}
	logger := env.Logger
	ln, err := env.Listen(ctx, "MCP_LISTEN", cfg.Listen)
	if err != nil {
		return err
	}
	var opsLn net.Listener
	opsAddr := ln.Addr().String()
	if cfg.OneListener() {
		logger.Info("listening", "listener", "MCP_METRICS_LISTEN", "addr", opsAddr)
	} else if opsLn, err = env.Listen(ctx, "MCP_METRICS_LISTEN", cfg.MetricsListen); err != nil {
		ln.Close()
		return err
	} else {
		opsAddr = opsLn.Addr().String()
	}
	defer func() {
		if err != nil { // serve closes them otherwise
			ln.Close()
			if opsLn != nil {
				opsLn.Close()
			}
		}
	}()
	// With MCP_SERVER_URL unset, the resource names the port bound.
	cfg.Bound(ln.Addr())

	m := metrics.New()
	// The SIGHUP handler stops when serve returns, however it returns.
	auditCtx, stopAudit := context.WithCancel(ctx)
	defer stopAudit()
	auditLog, err := openAuditLog(auditCtx, cfg, env, m)
	if err != nil {
		return err
	}
	// Deferred first, so closed last: every request has been answered and
	// recorded by then, and Close writes what is still buffered.
	defer auditLog.Close()

	// Before the clients and the gateway are built: they are traced only if
	// tracing is on by then.
	tr, err := tracing.Start(ctx, cfg.OTel, "mcp-gateway", logger)
	if err != nil {
		return err
	}
	defer tracing.Flush(ctx, tr, logger)
	var tracer trace.Tracer
	if tr.Enabled() {
		tracer = tracing.Tracer("github.com/mcpauthz/mcpauthz/services/mcp-gateway")
	}

	authz, err := authzclient.New(cfg.AuthzAddr, authzclient.Options{Timeout: cfg.AuthzTimeout, Observe: m.ObserveAuthz, TLS: cfg.AuthzTLS,
		// The trace context goes to authz in the calls' metadata; the
		// invalidation stream, as long as the connection, is no request.
		DialOptions: tracing.GRPCClientOptions(authzv1.AuthzService_WatchInvalidations_FullMethodName)})
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

	// The upstreams, the gateway and its listeners start in the order
	// package startup documents, the test stack's too.
	srv, err := startup.Start(ctx, startup.Options{Config: cfg, Logger: logger, Metrics: m, Authz: authz, RateLimiter: limiter, Audit: auditLog, Tracer: tracer,
		Listener: gateway.LimitConnections(ln, cfg.MaxConnections), OpsListener: opsLn, Drain: drainTimeout, OpsDrain: opsDrainTimeout})
	if err != nil {
		return err
	}
	logger.Info("serving MCP", "addr", ln.Addr().String(), "metrics_addr", opsAddr, "resource", cfg.Resource(), "resource_metadata", cfg.ResourceMetadataURL(), "authz", cfg.AuthzAddr,
		"authz_tls", cfg.AuthzTLS != nil, "audit_log", cmp.Or(cfg.AuditLog, "off"), "decision_cache_ttl", cfg.DecisionCacheTTL.String(), "rate_limit", cfg.RateLimit.String(), "rate_limit_shared", cfg.RateLimit.Enabled() && cfg.RedisURL != "")
	return srv.Wait()
}

// openAuditLog opens AUDIT_LOG: nil when it is off, standard output, or a
// file, which SIGHUP reopens (for logrotate) until ctx is done. It returns an
// error naming AUDIT_LOG when the file cannot be opened.
func openAuditLog(ctx context.Context, cfg config.Config, env service.Env, m *metrics.Metrics) (*audit.Logger, error) {
	opts := audit.Options{Logger: env.Logger, Dropped: m.AuditDropped}
	switch cfg.AuditLog {
	case "":
		return nil, nil
	case config.AuditStdout:
		return audit.New(cmp.Or[io.Writer](env.Stdout, os.Stdout), opts), nil
	}
	l, err := audit.Open(cfg.AuditLog, opts)
	if err != nil {
		return nil, fmt.Errorf("invalid configuration: AUDIT_LOG: %w", err)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-hup:
				if err := l.Reopen(); err != nil {
					env.Logger.Error("reopening the audit log on SIGHUP; still writing to the old file", "path", cfg.AuditLog, "error", err)
				} else {
					env.Logger.Info("audit log reopened on SIGHUP", "path", cfg.AuditLog)
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return l, nil
}
