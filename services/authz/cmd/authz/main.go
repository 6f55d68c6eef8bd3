// Command authz is the authorization service: token introspection with a shared
// two-tier cache, audience/expiry/scope decisions and user lookups over gRPC
// (authz.v1.AuthzService). Configuration comes from the environment; run with
// -h to see every variable it reads.
package main

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/mcpauthz/mcpauthz/internal/redisconn"
	"github.com/mcpauthz/mcpauthz/internal/service"
	"github.com/mcpauthz/mcpauthz/internal/tracing"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/app"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/config"
)

var authz = service.Service[config.Config]{
	Name:    "authz",
	Summary: "authz is the authorization service: token introspection with a two-tier cache shared by its replicas, audience, expiry and scope decisions, and user lookups, over gRPC (authz.v1.AuthzService).",
	Load:    config.Load,
	Serve:   serve,
}

func main() { service.Main(authz) }

// serve builds authz from cfg and serves gRPC on AUTHZ_LISTEN and
// metrics and health on AUTHZ_METRICS_LISTEN until ctx is done.
func serve(ctx context.Context, cfg config.Config, env service.Env) error {
	redis.SetLogger(redisconn.DriverLogger(env.Logger))
	// Before app.New: the clients and the server it builds are traced only
	// if tracing is on by then.
	tr, err := tracing.Start(ctx, cfg.OTel, "authz", env.Logger)
	if err != nil {
		return err
	}
	defer tracing.Flush(ctx, tr, env.Logger)
	a, err := app.New(cfg, app.Options{Logger: env.Logger})
	if err != nil {
		return err
	}
	gl, err := env.Listen(ctx, "AUTHZ_LISTEN", cfg.Listen)
	if err != nil {
		return err
	}
	hl, err := env.Listen(ctx, "AUTHZ_METRICS_LISTEN", cfg.MetricsListen)
	if err != nil {
		gl.Close()
		return err
	}
	return a.Serve(ctx, gl, hl)
}
