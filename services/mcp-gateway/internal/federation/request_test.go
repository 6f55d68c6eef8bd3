package federation

import (
	"bytes"
	"testing"

	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/mcpreq"
)

// FuzzRequestCheck checks that what package mcpreq read of a request, once
// checked, is what parseRequest reads of it, or parseRequest's own error.
func FuzzRequestCheck(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x_t","arguments":{},"_meta":{"progressToken":1}}}`,
		`{"params" : { "name":"x_t" } ,"id":"a","method":"prompts/get","jsonrpc":"2.0"}`,
		`{"jsonrpc":"2.0","id":-1.5e3,"method":"resources/read","params":{"uri":"test://doc"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call"}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":null}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[1]}`,
		`{"jsonrpc":"2.0","id":true,"method":"tools/call","params":{"name":"x_t"}}`,
		`{"jsonrpc":"2.0","id":{},"method":"tools/call","params":{"name":"x_t"}}`,
		"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"x_t\xff\"}}",
		"{\"jsonrpc\":\"2.0\",\"id\":\"\xfe\",\"method\":\"tools/call\",\"params\":{\"name\":\"x_t\"}}",
		`{"jsonrpc":"2.0","id":1,"\u006dethod":"tools/call","params":{"name":"x_\u0074"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		info, err := mcpreq.Parse(body, nil)
		if err != nil || !info.IsCall {
			return // never routed
		}
		got, err := requestOf(info).check(body)
		want, wantErr := parseRequest(body)
		if (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
			t.Fatalf("check(%q): error %v, parseRequest's %v", body, err, wantErr)
		}
		if !bytes.Equal(got.id, want.id) || got.method != want.method || !bytes.Equal(got.params, want.params) || (got.params == nil) != (want.params == nil) {
			t.Fatalf("check(%q) = %+v, parseRequest read %+v", body, got, want)
		}
	})
}
