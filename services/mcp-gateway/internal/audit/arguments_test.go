package audit_test

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/audit"
)

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestArguments(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body, want string
	}{
		{"canonical order and spacing", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{ "b" : 2.0, "a":"x\u0041" }}}`, `{"a":"xA","b":2}`},
		{"arguments before name", `{"params":{"arguments":{"z":[1,{"y":true,"x":null}]},"name":"e"},"jsonrpc":"2.0","method":"tools/call","id":1}`, `{"z":[1,{"x":null,"y":true}]}`},
		{"prompts/get", `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p","arguments":{"who":"été"}}}`, `{"who":"été"}`},
		{"empty object", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","arguments":{}}}`, `{}`},
		{"out of float64 range: clamped, as RFC 8785 reads doubles", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","arguments":{"n":1e400}}}`, `{"n":1.7976931348623157e+308}`},
		{"invalid UTF-8: as sent", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"arguments\":{\"b\":\"\xff\",\"a\":1}}}", "{\"b\":\"\xff\",\"a\":1}"},
		{"no arguments", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e"}}`, ``},
		{"no params", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, ``},
		{"arguments outside params", `{"jsonrpc":"2.0","id":1,"method":"tools/call","arguments":{"a":1},"params":{"name":"e"}}`, ``},
		{"not JSON", `nope`, ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, gotSum := audit.Arguments([]byte(tt.body))
			if string(got) != tt.want {
				t.Errorf("Arguments = %s, want %s", got, tt.want)
			}
			wantSum := ""
			if tt.want != "" {
				wantSum = sum(tt.want)
			}
			if gotSum != wantSum {
				t.Errorf("sum = %s, want %s", gotSum, wantSum)
			}
		})
	}
}

func FuzzArguments(f *testing.F) {
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","arguments":{"b":1,"a":2}}}`))
	f.Add([]byte(`{"params":{"arguments":[1e400,"\ud800"]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		got, s := audit.Arguments(body)
		if (got == nil) != (s == "") {
			t.Fatalf("Arguments(%q) = %q, %q: one without the other", body, got, s)
		}
		if got != nil && s != sum(string(got)) {
			t.Fatalf("Arguments(%q): sum %s is not the SHA-256 of %q", body, s, got)
		}
	})
}
