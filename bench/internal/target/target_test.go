package target

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/mcpauthz/mcpauthz/bench/internal/floor"
	"github.com/mcpauthz/mcpauthz/bench/internal/load"
	"github.com/mcpauthz/mcpauthz/bench/internal/tokens"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// startFloors starts the floors (bin/mcp-floor) for the test.
func startFloors(t *testing.T) *floor.Floors {
	t.Helper()
	fl, err := floor.Start(t.Context(), floor.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fl.Stop)
	return fl
}

func TestMCPCallAgainstFloor(t *testing.T) {
	t.Parallel()
	url := startFloors(t).MCPURL
	m := &MCPCall{URL: url, Client: NewHTTPClient(2)}
	if got := m.Do(t.Context(), 0); got != load.OK {
		t.Errorf("floor who_am_i: outcome %q, want ok", got)
	}
	// With a token source: the header is added and an exhausted source stops.
	m.Tokens = tokens.NewOnce([]string{"tok"})
	if got := m.Do(t.Context(), 0); got != load.OK {
		t.Errorf("with token: outcome %q, want ok", got)
	}
	if got := m.Do(t.Context(), 0); got != load.Stop {
		t.Errorf("exhausted tokens: outcome %q, want Stop", got)
	}
	for _, proto := range []string{"2025-06-18", "2025-11-25", ProtocolVersion} {
		old := &MCPCall{URL: url, Client: NewHTTPClient(1), Protocol: proto}
		if got := old.Do(t.Context(), 0); got != load.OK {
			t.Errorf("protocol %s: outcome %q, want ok", proto, got)
		}
	}
}

func TestMCPCallLabels(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"ok", 200, `{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{"user":{"email":"a"}}}}`, load.OK},
		{"sse framed ok", 200, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"structuredContent\":{\"user\":{}}}}\n\n", load.OK},
		{"user error", 200, `{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{"user_error":"x"}}}`, "user_error"},
		{"no user", 200, `{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{}}}`, "no user"},
		{"tool error", 200, `{"jsonrpc":"2.0","id":1,"result":{"isError":true,"content":[]}}`, "tool error"},
		{"jsonrpc error", 200, `{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"x"}}`, "jsonrpc error"},
		{"empty", 200, ``, "no result"},
		{"unauthorized", 401, `{"error":"invalid_token"}`, "http 401"},
		{"unavailable", 503, ``, "http 503"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			}))
			t.Cleanup(srv.Close)
			m := &MCPCall{URL: srv.URL, Client: NewHTTPClient(1)}
			if got := m.Do(t.Context(), 0); got != tt.want {
				t.Errorf("outcome %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMCPCallTransportErrors(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	m := &MCPCall{URL: "http://" + addr + "/mcp", Client: NewHTTPClient(1)}
	if got := m.Do(t.Context(), 0); got != "transport" {
		t.Errorf("refused connection: outcome %q, want transport", got)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if got := m.Do(ctx, 0); got != "timeout" {
		t.Errorf("cancelled request: outcome %q, want timeout", got)
	}
}

func TestHealthCheckAgainstGRPCFloor(t *testing.T) {
	t.Parallel()
	fl := startFloors(t)
	conn, err := DialGRPC(fl.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	h := &HealthCheck{Client: healthpb.NewHealthClient(conn)}
	if got := h.Do(t.Context(), 0); got != load.OK {
		t.Errorf("outcome %q, want ok", got)
	}
	fl.Stop()
	if got := h.Do(t.Context(), 0); got != "grpc Unavailable" {
		t.Errorf("stopped server: outcome %q, want grpc Unavailable", got)
	}
}
