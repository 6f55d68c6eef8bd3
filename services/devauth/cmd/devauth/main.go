// Command devauth is a local OAuth 2.1 authorization server that speaks
// PropelAuth's MCP endpoints and wire formats, so authz and mcp-gateway run
// and are tested against it without a PropelAuth account. Point
// PROPELAUTH_AUTH_URL at it. Run with -list-env to see the variables it reads.
//
// The settings of PropelAuth's MCP dashboard page (allowed redirect URIs,
// scopes, DCR, OAuth clients) come from the YAML file DEVAUTH_CONFIG_FILE
// names; devauth.example.yaml at the repository root documents it.
// `devauth -print-mcp-json URL` prints Cursor's mcp.json for a pre-registered
// client of that configuration, as PropelAuth's MCP guide writes it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
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
	printMCPJSON := fs.String("print-mcp-json", "", "print Cursor's mcp.json for a pre-registered client and the MCP server at `URL`, and exit")
	clientID := fs.String("client", "", "with -print-mcp-json: the client `ID` (default: the first in the configuration)")
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
	if *printMCPJSON != "" {
		out, err := cursorMCPJSON(cfg.MCP.Clients, *clientID, *printMCPJSON)
		if err != nil {
			return err
		}
		_, err = stdout.Write(out)
		return err
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
			return fmt.Errorf("invalid configuration: %s: %w", "DEVAUTH_USERS_FILE", err)
		}
	}
	if cfg.AutoApprove != "" {
		if _, ok := dir.ByEmail(cfg.AutoApprove); !ok {
			return fmt.Errorf("invalid configuration: %s: no user with email %q", "DEVAUTH_AUTO_APPROVE", cfg.AutoApprove)
		}
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("%s: %w", "DEVAUTH_LISTEN", err)
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

// cursorMCPJSON returns Cursor's mcp.json for the pre-registered client with
// id (the first one when id is ""), with the "auth" block PropelAuth's MCP
// guide puts there, for the MCP server at mcpURL. A public client's block has
// no CLIENT_SECRET. It returns an error when there is no such client or
// mcpURL is not an http(s) URL.
func cursorMCPJSON(clients []config.Client, id, mcpURL string) ([]byte, error) {
	if u, err := url.Parse(mcpURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("-print-mcp-json %q: not an http(s) URL", mcpURL)
	}
	if len(clients) == 0 {
		return nil, fmt.Errorf("-print-mcp-json: no pre-registered client (mcp.clients in %s)", "DEVAUTH_CONFIG_FILE")
	}
	c := clients[0]
	if id != "" {
		i := slices.IndexFunc(clients, func(c config.Client) bool { return c.ID == id })
		if i < 0 {
			ids := make([]string, 0, len(clients))
			for _, c := range clients {
				ids = append(ids, c.ID)
			}
			return nil, fmt.Errorf("-client %q: no such pre-registered client (%s)", id, strings.Join(ids, ", "))
		}
		c = clients[i]
	}
	type authBlock struct {
		ClientID     string   `json:"CLIENT_ID"`
		ClientSecret string   `json:"CLIENT_SECRET,omitempty"`
		Scopes       []string `json:"scopes"`
	}
	type server struct {
		URL  string    `json:"url"`
		Auth authBlock `json:"auth"`
	}
	doc := map[string]map[string]server{"mcpServers": {"mcpauthz": {
		URL: mcpURL, Auth: authBlock{ClientID: c.ID, ClientSecret: c.Secret, Scopes: c.Scopes},
	}}}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}
