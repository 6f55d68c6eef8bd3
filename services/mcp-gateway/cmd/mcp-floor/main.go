// Command mcp-floor serves the two baselines the load tool (bench/cmd/mcpload)
// measures the services against, in the same run and on the same machine:
//
//   - the MCP floor: the gateway's own tools ([tools.BuiltIn], their
//     definitions and handlers) on a go-sdk server with the gateway's options
//     (stateless streamable HTTP, JSON responses), without authentication.
//     Every request is served as the gateway serves one that authz allowed
//     for the seeded user alice with a read:user_data token: the caller
//     authz would return is built for it instead of asked for. The gateway's
//     figures divided by the floor's are the price of authentication.
//   - the gRPC floor: a default grpc.Server whose only service is
//     grpc.health.v1, Health/Check being the cheapest unary call to compare
//     authz Authorize with.
//
// It lives in the gateway's module so that the floor runs the gateway's tool
// code rather than a copy of it; the load tool starts it as a process of its
// own, as it starts the services, so that it does not share a Go runtime,
// heap or garbage collector with the load generator.
//
//	mcp-floor -mcp-listen 127.0.0.1:0 -grpc-listen 127.0.0.1:0
//
// It logs, as the services do, one JSON line per listener with the address it
// bound ({"msg":"listening","listener":"mcp-listen","addr":...}). The MCP
// endpoint is /mcp; /healthz answers 200. It stops on SIGINT or SIGTERM.
// It is a benchmark tool: it answers anyone who reaches it, so it listens on
// loopback unless told otherwise.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/timestamppb"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/seedusers"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/caller"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/mcpreq"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	err := run(ctx, os.Args[1:], logger)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mcp-floor:", err)
		os.Exit(1)
	}
}

// run serves both floors until ctx is done. It returns an error for bad
// flags, a listener that cannot be bound, or a server that fails.
func run(ctx context.Context, args []string, logger *slog.Logger) error {
	fs := flag.NewFlagSet("mcp-floor", flag.ContinueOnError)
	mcpListen := fs.String("mcp-listen", "127.0.0.1:0", "`address` of the MCP floor (HTTP, /mcp)")
	grpcListen := fs.String("grpc-listen", "127.0.0.1:0", "`address` of the gRPC floor (grpc.health.v1)")
	// As long as devauth's issuer on loopback, so that the floor's answer
	// is as long as the gateway's.
	issuer := fs.String("issuer", "http://127.0.0.1:40000/oauth/2.1", "the authorization server the floor's caller claims to come from (its `URL` appears in the answer)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var lc net.ListenConfig
	mln, err := lc.Listen(ctx, "tcp", *mcpListen)
	if err != nil {
		return fmt.Errorf("-mcp-listen: %w", err)
	}
	gln, err := lc.Listen(ctx, "tcp", *grpcListen)
	if err != nil {
		mln.Close()
		return fmt.Errorf("-grpc-listen: %w", err)
	}
	logger.Info("listening", "listener", "mcp-listen", "addr", mln.Addr().String())
	logger.Info("listening", "listener", "grpc-listen", "addr", gln.Addr().String())
	return serve(ctx, mln, gln, "http://"+mln.Addr().String()+"/mcp", *issuer)
}

// serve serves the MCP floor on mln and the gRPC floor on gln until ctx is
// done, and returns the first serving error, or nil after a clean stop.
func serve(ctx context.Context, mln, gln net.Listener, resource, issuer string) error {
	mux := http.NewServeMux()
	mux.Handle("/mcp", mcpHandler(resource, issuer))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	gs := grpcServer()

	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(mln) }()
	go func() { errc <- gs.Serve(gln) }()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(shutCtx)
	gs.Stop()
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serving: %w", err)
	}
	return nil
}

// grpcServer returns a gRPC server with default options serving only
// grpc.health.v1 (status SERVING).
func grpcServer() *grpc.Server {
	s := grpc.NewServer()
	h := health.NewServer()
	h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, h)
	return s
}

// floorAuthorization is the Authorization header every request is given:
// see mcpHandler.
var floorAuthorization = []string{"Bearer floor"}

// mcpHandler returns the MCP floor: the gateway's built-in tools installed as
// gateway.New installs them, on a server with its options, and every request
// served as one authz allowed for alice.
func mcpHandler(resource, issuer string) http.Handler {
	set := tools.BuiltIn()
	whoAmI, ok := set.Lookup("who_am_i")
	if !ok {
		panic("mcp-floor: the gateway has no who_am_i tool")
	}
	discard := slog.New(slog.DiscardHandler)
	server := mcp.NewServer(&mcp.Implementation{Name: "mcp-floor", Title: "mcpauthz unauthenticated floor", Version: "1.0.0"}, &mcp.ServerOptions{
		Logger:       discard,
		Capabilities: &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{}},
	})
	// No Users: every caller comes with its user, as authz returns it when
	// the tool asks (include_user).
	set.Install(server, &tools.Env{Logger: discard}, tools.InstallOptions{})
	streamable := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{
		Stateless:                  true,
		JSONResponse:               true,
		Logger:                     discard,
		DisableLocalhostProtection: true,
		MaxRequestBodyBytes:        mcpreq.DefaultMaxBody,
	})
	// The gateway hands the caller to the go-sdk the only way the SDK takes
	// one, through RequireBearerToken; so does the floor, whose clients send
	// no token: it gives each request one to pass that step.
	withCaller := auth.RequireBearerToken(func(ctx context.Context, _ string, _ *http.Request) (*auth.TokenInfo, error) {
		return caller.FromContext(ctx).TokenInfo(), nil
	}, &auth.RequireBearerTokenOptions{AllowMissingExpiration: true})(streamable)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := aliceCaller(resource, issuer, whoAmI)
		r.Header["Authorization"] = floorAuthorization
		withCaller.ServeHTTP(w, r.WithContext(caller.NewContext(r.Context(), c)))
	})
}

// aliceCaller builds, on every request as the gateway gets it from authz,
// the caller of a read:user_data token minted by devauth's test API for
// alice: the principal with the claims in CLAIMS_FORMAT_JSON and the user
// devauth seeds, without organizations, which t shows only to tokens holding
// its OrgsScopes.
func aliceCaller(resource, issuer string, t tools.Tool) *caller.Caller {
	now := time.Now().Truncate(time.Second)
	exp := now.Add(time.Hour)
	p := &authzv1.Principal{
		Subject:    seedusers.AliceID,
		ClientId:   clientID,
		Scopes:     []string{"read:user_data"},
		ExpiresAt:  timestamppb.New(exp),
		IssuedAt:   timestamppb.New(now),
		Audience:   []string{resource},
		Issuer:     issuer,
		ClaimsJson: claimsJSON(exp.Unix(), now.Unix(), resource, issuer),
	}
	c := caller.New(p, t.Scopes, nil)
	c.UserRequested = true
	c.User = &authzv1.User{
		UserId:         seedusers.AliceID,
		Email:          seedusers.AliceEmail,
		EmailConfirmed: true,
		HasPassword:    true,
		Username:       "alice",
		FirstName:      "Alice",
		LastName:       "Liddell",
		PictureUrl:     "https://img.propelauth.com/2a27d237-db8c-4f82-84fb-5824dfaedc87.png",
		Enabled:        true,
		CanCreateOrgs:  true,
		CreatedAt:      &timestamppb.Timestamp{Seconds: 1735689600},
		LastActiveAt:   &timestamppb.Timestamp{Seconds: 1767225600},
	}
	c.OrgsWithheld = tools.OrgsWithheld(t.OrgsScopes)
	return c
}

// clientID is the OAuth client devauth's test API mints tokens for.
const clientID = "devauth-test-client"

// claimsJSON writes the introspection response's members as authz's
// CLAIMS_FORMAT_JSON does: sorted by name, compact. (Resource and issuer are
// URLs without characters JSON must escape.)
func claimsJSON(exp, iat int64, resource, issuer string) []byte {
	b := make([]byte, 0, 320)
	b = append(b, `{"active":true,"aud":"`...)
	b = append(b, resource...)
	b = append(b, `","client_id":"`+clientID+`","exp":`...)
	b = strconv.AppendInt(b, exp, 10)
	b = append(b, `,"iat":`...)
	b = strconv.AppendInt(b, iat, 10)
	b = append(b, `,"iss":"`...)
	b = append(b, issuer...)
	b = append(b, `","scope":"read:user_data","sub":"`...)
	b = append(b, seedusers.AliceID...)
	b = append(b, `","token_type":"Bearer"}`...)
	return b
}
