package upstream

import (
	"testing"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/go-cmp/cmp"
)

func TestToolBindings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, tool string
		want       []paramBinding
		wantErr    bool
	}{
		{"none", `{"name":"t","inputSchema":{"type":"object","properties":{"a":{"type":"string"}}}}`, nil, false},
		{"no schema", `{"name":"t"}`, nil, false},
		{"top level and nested",
			`{"inputSchema":{"type":"object","properties":{"region":{"type":"string","x-mcp-header":"Region"},"o":{"type":"object","properties":{"n":{"type":"integer","x-mcp-header":"N"}}}}}}`,
			[]paramBinding{{path: []string{"region"}, header: "Region"}, {path: []string{"o", "n"}, header: "N"}}, false},
		{"a parameter named x-mcp-header is a parameter",
			`{"inputSchema":{"properties":{"x-mcp-header":{"type":"string"}}}}`, nil, false},
		{"number type", `{"inputSchema":{"properties":{"a":{"type":"number","x-mcp-header":"A"}}}}`, nil, true},
		{"no type", `{"inputSchema":{"properties":{"a":{"x-mcp-header":"A"}}}}`, nil, true},
		{"not a token", `{"inputSchema":{"properties":{"a":{"type":"string","x-mcp-header":"A B"}}}}`, nil, true},
		{"empty", `{"inputSchema":{"properties":{"a":{"type":"string","x-mcp-header":""}}}}`, nil, true},
		{"duplicate", `{"inputSchema":{"properties":{"a":{"type":"string","x-mcp-header":"X"},"b":{"type":"string","x-mcp-header":"x"}}}}`, nil, true},
		{"under items", `{"inputSchema":{"properties":{"a":{"type":"array","items":{"type":"string","x-mcp-header":"A"}}}}}`, nil, true},
		{"under oneOf", `{"inputSchema":{"oneOf":[{"properties":{"a":{"type":"string","x-mcp-header":"A"}}}]}}`, nil, true},
		{"on the root", `{"inputSchema":{"type":"object","x-mcp-header":"A"}}`, nil, true},
	}
	for _, tt := range tests {
		got, err := toolBindings(jsontext.Value(tt.tool))
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: err = %v, want error %v", tt.name, err, tt.wantErr)
			continue
		}
		if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(paramBinding{})); diff != "" {
			t.Errorf("%s: (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestEncodeHeaderValue(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"us-west1":           "us-west1",
		"Hello, 世界":          "=?base64?SGVsbG8sIOS4lueVjA==?=",
		" padded ":           "=?base64?IHBhZGRlZCA=?=",
		"line1\nline2":       "=?base64?bGluZTEKbGluZTI=?=",
		"=?base64?literal?=": "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=",
		"":                   "",
	} {
		if got := encodeHeaderValue(in); got != want {
			t.Errorf("encodeHeaderValue(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPrimitiveHeaderValue(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{`"a b"`: "a b", `true`: "true", `false`: "false", `42`: "42", `-7`: "-7", `4.0`: "4"} {
		if got, ok := primitiveHeaderValue(jsontext.Value(in)); !ok || got != want {
			t.Errorf("primitiveHeaderValue(%s) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, in := range []string{`null`, `1.5`, `9007199254740993`, `{}`, `[]`} {
		if got, ok := primitiveHeaderValue(jsontext.Value(in)); ok {
			t.Errorf("primitiveHeaderValue(%s) = %q, want none", in, got)
		}
	}
}

// FuzzToolBindings: any tool definition an upstream lists is read without
// panicking, and the bindings found name valid, distinct headers.
func FuzzToolBindings(f *testing.F) {
	f.Add([]byte(`{"inputSchema":{"properties":{"a":{"type":"string","x-mcp-header":"A"},"o":{"properties":{"b":{"type":"integer","x-mcp-header":"B"}}}}}}`))
	f.Add([]byte(`{"inputSchema":{"anyOf":[{"x-mcp-header":"A"}],"items":[{}]}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		if in := jsontext.Value(in); in.Kind() != '{' || !in.IsValid() {
			return
		}
		bs, err := toolBindings(in)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, b := range bs {
			if !isToken(b.header) || len(b.path) == 0 || seen[b.header] {
				t.Fatalf("binding %+v of %s", b, in)
			}
			seen[b.header] = true
		}
	})
}
