package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	mcpstack "github.com/mcpauthz/mcpauthz/internal/stack"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// codeUpstreamUnavailable is the gateway's JSON-RPC error code for an
// upstream that is down (federation.CodeUnavailable, internal to the
// gateway's module).
const codeUpstreamUnavailable = -32010

// TestGoSDKClientFederationStdioKilled: server-everything over stdio, a child
// process of the gateway binary, is killed while the go-sdk client (through
// the real OAuth login) waits on its long-running tool. The call fails at
// once with a JSON-RPC error naming the upstream, not at the tool's end nor
// the call's timeout; the gateway starts the child again and the next call
// works.
func TestGoSDKClientFederationStdioKilled(t *testing.T) {
	slow(t)
	t.Parallel()
	nodeModules(t) // npm ci in e2e/ts when its packages are missing
	// The child writes its pid (sh's, which exec makes node's) on every
	// start, so the test knows which process to kill and sees the restart.
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	script := "echo $$ > " + testenv.ShellQuote(pidFile) + "; exec " + testenv.ShellJoin(testenv.EverythingCommand(t, "stdio")...)
	file := filepath.Join(t.TempDir(), "upstreams.yaml")
	// The upstreams file reads $$ as a literal $ (and ${NAME} as a variable).
	conf := fmt.Sprintf("upstreams:\n  - name: everything\n    command: [sh, -c, %q]\n    timeout: 120s\n", strings.ReplaceAll(script, "$", "$$"))
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s := mcpstack.New(t, mcpstack.Options{Authz: 1, Gateways: 1, GatewayEnv: []string{"UPSTREAMS_FILE=" + file}})
	childPid := func() int {
		b, _ := os.ReadFile(pidFile)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return pid
	}
	first := childPid()
	if first == 0 {
		t.Fatal("the gateway started no stdio child")
	}

	h, login := loginHandler(t, "http://127.0.0.1:4568/callback")
	progressed := make(chan struct{}, 1)
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-go-sdk", Version: "1.0.0"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) {
			select {
			case progressed <- struct{}{}:
			default:
			}
		},
	})
	cs, err := client.Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: s.Resource, OAuthHandler: h}, nil)
	if err != nil {
		t.Fatalf("Connect: %v (pages: %v)", err, login.pages)
	}
	defer cs.Close()

	errc := make(chan error, 1)
	go func() {
		_, err := cs.CallTool(t.Context(), &mcp.CallToolParams{
			Name: "trigger-long-running-operation", Arguments: map[string]any{"duration": 60, "steps": 60},
			Meta: mcp.Meta{"progressToken": "killed"},
		})
		errc <- err
	}()
	select {
	case <-progressed:
	case <-time.After(30 * time.Second):
		t.Fatal("no progress from the long-running tool")
	}
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatalf("killing the child %d: %v", first, err)
	}
	// Well under the tool's 60 s and the call's 120 s timeout.
	select {
	case err := <-errc:
		var rpcErr *jsonrpc.Error
		if !errors.As(err, &rpcErr) || rpcErr.Code != codeUpstreamUnavailable || !strings.Contains(rpcErr.Message, `upstream "everything"`) {
			t.Errorf("the call when the child died: %v, want JSON-RPC error %d naming upstream \"everything\"", err, codeUpstreamUnavailable)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the call did not fail when the child died")
	}

	// Started again (after the 1 s backoff): a new pid, counted, up, and its
	// tools listed again (they went while it was down).
	gw := s.Gateways[0]
	testenv.Eventually(t, 30*time.Second, "the child restarted, up and listed", func() bool {
		code, b := get(t, gw.MetricsURL+"/metrics")
		if code != http.StatusOK {
			t.Fatalf("GET %s/metrics: %d", gw.MetricsURL, code)
		}
		m := string(b)
		if childPid() == first ||
			!strings.Contains(m, `mcp_gateway_upstream_restarts_total{upstream="everything"} 1`) ||
			!strings.Contains(m, `mcp_gateway_upstream_up{upstream="everything"} 1`) {
			return false
		}
		list, err := cs.ListTools(t.Context(), nil)
		return err == nil && slices.ContainsFunc(list.Tools, func(tl *mcp.Tool) bool { return tl.Name == "echo" })
	})
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "back"}})
	if err != nil || res.IsError || len(res.Content) == 0 || !strings.Contains(res.Content[0].(*mcp.TextContent).Text, "back") {
		t.Errorf("echo after the restart: %v %+v", err, res)
	}
	if out := gw.Proc.Output(); !strings.Contains(out, "the upstream process exited; restarting it") {
		t.Errorf("the gateway did not log the child's exit:\n%s", out)
	}
}
