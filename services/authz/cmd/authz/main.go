// Command authz is the authorization service: token introspection with a shared
// two-tier cache, audience/expiry/scope decisions and user lookups over gRPC
// (authz.v1.AuthzService). Configuration comes from the environment; run with
// -list-env to see every variable it reads.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/mcpauthz/mcpauthz/internal/healthprobe"
	"github.com/mcpauthz/mcpauthz/internal/redisconn"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/app"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	level := new(slog.LevelVar)
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := run(ctx, logger, level, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "authz:", err)
		os.Exit(1)
	}
}

// run is main without the process: it returns configuration and serving errors
// instead of exiting.
func run(ctx context.Context, logger *slog.Logger, level *slog.LevelVar, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("authz", flag.ContinueOnError)
	fs.SetOutput(stdout)
	listEnv := fs.Bool("list-env", false, "print every environment variable authz reads, one per line, and exit")
	healthcheck := fs.String("healthcheck", "", "GET `URL` and exit 0 if it answers 200, 1 otherwise (for container healthchecks)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *healthcheck != "" {
		return healthprobe.Probe(ctx, *healthcheck)
	}
	if *listEnv {
		_, err := fmt.Fprintln(stdout, strings.Join(config.EnvVars(), "\n"))
		return err
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	level.Set(cfg.LogLevel)
	redis.SetLogger(redisconn.DriverLogger(logger))
	logger.Info("starting authz", "config", cfg)
	a, err := app.New(cfg, app.Options{Logger: logger})
	if err != nil {
		return err
	}
	return a.Run(ctx)
}
