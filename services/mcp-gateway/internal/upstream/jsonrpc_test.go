package upstream

import (
	"bytes"
	"errors"
	"strconv"
	"testing"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/go-cmp/cmp"
)

func TestParseMessage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		kind string // "request", "notification", "response", or "" for an error
	}{
		{`{"jsonrpc":"2.0","id":1,"result":{}}`, "response"},
		{`{"result":{"a":[1]},"jsonrpc":"2.0","id":"x"}`, "response"},
		{`{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse"}}`, "response"},
		{`{"jsonrpc":"2.0","id":3,"method":"sampling/createMessage","params":{}}`, "request"},
		{`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1}}`, "notification"},
		{` {"jsonrpc":"2.0","id":1,"result":null} `, "response"},
		{`{"jsonrpc":"2.0","\u0069d":1,"result":{}}`, "response"},
		{`{"jsonrpc":"1.0","id":1,"result":{}}`, ""},
		{`{"id":1,"result":{}}`, ""},
		{`{"jsonrpc":"2.0","id":1}`, ""},
		{`{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"m"}}`, ""},
		{`{"jsonrpc":"2.0","id":null,"result":{}}`, ""},
		{`{"jsonrpc":"2.0","id":{},"result":{}}`, ""},
		{`{"jsonrpc":"2.0","method":1}`, ""},
		{`{"jsonrpc":"2.0","id":1,"id":2,"result":{}}`, ""},
		{`{"jsonrpc":"2.0","id":1,"result":{}} {}`, ""},
		{`[{"jsonrpc":"2.0","id":1,"result":{}}]`, ""},
		{`<html>`, ""},
		{``, ""},
	}
	for _, tt := range tests {
		m, err := parseMessage([]byte(tt.in))
		var kind string
		switch {
		case err != nil:
		case m.isRequest():
			kind = "request"
		case m.isNotification():
			kind = "notification"
		case m.isResponse():
			kind = "response"
		}
		if kind != tt.kind {
			t.Errorf("parseMessage(%s) = %q (err %v), want %q", tt.in, kind, err, tt.kind)
		}
	}
}

func TestParseRPCError(t *testing.T) {
	t.Parallel()
	raw := `{"code":-32602,"message":"bad \"x\"","data":{"k":[1,2]}}`
	got, err := parseRPCError(jsontext.Value(raw))
	if err != nil {
		t.Fatal(err)
	}
	want := &RPCError{Code: -32602, Message: `bad "x"`, Data: jsontext.Value(`{"k":[1,2]}`), Raw: jsontext.Value(raw)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	for _, bad := range []string{`{"code":1.5,"message":"m"}`, `{"message":"m"}`, `{"code":1}`, `{"code":1,"message":2}`, `[]`} {
		if _, err := parseRPCError(jsontext.Value(bad)); err == nil {
			t.Errorf("parseRPCError(%s) succeeded", bad)
		}
	}
}

func TestAppendParams(t *testing.T) {
	t.Parallel()
	add := appendMember(nil, "io.modelcontextprotocol/protocolVersion", []byte(`"2026-07-28"`))
	tests := []struct {
		name, in, want string
		progress       bool
	}{
		{"empty", ``, `{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}`, false},
		{"null", `null`, `{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}`, false},
		{"no meta", `{"name":"t","arguments":{"a":1}}`, `{"name":"t","arguments":{"a":1},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}`, false},
		{"meta kept and replaced",
			`{"_meta":{"progressToken":"p","io.modelcontextprotocol/protocolVersion":"1999-01-01","io.mcpauthz/identity":"forged"},"name":"t"}`,
			`{"_meta":{"progressToken":"p","io.modelcontextprotocol/protocolVersion":"2026-07-28"},"name":"t"}`, false},
		{"null meta", `{"_meta":null,"name":"t"}`, `{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"},"name":"t"}`, false},
		{"progress rewritten", `{"_meta":{"progressToken":7}}`, `{"_meta":{"progressToken":"gw","io.modelcontextprotocol/protocolVersion":"2026-07-28"}}`, true},
		{"whitespace inside values kept", "{ \"a\" : [1, 2] ,\n \"b\":\"x y\"}", "{\"a\":[1, 2],\"b\":\"x y\",\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\"}}", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			edit := metaEdit{members: add, names: metaNamesWithIdentity, capture: [2]string{"name", "arguments"}}
			if tt.progress {
				edit.progress = func(old jsontext.Value) []byte { return []byte(`"gw"`) }
			}
			got, err := appendParams(nil, jsontext.Value(tt.in), &edit)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
	for _, bad := range []string{`[]`, `"x"`, `{"_meta":[]}`, `{"a":1,"a":2}`, `{"a":}`, `{} {}`} {
		if _, err := appendParams(nil, jsontext.Value(bad), &metaEdit{}); !errors.Is(err, ErrInvalidParams) {
			t.Errorf("appendParams(%s) err = %v, want ErrInvalidParams", bad, err)
		}
	}
	edit := metaEdit{capture: [2]string{"name", "arguments"}}
	if _, err := appendParams(nil, jsontext.Value(`{"name":"t","arguments":{"a":1}}`), &edit); err != nil {
		t.Fatal(err)
	}
	if string(edit.captured[0]) != `"t"` || string(edit.captured[1]) != `{"a":1}` {
		t.Errorf("captured %s %s", edit.captured[0], edit.captured[1])
	}
}

// FuzzAppendParams: for any params object, appendParams writes valid JSON
// with every member but _meta unchanged, and a _meta holding the caller's
// members (without the names the edit replaces) followed by the edit's.
func FuzzAppendParams(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"name":"t","arguments":{"x":[1,{"y":null}]}}`, `{"_meta":{"progressToken":"a","k":1}}`,
		`{"_meta":{"io.mcpauthz/identity":"x"},"z":true}`, `{"a":"\u00e9\n"}`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		edit := metaEdit{
			members:  appendMember(nil, IdentityMetaKey, []byte(`"id"`)),
			names:    identityOnly,
			progress: func(jsontext.Value) []byte { return []byte(`"gw"`) },
		}
		out, err := appendParams(nil, in, &edit)
		// The oracle reads as appendParams does: invalid UTF-8 let through.
		lax := jsontext.AllowInvalidUTF8(true)
		var orig map[string]jsontext.Value
		if json.Unmarshal(in, &orig, lax) != nil || orig == nil {
			if err == nil && len(bytes.TrimSpace(in)) > 0 && string(bytes.TrimSpace(in)) != "null" {
				t.Fatalf("appendParams accepted %q", in)
			}
			return
		}
		var meta map[string]jsontext.Value
		if m, ok := orig["_meta"]; ok && string(m) != "null" && (json.Unmarshal(m, &meta, lax) != nil || meta == nil) {
			if err == nil {
				t.Fatalf("appendParams accepted a _meta that is not an object: %s", in)
			}
			return
		}
		if err != nil {
			t.Fatalf("appendParams(%s): %v", in, err)
		}
		var got map[string]jsontext.Value
		if err := json.Unmarshal(out, &got, lax); err != nil {
			t.Fatalf("output is not a JSON object: %v\n%s", err, out)
		}
		if len(got) != len(orig)+btoi(orig["_meta"] == nil) {
			t.Fatalf("members changed: %s -> %s", in, out)
		}
		for k, v := range orig {
			if k != "_meta" && !bytes.Equal(v, got[k]) {
				t.Fatalf("member %q changed: %s -> %s", k, v, got[k])
			}
		}
		var gotMeta map[string]jsontext.Value
		if err := json.Unmarshal(got["_meta"], &gotMeta, lax); err != nil {
			t.Fatal(err)
		}
		if string(gotMeta[IdentityMetaKey]) != `"id"` {
			t.Fatalf("identity = %s", gotMeta[IdentityMetaKey])
		}
		for k, v := range meta {
			switch k {
			case IdentityMetaKey:
			case "progressToken":
				if string(gotMeta[k]) != `"gw"` {
					t.Fatalf("progressToken not rewritten: %s", gotMeta[k])
				}
			default:
				if !bytes.Equal(v, gotMeta[k]) {
					t.Fatalf("_meta member %q changed: %s -> %s", k, v, gotMeta[k])
				}
			}
		}
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestAppendReplacing(t *testing.T) {
	t.Parallel()
	got, err := appendReplacing(nil, jsontext.Value(`{"progress":1,"progressToken":"mcpauthz-9","total":2}`), "progressToken", []byte(`{"orig":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"progress":1,"progressToken":{"orig":true},"total":2}`; string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestIDScanner(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		id   int64
		want bool
	}{
		{`{"jsonrpc":"2.0","id":42,"result":{}}`, 42, true},
		{`{"result":{"id":7,"x":"\"id\":8"},"jsonrpc":"2.0","id":-3}`, -3, true},
		{`{"result":{"content":[{"id":1}]},"id" : 12 }`, 12, true},
		{`{"id":"12","result":{}}`, 0, false},
		{`{"a":{"id":5}}`, 0, false},
		{`{"i\u0064":5}`, 0, false},
		{`{"idx":5}`, 0, false},
		{`[{"id":5}]`, 0, false},
		{`{"jsonrpc":"2.0","result":"` + string(bytes.Repeat([]byte("x"), 100000)) + `","id":99}`, 99, true},
	}
	for _, tt := range tests {
		var s idScanner
		// Fed in pieces, as a long line arrives.
		for i := 0; i < len(tt.in); i += 7 {
			s.write([]byte(tt.in[i:min(i+7, len(tt.in))]))
		}
		id, ok := s.result()
		if ok != tt.want || id != tt.id {
			t.Errorf("idScanner(%.60s) = %d, %v; want %d, %v", tt.in, id, ok, tt.id, tt.want)
		}
	}
}

// FuzzIDScanner: the scanner never panics, and on a valid JSON-RPC message
// with an integer id it finds that id.
func FuzzIDScanner(f *testing.F) {
	for _, s := range []string{`{"jsonrpc":"2.0","id":1,"result":{"id":2}}`, `{"id":"x"}`, `{"a":"\\\"","id":3}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var s idScanner
		s.write(in)
		id, ok := s.result()
		m, err := parseMessage(in)
		if err != nil || m.id == nil || m.id.Kind() != '0' {
			return
		}
		want, err := strconv.ParseInt(string(m.id), 10, 64)
		if err != nil {
			return // not an integer: not one of the gateway's ids
		}
		if !ok || id != want {
			t.Fatalf("idScanner found %d, %v in %s; want %d", id, ok, in, want)
		}
	})
}

// FuzzParseMessage: never panics; what it accepts is valid JSON and one of
// the three kinds.
func FuzzParseMessage(f *testing.F) {
	for _, s := range []string{`{"jsonrpc":"2.0","id":1,"result":{}}`, `{"jsonrpc":"2.0","method":"m"}`, `{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":""}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := parseMessage(in)
		if err != nil {
			return
		}
		if !jsontext.Value(in).IsValid(decodeOptions...) {
			t.Fatalf("accepted invalid JSON %q", in)
		}
		n := btoi(m.isRequest()) + btoi(m.isNotification()) + btoi(m.isResponse() && (m.result != nil || m.err != nil))
		if n != 1 {
			t.Fatalf("message %s is of %d kinds", in, n)
		}
		if m.err != nil {
			_, _ = parseRPCError(m.err)
		}
	})
}

// FuzzAppendReplacing: replacing a member of an object gives valid JSON with
// that member's new value and the others unchanged.
func FuzzAppendReplacing(f *testing.F) {
	for _, s := range []string{`{"progressToken":"mcpauthz-1","progress":1}`, `{"a":{"progressToken":2},"progressToken":[1]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		lax := jsontext.AllowInvalidUTF8(true)
		var orig map[string]jsontext.Value
		if json.Unmarshal(in, &orig, lax) != nil || orig == nil {
			return
		}
		out, err := appendReplacing(nil, in, "progressToken", []byte(`{"orig":1}`))
		if err != nil {
			t.Fatalf("appendReplacing(%s): %v", in, err)
		}
		var got map[string]jsontext.Value
		if err := json.Unmarshal(out, &got, lax); err != nil {
			t.Fatalf("output %s: %v", out, err)
		}
		if len(got) != len(orig) {
			t.Fatalf("members changed: %s -> %s", in, out)
		}
		for k, v := range orig {
			want := []byte(v)
			if k == "progressToken" {
				want = []byte(`{"orig":1}`)
			}
			if !bytes.Equal(want, got[k]) {
				t.Fatalf("member %q: %s, want %s", k, got[k], want)
			}
		}
	})
}
