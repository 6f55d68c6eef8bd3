package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"
)

// Server limits. MaxHeaderBytes makes a request with oversized headers (e.g. a
// 100 KiB Authorization) fail fast with 431 instead of reaching authz.
//
// readHeaderTimeout bounds a slowloris client that trickles its headers: a
// real client sends them in one go right after connecting. readTimeout bounds
// a whole request on the routes other than /mcp (none of which takes a body);
// /mcp sets its own deadline for the body (MCP_BODY_TIMEOUT) once it has
// checked the token, and lifts it once the body is in. There is no
// WriteTimeout: it would cut off a long tool call or stream, and answers are
// small enough to sit in the socket's buffer when a client does not read
// them. idleTimeout stays above the 60 s idle timeout of common load
// balancers, which must close a kept-alive connection before the server does.
const (
	MaxHeaderBytes    = 64 << 10
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 15 * time.Second
	idleTimeout       = 2 * time.Minute
)

// LimitConnections returns ln bounded to n connections open at once
// (MCP_MAX_CONNECTIONS), or ln itself when n is zero or less. At the bound,
// Accept waits for a connection to close, and new connections wait in the
// kernel's accept queue: a flood of connections then delays clients instead
// of growing the gateway's memory without end.
func LimitConnections(ln net.Listener, n int) net.Listener {
	if n <= 0 {
		return ln
	}
	return netutil.LimitListener(ln, n)
}

// Serve serves h on ln until ctx is done, then stops accepting connections and
// waits up to drain for in-flight requests to finish (http.Server.Shutdown).
// It returns nil after a clean drain, an error if serving failed or requests
// were still running when drain ran out (they are then cut off).
func Serve(ctx context.Context, ln net.Listener, h http.Handler, logger *slog.Logger, drain time.Duration) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving HTTP on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	logger.Info("shutting down: draining in-flight requests", "drain", drain)
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		<-errc
		return fmt.Errorf("draining HTTP requests: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving HTTP on %s: %w", ln.Addr(), err)
	}
	return nil
}
