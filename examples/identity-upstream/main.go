// Command identity-upstream is an example MCP server behind the mcpauthz
// gateway. It trusts the gateway, not the client: every request must carry
// the gateway's signed identity assertion in the X-Mcpauthz-Identity header,
// which it verifies against the gateway's JWKS before the MCP server sees the
// request. Its one tool, whoami, answers with the verified caller.
//
//	go run ./examples/identity-upstream \
//	    -listen 127.0.0.1:8081 \
//	    -jwks http://127.0.0.1:8000/.well-known/jwks.json \
//	    -issuer http://127.0.0.1:8000 \
//	    -audience http://127.0.0.1:8081/mcp
//
// -issuer is the gateway's MCP_SERVER_URL; -audience is this server's url
// exactly as the gateway's upstreams file names it. Each flag can also be set
// in the environment: LISTEN_ADDR, JWKS_URL, EXPECTED_ISSUER, EXPECTED_AUDIENCE.
// The MCP endpoint is /mcp (streamable HTTP, stateless); /healthz answers 200
// without an assertion.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	err := run(ctx, os.Args[1:], os.Getenv, logger)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "identity-upstream:", err)
		os.Exit(1)
	}
}

// shutdownGrace is how long requests in flight at shutdown have before
// their contexts end.
const shutdownGrace = time.Second

// run serves until ctx ends; flags default to the variables getenv reads.
func run(ctx context.Context, args []string, getenv func(string) string, logger *slog.Logger) error {
	fs := flag.NewFlagSet("identity-upstream", flag.ContinueOnError)
	listen := fs.String("listen", cmp.Or(getenv("LISTEN_ADDR"), "127.0.0.1:8081"), "`address` to listen on (env LISTEN_ADDR)")
	jwks := fs.String("jwks", getenv("JWKS_URL"), "the gateway's JWKS `URL` (env JWKS_URL)")
	issuer := fs.String("issuer", getenv("EXPECTED_ISSUER"), "the gateway's MCP_SERVER_URL, the assertions' iss (env EXPECTED_ISSUER)")
	audience := fs.String("audience", getenv("EXPECTED_AUDIENCE"), "this server's URL as the gateway names it, the assertions' aud (env EXPECTED_AUDIENCE)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch "" {
	case *jwks:
		return errors.New("-jwks (JWKS_URL) is required")
	case *issuer:
		return errors.New("-issuer (EXPECTED_ISSUER) is required")
	case *audience:
		return errors.New("-audience (EXPECTED_AUDIENCE) is required")
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	// Requests run under base, which ends shortly after shutdown starts: a
	// call finishes within that grace, but a stream a client holds open (the
	// gateway's subscriptions/listen for list changes) never would.
	base, endRequests := context.WithCancel(context.Background())
	defer endRequests()
	srv := &http.Server{
		Handler:           newHandler(NewVerifier(*jwks, *issuer, *audience), logger),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	logger.Info("listening", "addr", ln.Addr().String(), "jwks", *jwks, "issuer", *issuer, "audience", *audience)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	grace := time.AfterFunc(shutdownGrace, endRequests)
	defer grace.Stop()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// newHandler serves the MCP server at /mcp, behind the identity check.
func newHandler(v *Verifier, logger *slog.Logger) http.Handler {
	server := mcp.NewServer(&mcp.Implementation{Name: "identity-upstream", Version: "1.0.0"}, nil)
	mcp.AddTool(server, &mcp.Tool{
		Name:        "whoami",
		Description: "Says who the gateway says the caller is: the user (sub), the OAuth client and the token's scopes.",
	}, whoami)
	mcpHandler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server },
		&mcp.StreamableHTTPOptions{Stateless: true})

	mux := http.NewServeMux()
	mux.Handle("/mcp", v.RequireIdentity(mcpHandler, logger))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	return mux
}

// WhoAmI is whoami's result.
type WhoAmI struct {
	Subject   string   `json:"sub" jsonschema:"the user the gateway vouches for"`
	ClientID  string   `json:"client_id" jsonschema:"the OAuth client the user's token was issued to"`
	Scopes    []string `json:"scopes" jsonschema:"the token's scopes"`
	ExpiresAt string   `json:"assertion_expires_at" jsonschema:"when the gateway's assertion expires (RFC 3339)"`
}

// whoami reads the caller from the context: in stateless mode each request's
// MCP session runs under that HTTP request's context, so the identity
// RequireIdentity put there reaches the tool.
func whoami(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, WhoAmI, error) {
	id := IdentityFrom(ctx)
	if id == nil {
		return nil, WhoAmI{}, errors.New("no verified identity")
	}
	return nil, WhoAmI{
		Subject:   id.Subject,
		ClientID:  id.ClientID,
		Scopes:    id.Scopes,
		ExpiresAt: id.ExpiresAt.UTC().Format(time.RFC3339),
	}, nil
}
