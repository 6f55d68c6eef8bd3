// Command devauth is a local OAuth 2.1 authorization server that speaks
// PropelAuth's MCP endpoints and wire formats, so authz and mcp-gateway run
// and are tested against it without a PropelAuth account. Point
// PROPELAUTH_AUTH_URL at it. Run with -h to see the variables it reads.
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
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/service"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/config"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/server"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/store"
)

var devauth = service.Service[config.Config]{
	Name:    "devauth",
	Summary: "devauth is a local OAuth 2.1 authorization server that speaks PropelAuth's MCP endpoints and wire formats, so authz and mcp-gateway run and are tested without a PropelAuth account.",
	Load:    config.Load,
	Flags:   flags,
	Serve:   serve,
}

func main() { service.Main(devauth) }

// shutdownTimeout bounds graceful shutdown; requests held by fault injection
// are released at once, so this only waits for ordinary requests.
const shutdownTimeout = 10 * time.Second

// flags adds -print-mcp-json and -client, which print Cursor's mcp.json
// instead of serving.
func flags(fs *flag.FlagSet) func(context.Context, config.Config, io.Writer) (bool, error) {
	printMCPJSON := fs.String("print-mcp-json", "", "print Cursor's mcp.json for a pre-registered client and the MCP server at `URL`, and exit")
	clientID := fs.String("client", "", "with -print-mcp-json: the client `ID` (default: the first in the configuration)")
	return func(_ context.Context, cfg config.Config, stdout io.Writer) (bool, error) {
		if *printMCPJSON == "" {
			return false, nil
		}
		out, err := cursorMCPJSON(cfg.MCP.Clients, *clientID, *printMCPJSON)
		if err != nil {
			return true, err
		}
		_, err = stdout.Write(out)
		return true, err
	}
}

// serve starts devauth on DEVAUTH_LISTEN and serves until ctx is done.
func serve(ctx context.Context, cfg config.Config, env service.Env) error {
	logger := env.Logger
	dir := cfg.Users
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
	}

	ln, err := env.Listen(ctx, "DEVAUTH_LISTEN", cfg.Listen)
	if err != nil {
		return err
	}
	// With PROPELAUTH_AUTH_URL unset, the issuer names the port bound.
	cfg.Bound(ln.Addr())
	srv := server.New(cfg, dir, logger, opts)
	httpSrv := srv.HTTPServer(logger)

	sweepCtx, stopSweep := context.WithCancel(context.Background())
	defer stopSweep()
	go srv.Store.Run(sweepCtx, 30*time.Second)

	logger.Info("devauth serving", "addr", ln.Addr().String(), "issuer", cfg.Issuer(), "users", dir.Len())

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
		return nil, errors.New("-print-mcp-json: no pre-registered client (mcp.clients in DEVAUTH_CONFIG_FILE)")
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
