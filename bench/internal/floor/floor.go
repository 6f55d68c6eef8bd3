// Package floor serves the two baselines the load tool measures the services
// against, in the same run and on the same machine:
//
//   - an MCP server without authentication, built like the gateway's (go-sdk,
//     stateless streamable HTTP, JSON responses) with a who_am_i tool of the
//     same output schema whose handler returns a comparable payload, so the
//     gateway's figures divided by its figures are the price of authentication;
//   - a gRPC server whose only method is grpc.health.v1 Health/Check, the
//     cheapest unary call, to compare authz Authorize with.
//
// The load tool runs them in a child process of its own (see [Serve]), as the
// gateway and authz run in theirs, so a floor does not share a Go runtime, a
// heap or a garbage collector with the load generator.
package floor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// WhoAmI mirrors the gateway's who_am_i output (services/mcp-gateway/internal/tools),
// field for field, so both servers derive the same output schema and encode a
// payload of the same shape.
type WhoAmI struct {
	Subject   string     `json:"subject" jsonschema:"the token's subject (user ID)"`
	ClientID  string     `json:"client_id" jsonschema:"the OAuth client the token was issued to"`
	Scopes    []string   `json:"scopes" jsonschema:"the scopes granted to the token"`
	ExpiresAt string     `json:"expires_at,omitempty" jsonschema:"when the token expires (RFC 3339)"`
	Audience  []string   `json:"audience" jsonschema:"the resources the token was issued for"`
	Issuer    string     `json:"issuer,omitempty" jsonschema:"the authorization server that issued the token"`
	Claims    JSONObject `json:"claims,omitempty" jsonschema:"every member of the introspection response"`
	User      *User      `json:"user,omitempty" jsonschema:"the user behind the token"`
	UserError string     `json:"user_error,omitempty" jsonschema:"why user is missing, when the lookup failed"`
	// OrgsWithheld says why user.orgs is empty when the token may not see
	// organizations (list_my_orgs needs read:org_data for the same data).
	OrgsWithheld string `json:"orgs_withheld,omitempty" jsonschema:"why user.orgs is empty: the token is not granted the scope organizations need"`
}

// JSONObject mirrors the gateway's type of the same name: an encoded JSON object
// placed into the output as is (the gateway gets the claims from authz already
// encoded), with output schema {"type": "object"}.
type JSONObject []byte

// MarshalJSON returns o itself.
func (o JSONObject) MarshalJSON() ([]byte, error) {
	if len(o) == 0 {
		return []byte("{}"), nil
	}
	return o, nil
}

// inputSchema is the tool's input schema (no arguments), handed to the SDK
// already encoded as the gateway hands it (see schemas in its tools package:
// the go-sdk re-encodes a *jsonschema.Schema on every tools/call).
var inputSchema = func() json.RawMessage {
	s, err := jsonschema.For[struct{}](nil)
	if err != nil {
		panic(err)
	}
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return b
}()

// outputSchema is WhoAmI's schema, inferred as the gateway infers it.
var outputSchema = func() *jsonschema.Schema {
	s, err := jsonschema.For[WhoAmI](&jsonschema.ForOptions{
		TypeSchemas: map[reflect.Type]*jsonschema.Schema{reflect.TypeFor[JSONObject](): {Type: "object"}},
	})
	if err != nil {
		panic(err)
	}
	return s
}()

// User mirrors the gateway's user part of who_am_i.
type User struct {
	UserID         string `json:"user_id" jsonschema:"the user's ID (the token subject)"`
	Email          string `json:"email" jsonschema:"the user's email address"`
	FirstName      string `json:"first_name,omitempty"`
	LastName       string `json:"last_name,omitempty"`
	Username       string `json:"username,omitempty"`
	PictureURL     string `json:"picture_url,omitempty"`
	EmailConfirmed bool   `json:"email_confirmed"`
	MFAEnabled     bool   `json:"mfa_enabled"`
	CreatedAt      string `json:"created_at,omitempty" jsonschema:"when the user was created (RFC 3339)"`
	LastActiveAt   string `json:"last_active_at,omitempty" jsonschema:"when the user was last active (RFC 3339)"`
	Orgs           []Org  `json:"orgs" jsonschema:"the organizations the user belongs to"`
}

// Org mirrors the gateway's organization membership.
type Org struct {
	OrgID          string   `json:"org_id"`
	OrgName        string   `json:"org_name"`
	URLSafeOrgName string   `json:"url_safe_org_name,omitempty"`
	Role           string   `json:"role" jsonschema:"the user's role in the organization"`
	InheritedRoles []string `json:"inherited_roles" jsonschema:"the role and every role it inherits"`
	Permissions    []string `json:"permissions" jsonschema:"the user's permissions in the organization"`
}

// Seeded user alice, as devauth serves her (package seedusers).
const aliceID = seedusers.AliceID

// whoAmI builds, on every call as the gateway does from the principal authz
// returned, the answer the gateway gives alice for a read:user_data token: the
// same members, values of the same length (the same encoded size as the
// gateway's), and, as the token lacks read:org_data, no organizations and the
// gateway's orgs_withheld.
func whoAmI(resource, issuer string) WhoAmI {
	now := time.Now().Truncate(time.Second)
	exp := now.Add(time.Hour)
	return WhoAmI{
		Subject:   aliceID,
		ClientID:  "devauth-test-client",
		Scopes:    []string{"read:user_data"},
		ExpiresAt: exp.UTC().Format(time.RFC3339),
		Audience:  []string{resource},
		Issuer:    issuer,
		Claims:    claims(exp.Unix(), now.Unix(), resource, issuer),
		User: &User{
			UserID:         aliceID,
			Email:          seedusers.AliceEmail,
			FirstName:      "Alice",
			LastName:       "Liddell",
			Username:       "alice",
			PictureURL:     "https://img.propelauth.com/2a27d237-db8c-4f82-84fb-5824dfaedc87.png",
			EmailConfirmed: true,
			MFAEnabled:     false,
			CreatedAt:      "2025-01-01T00:00:00Z",
			LastActiveAt:   "2026-01-01T00:00:00Z",
			Orgs:           []Org{},
		},
		OrgsWithheld: "organizations are shown only to tokens granted read:org_data (the scope list_my_orgs needs); this token was not",
	}
}

// claims writes the introspection response's members as authz's
// CLAIMS_FORMAT_JSON does: sorted by name, compact. (Resource and issuer are
// URLs without characters JSON must escape.)
func claims(exp, iat int64, resource, issuer string) JSONObject {
	b := make([]byte, 0, 320)
	b = append(b, `{"active":true,"aud":"`...)
	b = append(b, resource...)
	b = append(b, `","client_id":"devauth-test-client","exp":`...)
	b = strconv.AppendInt(b, exp, 10)
	b = append(b, `,"iat":`...)
	b = strconv.AppendInt(b, iat, 10)
	b = append(b, `,"iss":"`...)
	b = append(b, issuer...)
	b = append(b, `","scope":"read:user_data","sub":"`...)
	b = append(b, aliceID...)
	b = append(b, `","token_type":"Bearer"}`...)
	return b
}

// MCPHandler returns the unauthenticated MCP server: the go-sdk's stateless
// streamable HTTP handler with JSON responses, the options the gateway uses,
// and one tool, who_am_i.
func MCPHandler(logger *slog.Logger, resource, issuer string) http.Handler {
	server := mcp.NewServer(&mcp.Implementation{Name: "mcpload-floor", Title: "mcpload unauthenticated floor", Version: "1.0.0"}, &mcp.ServerOptions{
		Logger:       logger,
		Capabilities: &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{}},
	})
	mcp.AddTool(server, &mcp.Tool{
		Name:         "who_am_i",
		Title:        "Who am I",
		Description:  "Describes the caller (unauthenticated floor: a fixed user).",
		InputSchema:  inputSchema,
		OutputSchema: outputSchema,
	}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, WhoAmI, error) {
		return nil, whoAmI(resource, issuer), nil
	})
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{
		Stateless:                  true,
		JSONResponse:               true,
		Logger:                     logger,
		DisableLocalhostProtection: true,
		MaxRequestBodyBytes:        1 << 20,
	})
}

// NewGRPCServer returns a gRPC server with default options serving only
// grpc.health.v1 (status SERVING), whose Check is the no-op unary floor.
func NewGRPCServer() *grpc.Server {
	s := grpc.NewServer()
	h := health.NewServer()
	h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, h)
	return s
}

// Serve serves the MCP floor on mcpLn (at /mcp) and the gRPC floor on grpcLn
// until ctx is done. It returns the first serving error, or nil after a clean
// stop.
func Serve(ctx context.Context, logger *slog.Logger, mcpLn, grpcLn net.Listener) error {
	base := "http://" + mcpLn.Addr().String()
	mux := http.NewServeMux()
	// An issuer as long as devauth's, so the payload matches the gateway's.
	mux.Handle("/mcp", MCPHandler(logger, base+"/mcp", "http://127.0.0.1:40000/oauth/2.1"))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	gs := NewGRPCServer()

	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(mcpLn) }()
	go func() { errc <- gs.Serve(grpcLn) }()
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
		return fmt.Errorf("serving floors: %w", err)
	}
	return nil
}
