package gateway_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/federation"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/gateway"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
)

// BenchmarkServeMCPRouted measures the gateway's routed-call path in
// process: a tools/call of an upstream tool, as the load tool's 2026-07-28
// client sends it, through gateway.ServeHTTP with an authz that answers at
// once, forwarded over loopback HTTP to the MCP floor (bin/mcp-floor, a
// go-sdk server in a process of its own, so that allocations and cpu-ns/op,
// this process's CPU time per request, are the gateway's alone). The
// upstream is named twice in the file, with identity: none and with
// identity: jwt (the floor does not check the assertion; the gateway signs
// and attaches it all the same). Compare builds with benchstat; on a shared
// machine cpu-ns/op and allocs/op say more than ns/op.
func BenchmarkServeMCPRouted(b *testing.B) {
	floor := testenv.StartProcess(b, "mcp-floor", testenv.Binary(b, "mcp-floor"), testenv.ProcessOptions{
		Args: []string{"-mcp-listen", "127.0.0.1:0", "-grpc-listen", "127.0.0.1:0"},
	})
	addr, err := floor.Listening(b.Context(), "mcp-listen")
	if err != nil {
		b.Fatal(err)
	}
	file := writeFile(b, "upstreams.yaml", fmt.Sprintf(`upstreams:
  - {name: none, url: http://%[1]s/mcp, prefix: none_, identity: none}
  - {name: jwt, url: http://%[1]s/mcp, prefix: jwt_}
`, addr))
	cfg := loadConfig(b, map[string]string{"UPSTREAMS_FILE": file})
	fed, err := federation.New(federation.Options{File: cfg.Upstreams, Issuer: cfg.ServerURL})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { fed.Close() })
	if err := fed.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	principal := &authzv1.Principal{Subject: "user-1", ClientId: "client-1", Scopes: []string{scopeUser}, ClaimsJson: []byte(`{"active":true,"sub":"user-1"}`)}
	allowed := &authzv1.AuthorizeResponse{Allowed: true, Principal: principal, TokenRef: strings.Repeat("ab", 32)}
	g, err := gateway.New(gateway.Options{Config: cfg, Authz: fixedAuthz{allowed}, Tools: tools.BuiltIn(), Federation: fed})
	if err != nil {
		b.Fatal(err)
	}
	for _, tool := range []string{"none_who_am_i", "jwt_who_am_i"} {
		body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcpload","version":"1.0.0"},"io.modelcontextprotocol/clientCapabilities":{}}}}`
		call := func(b *testing.B) {
			req := httptest.NewRequest(http.MethodPost, "http://mcp.example.com/mcp", strings.NewReader(body))
			h := req.Header
			h["Content-Type"] = []string{"application/json"}
			h["Accept"] = []string{"application/json, text/event-stream"}
			h["Mcp-Protocol-Version"] = []string{"2026-07-28"}
			h["Mcp-Method"] = []string{"tools/call"}
			h["Mcp-Name"] = []string{tool}
			h["Authorization"] = []string{"Bearer tok"}
			rec := httptest.NewRecorder()
			g.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"user":{`) {
				b.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
		}
		b.Run("identity="+strings.TrimSuffix(tool, "_who_am_i"), func(b *testing.B) {
			call(b) // the upstream's era, the assertion: found once
			b.ReportAllocs()
			cpu0, _ := cpuTime(b)
			for b.Loop() {
				call(b)
			}
			cpu1, _ := cpuTime(b)
			b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}
