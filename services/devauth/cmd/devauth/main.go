// Command devauth is a local OAuth 2.1 authorization server that speaks
// PropelAuth's MCP endpoints and wire formats, so authz and mcp-gateway run
// and are tested against it without a PropelAuth account. Point
// PROPELAUTH_AUTH_URL at it. Run with -list-env to see the variables it reads.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/healthprobe"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/config"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/server"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/store"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/users"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "devauth:", err)
		os.Exit(1)
	}
}

// shutdownTimeout bounds graceful shutdown; requests held by fault injection
// are released at once, so this only waits for ordinary requests.
const shutdownTimeout = 10 * time.Second

// run starts devauth and blocks until ctx is done or the server fails. It
// builds its own logger because LOG_LEVEL is part of the configuration it
// validates. Every error it returns is meant to be printed as one line.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("devauth", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listEnv := fs.Bool("list-env", false, "print the environment variables devauth reads, one per line, and exit")
	healthcheck := fs.String("healthcheck", "", "GET `URL` and exit 0 if it answers 200, 1 otherwise (for container healthchecks)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *healthcheck != "" {
		return healthprobe.Probe(ctx, *healthcheck)
	}
	if *listEnv {
		for _, name := range config.EnvNames() {
			fmt.Fprintln(stdout, name)
		}
		return nil
	}

	cfg, err := config.Load(getenv)
	if err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))

	dir := users.Seed()
	opts := server.Options{
		// Off by default: with it, anyone who can reach /authorize makes
		// devauth fetch from its own machine. Tests turn it on to serve Client
		// ID Metadata Documents from http://localhost without certificates.
		AllowLoopbackMetadata: cfg.CIMDAllowLoopback,
		Limits:                store.Limits{ClientTTL: cfg.ClientTTL},
		LoginHint:             "alice@example.com / alice-password, bob@example.com / bob-password",
	}
	if cfg.UsersFile != "" {
		opts.LoginHint = ""
		if dir, err = users.LoadFile(cfg.UsersFile); err != nil {
			return fmt.Errorf("invalid configuration: %s: %w", config.EnvUsersFile, err)
		}
	}
	if cfg.AutoApprove != "" {
		if _, ok := dir.ByEmail(cfg.AutoApprove); !ok {
			return fmt.Errorf("invalid configuration: %s: no user with email %q", config.EnvAutoApprove, cfg.AutoApprove)
		}
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("%s: %w", config.EnvListen, err)
	}
	srv := server.New(cfg, dir, logger, opts)
	httpSrv := srv.HTTPServer(logger)

	sweepCtx, stopSweep := context.WithCancel(context.Background())
	defer stopSweep()
	go srv.Store.Run(sweepCtx, 30*time.Second)

	logger.Info("devauth starting", "addr", ln.Addr().String(), "issuer", cfg.Issuer(),
		"users", dir.Len(), "config", cfg)

	serveErr := make(chan error, 1)
	go func() { serveErr <- httpSrv.Serve(ln) }()

	select {
	case err := <-serveErr:
		return fmt.Errorf("serving http: %w", err)
	case <-ctx.Done():
	}
	logger.Info("devauth shutting down")
	srv.Faults.Close()
	shutCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := httpSrv.Shutdown(shutCtx); err != nil {
		_ = httpSrv.Close()
		return fmt.Errorf("shutting down http: %w", err)
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving http: %w", err)
	}
	logger.Info("devauth stopped")
	return nil
}
