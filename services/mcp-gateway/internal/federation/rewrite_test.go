package federation

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRewriteParams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, method, key, params, want string
	}{
		{"tool name", "tools/call", "get-sum", `{"name":"everything_get-sum","arguments":{"a":1,"b":2}}`, `{"name":"get-sum","arguments":{"a":1,"b":2}}`},
		{"prompt name", "prompts/get", "greet", `{"name":"x_greet","arguments":{"who":"bob"}}`, `{"name":"greet","arguments":{"who":"bob"}}`},
		{"resource unchanged", "resources/read", "test://doc", `{"uri":"test://doc"}`, `{"uri":"test://doc"}`},
		{"no params", "tools/call", "t", ``, `{}`},
		{"null params", "tools/call", "t", `null`, `{}`},
		{
			"meta: progress and logLevel kept, protocol and identity keys dropped", "tools/call", "t",
			`{"name":"p_t","_meta":{"progressToken":7,"io.modelcontextprotocol/logLevel":"debug","io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"evil"},"io.mcpauthz/identity":"forged","com.example/trace":"abc"}}`,
			`{"name":"t","_meta":{"progressToken":7,"io.modelcontextprotocol/logLevel":"debug","com.example/trace":"abc"}}`,
		},
		{"null meta", "tools/call", "t", `{"name":"p_t","_meta":null}`, `{"name":"t","_meta":null}`},
		{"completion of a prompt", "completion/complete", "greet", `{"ref":{"type":"ref/prompt","name":"x_greet"},"argument":{"name":"who","value":"b"}}`, `{"ref":{"type":"ref/prompt","name":"greet"},"argument":{"name":"who","value":"b"}}`},
		{"completion of a template", "completion/complete", "test://items/{id}", `{"ref":{"type":"ref/resource","uri":"test://items/{id}"},"argument":{"name":"id","value":"4"}}`, `{"ref":{"type":"ref/resource","uri":"test://items/{id}"},"argument":{"name":"id","value":"4"}}`},
		{"escaped names", "tools/call", "a\"b", `{"na\u006de":"p_x"}`, `{"name":"a\"b"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := rewriteParams([]byte(tt.params), tt.method, tt.key, nil)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	for _, bad := range []string{`[]`, `"x"`, `{"_meta":[]}`, `{"a":}`, `{"ref":3}`} {
		method := "tools/call"
		if bad == `{"ref":3}` {
			method = "completion/complete"
		}
		if got, err := rewriteParams([]byte(bad), method, "k", nil); err == nil {
			t.Errorf("rewriteParams(%s) = %s, want an error", bad, got)
		}
	}
}

func TestParseRequest(t *testing.T) {
	t.Parallel()
	req, err := parseRequest([]byte(`{"jsonrpc":"2.0","id":"a-1","method":"tools/call","params":{"name":"x"}}`))
	if err != nil || string(req.id) != `"a-1"` || req.method != "tools/call" || string(req.params) != `{"name":"x"}` {
		t.Errorf("parseRequest = %+v, %v", req, err)
	}
	for _, bad := range []string{`{"jsonrpc":"2.0","method":"tools/call"}`, `{"id":{},"method":"m"}`, `{"id":1,"method":3}`, `[]`, `{"id":1,"id":2,"method":"m"}`} {
		if _, err := parseRequest([]byte(bad)); err == nil {
			t.Errorf("parseRequest(%s): no error", bad)
		}
	}
}

// FuzzRewrite feeds arbitrary requests to the parsers of forwarded requests:
// they never panic; what rewriteParams returns is a JSON object whose _meta
// holds no key the upstream must not see, and whose name is the key.
func FuzzRewrite(f *testing.F) {
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"io.mcpauthz/identity":"f"}}}`), "tools/call")
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"x"}}}`), "completion/complete")
	f.Add([]byte(`{"id":"x","method":"prompts/get","params":null}`), "prompts/get")
	f.Fuzz(func(t *testing.T, body []byte, method string) {
		req, err := parseRequest(body)
		if err != nil {
			return
		}
		_, _ = parseRef(req.params)
		out, err := rewriteParams(req.params, method, "k", nil)
		if err != nil {
			return
		}
		var p map[string]json.RawMessage
		if err := json.Unmarshal(out, &p); err != nil {
			t.Fatalf("rewritten params are not a JSON object: %v: %s", err, out)
		}
		if method == "tools/call" || method == "prompts/get" {
			if n, ok := p["name"]; ok && string(n) != `"k"` {
				t.Fatalf("name %s not rewritten", n)
			}
		}
		if m, ok := p["_meta"]; ok && string(m) != "null" {
			var meta map[string]json.RawMessage
			if err := json.Unmarshal(m, &meta); err != nil {
				t.Fatalf("_meta: %v", err)
			}
			for k := range meta {
				if !keepMeta(k) {
					t.Fatalf("_meta key %q passed", k)
				}
			}
		}
	})
}
