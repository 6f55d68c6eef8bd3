package target

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpauthz/mcpauthz/bench/internal/floor"
	"github.com/mcpauthz/mcpauthz/bench/internal/load"
	"github.com/mcpauthz/mcpauthz/bench/internal/tokens"
)

func TestToolCallAgainstFloor(t *testing.T) {
	t.Parallel()
	fl, err := floor.Start(t.Context(), floor.Options{LogFile: filepath.Join(t.TempDir(), "floors.log")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fl.Stop)
	errs := &ErrorLog{}
	c := &ToolCall{URL: fl.MCPURL, Client: NewHTTPClient(1), Tool: "who_am_i", Expect: []byte(`"user":{`), Errors: errs,
		Tokens: tokens.NewOnce([]string{"tok"}), Header: http.Header{"X-Mcpauthz-Identity": {"x.y.z"}}}
	if got := c.Do(t.Context(), 0); got != load.OK {
		t.Errorf("floor who_am_i: outcome %q, want ok", got)
	}
	if got := c.Do(t.Context(), 0); got != load.Stop {
		t.Errorf("exhausted tokens: outcome %q, want Stop", got)
	}
	// An answer without what the caller expects is not ok.
	other := &ToolCall{URL: fl.MCPURL, Client: NewHTTPClient(1), Tool: "who_am_i", Expect: []byte(`"client_id":"someone else"`), Errors: errs}
	if got := other.Do(t.Context(), 0); got != "unexpected result" {
		t.Errorf("unexpected answer: outcome %q, want unexpected result", got)
	}
	if c := errs.Counts(); len(c) != 0 {
		t.Errorf("errors %v logged for answers that were not errors", c)
	}
}

func TestToolCallLabels(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		body   string
		want   string
		errors map[string]uint64
	}{
		{"ok", 200, `{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{"client_id":"c"}}}`, load.OK, map[string]uint64{}},
		{"sse framed ok", 200, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"structuredContent\":{\"client_id\":\"c\"}}}\n\n", load.OK, map[string]uint64{}},
		{"unexpected", 200, `{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{}}}`, "unexpected result", map[string]uint64{}},
		{"tool error", 200, `{"jsonrpc":"2.0","id":1,"result":{"isError":true}}`, "tool error",
			map[string]uint64{`tool error: {"jsonrpc":"2.0","id":1,"result":{"isError":true}}`: 1}},
		{"upstream unavailable", 200, `{"jsonrpc":"2.0","id":1,"error":{"code":-32010,"message":"upstream \"identity\" is unavailable: refused","data":{"upstream":"identity"}}}`, "jsonrpc error -32010",
			map[string]uint64{`jsonrpc error -32010: upstream "identity" is unavailable: refused`: 1}},
		{"sse framed error", 200, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32011,\"message\":\"late\"}}\n\n", "jsonrpc error -32011",
			map[string]uint64{"jsonrpc error -32011: late": 1}},
		{"garbled error", 200, `{"error":{`, "jsonrpc error ?", nil},
		{"empty", 200, ``, "no result", map[string]uint64{}},
		{"unauthorized", 401, `{"error":"invalid_token"}`, "http 401", map[string]uint64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Mcp-Name") != "jwt_whoami" || r.Header.Get("Authorization") != "Bearer tok" {
					http.Error(w, "missing headers", http.StatusBadRequest)
					return
				}
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			}))
			t.Cleanup(srv.Close)
			errs := &ErrorLog{}
			c := &ToolCall{URL: srv.URL, Client: NewHTTPClient(1), Tool: "jwt_whoami", Tokens: tokens.NewCycle([]string{"tok"}), Expect: []byte(`"client_id":`), Errors: errs}
			if got := c.Do(t.Context(), 0); got != tt.want {
				t.Errorf("outcome %q, want %q", got, tt.want)
			}
			if tt.errors == nil {
				if len(errs.Counts()) != 1 {
					t.Errorf("errors %v, want one undecodable message", errs.Counts())
				}
				return
			}
			if diff := cmp.Diff(tt.errors, errs.Counts()); diff != "" {
				t.Errorf("errors logged (-want +got):\n%s", diff)
			}
		})
	}
}

// TestErrorLogBounded: a flood of distinct messages is kept to 64 kinds and
// the rest counted as "(other)", so an upstream that puts a request ID in its
// errors cannot grow the load tool's memory.
func TestErrorLogBounded(t *testing.T) {
	t.Parallel()
	l := &ErrorLog{}
	for i := range 1000 {
		l.add(string(rune('a'+i%26)) + string(make([]byte, i)))
	}
	c := l.Counts()
	if len(c) != maxErrorKinds+1 || c["(other)"] != 1000-maxErrorKinds {
		t.Errorf("%d kinds, (other) = %d; want %d kinds and %d others", len(c), c["(other)"], maxErrorKinds+1, 1000-maxErrorKinds)
	}
	var nilLog *ErrorLog
	nilLog.add("ignored") // a nil log records nothing and does not panic
}

// TestToolCallSpeaksProtocol: a ToolCall speaks the protocol it is given, as
// MCPCall does, so the federated scenarios honour -protocol: the version in
// Mcp-Protocol-Version, and from 2026-07-28 the Mcp-Method and Mcp-Name
// headers and the version in the request's _meta; before it neither.
func TestToolCallSpeaksProtocol(t *testing.T) {
	t.Parallel()
	type seen struct {
		version, method, name string
		meta                  bool
	}
	tests := []struct {
		protocol string
		want     seen
	}{
		{"", seen{ProtocolVersion, "tools/call", "jwt_whoami", true}},
		{ProtocolVersion, seen{ProtocolVersion, "tools/call", "jwt_whoami", true}},
		{"2025-11-25", seen{"2025-11-25", "", "", false}},
		{"2025-06-18", seen{"2025-06-18", "", "", false}},
	}
	for _, tt := range tests {
		t.Run(tt.protocol, func(t *testing.T) {
			t.Parallel()
			var got seen
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var body struct {
					Params struct {
						Name string         `json:"name"`
						Meta map[string]any `json:"_meta"`
					} `json:"params"`
				}
				if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Params.Name != "jwt_whoami" {
					http.Error(w, "bad body", http.StatusBadRequest)
					return
				}
				got = seen{r.Header.Get("Mcp-Protocol-Version"), r.Header.Get("Mcp-Method"), r.Header.Get("Mcp-Name"),
					body.Params.Meta["io.modelcontextprotocol/protocolVersion"] == tt.want.version}
				_, _ = w.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{"client_id":"c"}}}`))
			}))
			t.Cleanup(srv.Close)
			c := &ToolCall{URL: srv.URL, Client: NewHTTPClient(1), Tool: "jwt_whoami", Protocol: tt.protocol, Expect: []byte(`"client_id":`)}
			if out := c.Do(t.Context(), 0); out != load.OK {
				t.Fatalf("outcome %q, want ok", out)
			}
			if got != tt.want {
				t.Errorf("request seen as %+v, want %+v", got, tt.want)
			}
		})
	}
}
