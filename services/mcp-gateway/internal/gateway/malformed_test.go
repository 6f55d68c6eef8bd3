package gateway_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMalformedRequests sends broken requests with a valid token: each must get
// a clear 4xx or a JSON-RPC error, never a 5xx or a dropped connection.
func TestMalformedRequests(t *testing.T) {
	t.Parallel()
	g := stack.Gateway
	token := mint(t, []string{scopeUser, scopeOrg})
	huge := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","arguments":{"pad":"` + strings.Repeat("a", 2<<20) + `"}}}`
	call := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"who_am_i"}}`
	tests := []struct {
		name   string
		method string
		body   string
		hdr    []string
		// chunked sends the body without a Content-Length.
		chunked bool
		// wantStatus is the HTTP status; with 200, wantRPC says whether a
		// JSON-RPC error (true) or a tool error result (false) is expected.
		wantStatus int
		wantRPC    bool
	}{
		{name: "bad JSON", body: `{"jsonrpc":"2.0","id":1,"method":`, wantStatus: 400},
		{name: "not an object", body: `42`, wantStatus: 400},
		{name: "empty body", body: ``, wantStatus: 400},
		{name: "batch", body: `[` + call + `]`, wantStatus: 400},
		{name: "empty batch", body: `[]`, wantStatus: 400},
		{name: "JSON-RPC 1.0", body: `{"id":1,"method":"tools/list"}`, wantStatus: 400},
		{name: "response instead of request", body: `{"jsonrpc":"2.0","id":1,"result":{}}`, wantStatus: 400},
		{name: "repeated method key", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}`, wantStatus: 400},
		{name: "repeated tool name", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","name":"list_my_orgs"}}`, wantStatus: 400},
		{name: "huge body", body: huge, wantStatus: 413},
		{name: "wrong content type", body: call, hdr: []string{"Content-Type", "", "Content-Type", "text/plain"}, wantStatus: 415},
		{name: "form content type", body: "access=1", hdr: []string{"Content-Type", "", "Content-Type", "application/x-www-form-urlencoded"}, wantStatus: 415},
		{name: "no Accept", body: call, hdr: []string{"Accept", ""}, wantStatus: 400},
		{name: "Accept json only", body: call, hdr: []string{"Accept", "", "Accept", "application/json"}, wantStatus: 400},
		{name: "unsupported protocol version", body: call, hdr: []string{"Mcp-Protocol-Version", "", "Mcp-Protocol-Version", "1999-01-01"}, wantStatus: 400},
		{name: "unknown method", body: `{"jsonrpc":"2.0","id":1,"method":"tools/destroy"}`, wantStatus: 400},
		{name: "unknown tool", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"rm_rf"}}`, wantStatus: 200, wantRPC: true},
		{name: "tool name missing", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}`, wantStatus: 200, wantRPC: true},
		{name: "tool name not a string", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}`, wantStatus: 400},
		{name: "params not an object", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"who_am_i"}`, wantStatus: 400},
		{name: "invalid arguments", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","arguments":{"x":1}}}`, wantStatus: 200},
		{name: "arguments not an object", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","arguments":[1]}}`, wantStatus: 200},
		{name: "Mcp-Name disagrees with body", body: call, hdr: []string{"Mcp-Method", "tools/call", "Mcp-Name", "list_my_orgs"}, wantStatus: 400},
		{name: "Mcp-Method disagrees with body", body: call, hdr: []string{"Mcp-Method", "tools/list"}, wantStatus: 400},
		{name: "new protocol without Mcp-Method", body: call, hdr: []string{"Mcp-Protocol-Version", "", "Mcp-Protocol-Version", "2026-07-28"}, wantStatus: 400},
		{name: "GET", method: http.MethodGet, wantStatus: 405},
		{name: "DELETE", method: http.MethodDelete, wantStatus: 405},
		{name: "PUT", method: http.MethodPut, body: call, wantStatus: 405},
		{name: "foreign Origin", body: call, hdr: []string{"Origin", "https://evil.example.com"}, wantStatus: 403},
		{name: "null Origin", body: call, hdr: []string{"Origin", "null"}, wantStatus: 403},
		{name: "rebound Host", body: call, hdr: []string{"Host", "evil.example.com"}, wantStatus: 403},
		{name: "100 KiB header", body: call, hdr: []string{"X-Pad", strings.Repeat("p", 100<<10)}, wantStatus: 431},
		{name: "100 KiB token", body: call, hdr: []string{"Authorization", "", "Authorization", "Bearer " + strings.Repeat("t", 100<<10)}, wantStatus: 431},
		{name: "5 KiB token", body: call, hdr: []string{"Authorization", "", "Authorization", "Bearer " + strings.Repeat("t", 5<<10)}, wantStatus: 401},
		{name: "DPoP scheme", body: call, hdr: []string{"Authorization", "", "Authorization", "DPoP " + token}, wantStatus: 401},
		{name: "non-UTF-8 token", body: call, hdr: []string{"Authorization", "", "Authorization", "Bearer \xff\xfe\xfd"}, wantStatus: 401},
		{name: "non-UTF-8 Mcp-Name", body: call, hdr: []string{"Mcp-Method", "tools/call", "Mcp-Name", "who_am_i\xff"}, wantStatus: 400},
		{name: "non-UTF-8 method", body: `{"jsonrpc":"2.0","id":1,"method":"tools/` + "\xff" + `call","params":{"name":"who_am_i"}}`, wantStatus: 400},
		{name: "non-UTF-8 tool name", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i` + "\xff" + `"}}`, wantStatus: 200, wantRPC: true},
		{name: "non-UTF-8 key", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"na` + "\xff" + `me":"who_am_i"}}`, wantStatus: 200, wantRPC: true},
		{name: "raw control byte in a string", body: "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/\x01call\"}", wantStatus: 400},
		{name: "escaped NUL in method", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call\u0000","params":{"name":"who_am_i"}}`, wantStatus: 400},
		{name: "escaped NUL in tool name", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i\u0000"}}`, wantStatus: 200, wantRPC: true},
		{name: "id is an object", body: `{"jsonrpc":"2.0","id":{"a":1},"method":"tools/list"}`, wantStatus: 400},
		{name: "deeply nested arguments", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","arguments":{"a":` + strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000) + `}}}`, wantStatus: 400},
		{name: "huge chunked body", body: huge, chunked: true, wantStatus: 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			var body io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				body = io.MultiReader(body) // hides the length from the client
			}
			req, err := http.NewRequest(method, g.MCP(), body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
			req.Header.Set("Authorization", "Bearer "+token)
			for i := 0; i+1 < len(tt.hdr); i += 2 {
				switch {
				case tt.hdr[i] == "Host":
					req.Host = tt.hdr[i+1]
				case tt.hdr[i+1] == "":
					req.Header.Del(tt.hdr[i])
				default:
					req.Header.Add(tt.hdr[i], tt.hdr[i+1])
				}
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("request failed (dropped connection?): %v", err)
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d: %.300s", res.StatusCode, tt.wantStatus, b)
			}
			if res.StatusCode != http.StatusOK {
				if len(b) == 0 {
					t.Error("error status without a body")
				}
				return
			}
			var r rpcResult
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatalf("200 without a JSON-RPC response: %v: %.300s", err, b)
			}
			if tt.wantRPC {
				if r.Error == nil {
					t.Errorf("want a JSON-RPC error, got %s", b)
				}
				return
			}
			var tr toolResult
			if r.Error != nil || json.Unmarshal(r.Result, &tr) != nil || !tr.IsError {
				t.Errorf("want a tool error result, got %s", b)
			}
		})
	}
}

// TestMalformedHeaderBytes sends, over a raw connection, header bytes Go's
// HTTP client refuses to send: empty and blank Authorization values and
// control bytes in header values. Each gets a clear 4xx with a body: 401 when
// the credentials are unusable, 400 (from net/http itself) for control bytes.
func TestMalformedHeaderBytes(t *testing.T) {
	t.Parallel()
	g := stack.Gateway
	u, err := url.Parse(g.URL)
	if err != nil {
		t.Fatal(err)
	}
	auth := "Authorization: Bearer " + mint(t, []string{scopeUser}) + "\r\n"
	call := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"who_am_i"}}`
	tests := []struct {
		name       string
		hdr        string
		wantStatus int
	}{
		{"empty Authorization", "Authorization:\r\n", 401},
		{"blank Authorization", "Authorization:    \r\n", 401},
		{"Bearer and spaces only", "Authorization: Bearer    \r\n", 401},
		{"tab inside the token", "Authorization: Bearer abc\tdef\r\n", 401},
		{"control byte in the token", "Authorization: Bearer abc\x01def\r\n", 400},
		{"NUL in the token", "Authorization: Bearer abc\x00def\r\n", 400},
		{"DEL in the token", "Authorization: Bearer abc\x7fdef\r\n", 400},
		{"control byte in Mcp-Name", auth + "Mcp-Method: tools/call\r\nMcp-Name: who\x01am_i\r\n", 400},
		{"control byte in the protocol version", auth + "Mcp-Protocol-Version: 2025-06-18\x02\r\n", 400},
		{"control byte in a header name", auth + "X-B\x01d: 1\r\n", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			conn, err := net.Dial("tcp", u.Host)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			req := "POST /mcp HTTP/1.1\r\nHost: " + u.Host + "\r\nContent-Type: application/json\r\n" +
				"Accept: application/json, text/event-stream\r\nContent-Length: " + strconv.Itoa(len(call)) + "\r\n" +
				tt.hdr + "\r\n" + call
			if _, err := io.WriteString(conn, req); err != nil {
				t.Fatal(err)
			}
			res, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no HTTP answer (dropped connection?): %v", err)
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			if res.StatusCode != tt.wantStatus || len(b) == 0 {
				t.Fatalf("status %d with %d body bytes, want %d with a body: %.300s", res.StatusCode, len(b), tt.wantStatus, b)
			}
		})
	}
}
