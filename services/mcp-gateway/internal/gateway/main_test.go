package gateway_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/httperror"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/stacktest"
)

// stack is the real redis + devauth + authz + in-process gateway every test
// and benchmark of this package shares. Tests that break a service start their
// own copy of it.
var stack *stacktest.Stack

func TestMain(m *testing.M) { os.Exit(stacktest.Main(m, &stack)) }

const (
	scopeUser = "read:user_data"
	scopeOrg  = "read:org_data"
)

// mint returns a fresh token for alice with scopes, for the shared gateway's
// resource unless resource is given.
func mint(t testing.TB, scopes []string, resource ...string) string {
	t.Helper()
	res := stack.Gateway.MCP()
	if len(resource) > 0 {
		res = resource[0]
	}
	return stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: scopes, Resource: res})
}

var rpcID atomic.Int64

// callBody is a tools/call JSON-RPC request for tool.
func callBody(tool string) string {
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":{}}}`, rpcID.Add(1), tool)
}

// listBody is a tools/list JSON-RPC request.
func listBody() string {
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/list"}`, rpcID.Add(1))
}

// post sends body to url as an MCP client of protocol 2025-06-18 would (no
// Mcp-Method header), with token as bearer unless empty, and extra headers.
func post(t testing.TB, url, token, body string, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Add(hdr[i], hdr[i+1])
		}
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// rpcResult is a decoded JSON-RPC response.
type rpcResult struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// readRPC decodes a 200 JSON-RPC response.
func readRPC(t testing.TB, res *http.Response) rpcResult {
	t.Helper()
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200: %s (WWW-Authenticate %q)", res.StatusCode, b, res.Header.Get("WWW-Authenticate"))
	}
	var r rpcResult
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("not a JSON-RPC response: %v: %s", err, b)
	}
	return r
}

// toolResult is the part of a CallToolResult the tests read.
type toolResult struct {
	IsError           bool            `json:"isError"`
	StructuredContent json.RawMessage `json:"structuredContent"`
	Content           []struct {
		Text string `json:"text"`
	} `json:"content"`
}

func callTool(t testing.TB, url, token, tool string, into any) toolResult {
	t.Helper()
	r := readRPC(t, post(t, url, token, callBody(tool)))
	if r.Error != nil {
		t.Fatalf("tools/call %s: JSON-RPC error %d %s", tool, r.Error.Code, r.Error.Message)
	}
	var tr toolResult
	if err := json.Unmarshal(r.Result, &tr); err != nil {
		t.Fatal(err)
	}
	if into != nil && !tr.IsError {
		if err := json.Unmarshal(tr.StructuredContent, into); err != nil {
			t.Fatal(err)
		}
	}
	return tr
}

// errorBody reads a gateway error body.
func errorBody(t testing.TB, res *http.Response) httperror.Body {
	t.Helper()
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var body httperror.Body
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&body); err != nil {
		t.Fatalf("error body is not JSON: %v: %q", err, b)
	}
	return body
}
