package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/stacktest"
)

// BenchmarkFederatedCall compares tools/call of a trivial upstream tool made
// directly to a go-sdk upstream (stateless, JSON answers, no
// authentication) with the same call through the gateway (token checked by
// authz, identity assertion attached, request forwarded raw), in the same
// run. Compare the two ns/op; the difference is the gateway's cost.
func BenchmarkFederatedCall(b *testing.B) {
	s := mcp.NewServer(&mcp.Implementation{Name: "bench-upstream", Version: "1"}, nil)
	type in struct {
		Text string `json:"text"`
	}
	mcp.AddTool(s, &mcp.Tool{Name: "echo"}, func(_ context.Context, _ *mcp.CallToolRequest, v in) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: v.Text}}}, nil, nil
	})
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true}))
	b.Cleanup(up.Close)
	file := writeFile(b, "upstreams.yaml", fmt.Sprintf("upstreams:\n  - {name: bench, url: %s/mcp, prefix: bench_}\n", up.URL))
	gw := stacktest.NewGateway(b, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"UPSTREAMS_FILE": file, "LOG_LEVEL": "warn"})
	token := stack.Devauth.Mint(b, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: gw.MCP()})

	run := func(b *testing.B, url, name, token string) {
		body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + name + `","arguments":{"text":"hi"}}}`
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				res, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				out, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK || !strings.Contains(string(out), `"hi"`) {
					b.Fatalf("status %d: %s", res.StatusCode, out)
				}
			}
		})
	}
	b.Run("direct", func(b *testing.B) { run(b, up.URL+"/mcp", "echo", "") })
	b.Run("gateway", func(b *testing.B) { run(b, gw.MCP(), "bench_echo", token) })
}
