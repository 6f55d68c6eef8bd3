package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
)

// startFloor serves both floors on loopback until the test ends and returns
// the MCP endpoint and the gRPC address.
func startFloor(t *testing.T) (mcpURL, grpcAddr string) {
	t.Helper()
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	mcpURL = "http://" + mln.Addr().String() + "/mcp"
	go func() { done <- serve(ctx, mln, gln, mcpURL, "http://127.0.0.1:40000/oauth/2.1") }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return mcpURL, gln.Addr().String()
}

// TestWhoAmI: the floor answers who_am_i with the gateway's own tool, for
// alice with a read:user_data token: her user without organizations, which
// the tool withholds from a token without read:org_data, and the claims
// authz passes on. tools/list shows what the gateway shows that token.
func TestWhoAmI(t *testing.T) {
	t.Parallel()
	mcpURL, _ := startFloor(t)
	client := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil)
	cs, err := client.Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: mcpURL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()

	list, err := cs.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range list.Tools {
		names = append(names, tool.Name)
	}
	if diff := cmp.Diff([]string{"who_am_i"}, names); diff != "" {
		t.Errorf("tools/list (-want +got):\n%s", diff)
	}

	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "who_am_i"})
	if err != nil {
		t.Fatal(err)
	}
	if res.IsError {
		t.Fatalf("who_am_i is a tool error: %+v", res.Content)
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	var got tools.WhoAmI
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("who_am_i answered %s: %v", b, err)
	}
	var claims map[string]any
	if err := json.Unmarshal(got.Claims, &claims); err != nil {
		t.Fatalf("claims %s: %v", got.Claims, err)
	}
	exp, err := time.Parse(time.RFC3339, got.ExpiresAt)
	if err != nil {
		t.Fatalf("expires_at %q: %v", got.ExpiresAt, err)
	}
	if got, want := claims["exp"], float64(exp.Unix()); got != want {
		t.Errorf("claims exp %v, want expires_at's %v", got, want)
	}
	// The fields that change with the time and the port, checked above.
	got.Claims, got.ExpiresAt = nil, ""
	want := tools.WhoAmI{
		Subject:  seedusers.AliceID,
		ClientID: "devauth-test-client",
		Scopes:   []string{"read:user_data"},
		Audience: []string{mcpURL},
		Issuer:   "http://127.0.0.1:40000/oauth/2.1",
		User: &tools.User{
			UserID:         seedusers.AliceID,
			Email:          seedusers.AliceEmail,
			FirstName:      "Alice",
			LastName:       "Liddell",
			Username:       "alice",
			PictureURL:     "https://img.propelauth.com/2a27d237-db8c-4f82-84fb-5824dfaedc87.png",
			EmailConfirmed: true,
			CreatedAt:      "2025-01-01T00:00:00Z",
			LastActiveAt:   "2026-01-01T00:00:00Z",
			Orgs:           []tools.Org{},
		},
		OrgsWithheld: tools.OrgsWithheld([]string{"read:org_data"}),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("who_am_i (-want +got):\n%s", diff)
	}
	for _, k := range []string{"active", "aud", "client_id", "exp", "iat", "iss", "scope", "sub", "token_type"} {
		if _, ok := claims[k]; !ok {
			t.Errorf("claims lack %q: %v", k, claims)
		}
	}
}

// TestGRPCHealth: the gRPC floor answers Health/Check SERVING.
func TestGRPCHealth(t *testing.T) {
	t.Parallel()
	_, addr := startFloor(t)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	res, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("status %v, want SERVING", res.GetStatus())
	}
}

// TestRunRejectsBadFlags: stray arguments and an address that cannot be
// bound fail with the flag named.
func TestRunRejectsBadFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"stray argument", []string{"serve"}, `unexpected arguments ["serve"]`},
		{"bad mcp address", []string{"-mcp-listen", "127.0.0.1:-1"}, "-mcp-listen: "},
		{"bad grpc address", []string{"-grpc-listen", "127.0.0.1:-1"}, "-grpc-listen: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := run(t.Context(), tc.args, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("run(%q) = %v, want an error containing %q", tc.args, err, tc.want)
			}
		})
	}
}
