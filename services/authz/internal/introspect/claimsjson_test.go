package introspect

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// claimsAsJSONValue is what AppendClaimsJSON must agree with: the Struct decoded
// and turned into Go values, as a caller of CLAIMS_FORMAT_STRUCT would see them.
func claimsAsJSONValue(t testing.TB, r *Result) map[string]any {
	t.Helper()
	s, err := r.Claims()
	if err != nil {
		t.Fatalf("Claims: %v", err)
	}
	return s.AsMap()
}

func decodeJSONObject(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("AppendClaimsJSON wrote invalid JSON %q: %v", b, err)
	}
	return m
}

func TestAppendClaimsJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body string
		want       string // exact output; "" to compare with the Struct only
	}{
		{
			name: "members sorted, types kept",
			body: `{"sub":"u1","active":true,"exp":1900000000,"aud":["a","b"],"x":null,"n":{"k":false}}`,
			want: `{"active":true,"aud":["a","b"],"exp":1900000000,"n":{"k":false},"sub":"u1","x":null}`,
		},
		{
			name: "numbers as encoding/json writes a float64",
			body: `{"active":true,"a":0.1,"b":1e21,"c":1e-7,"d":-0,"e":123456789012,"f":2.5e-3,"g":1e20}`,
			want: `{"a":0.1,"active":true,"b":1e+21,"c":1e-7,"d":-0,"e":123456789012,"f":0.0025,"g":100000000000000000000}`,
		},
		{
			name: "strings escaped",
			body: `{"active":true,"s":"quote \" back \\ nl \n tab \t ctl \u0001 ls \u2028 é 😀 <&>"}`,
			want: `{"active":true,"s":"quote \" back \\ nl \n tab \t ctl \u0001 ls \u2028 é 😀 <&>"}`,
		},
		{
			name: "escaped keys",
			body: `{"active":true,"a\"b":1,"\u00e9":2}`,
			want: `{"a\"b":1,"active":true,"é":2}`,
		},
		{
			name: "deep nesting and empty containers",
			body: `{"active":true,"x":{"y":[1,[2,[3,{}]],[],{"z":[null,true,"s"]}]}}`,
		},
		{
			name: "a PropelAuth-shaped response",
			body: `{"active":true,"sub":"2c2b4ed9-6f0b-4f3c-9d6e-3b7f9a1c0d11","client_id":"c1a2b3","scope":"read:user_data read:org_data","aud":"http://localhost:8000/mcp","iss":"http://localhost:9000/oauth/2.1","exp":1764500000,"iat":1764496400,"token_type":"Bearer"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := Parse([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.AppendClaimsJSON([]byte("prefix:"))
			if err != nil {
				t.Fatal(err)
			}
			if string(got[:7]) != "prefix:" {
				t.Fatalf("AppendClaimsJSON did not append: %q", got)
			}
			got = got[7:]
			if tt.want != "" && string(got) != tt.want {
				t.Errorf("AppendClaimsJSON =\n%s\nwant\n%s", got, tt.want)
			}
			if diff := cmp.Diff(claimsAsJSONValue(t, r), decodeJSONObject(t, got)); diff != "" {
				t.Errorf("JSON and Struct disagree (-struct +json):\n%s", diff)
			}
		})
	}
}

func TestAppendClaimsJSONWithoutClaims(t *testing.T) {
	t.Parallel()
	got, err := (&Result{}).AppendClaimsJSON(nil)
	if err != nil || len(got) != 0 {
		t.Errorf("no claims: %q, %v; want nothing", got, err)
	}
}

// TestAppendClaimsJSONCorrupt: wire bytes Parse never writes are refused, never
// turned into something that looks like claims.
func TestAppendClaimsJSONCorrupt(t *testing.T) {
	t.Parallel()
	nan, err := proto.Marshal(&structpb.Struct{Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(nanValue())}})
	if err != nil {
		t.Fatal(err)
	}
	deep := &structpb.Value{Kind: &structpb.Value_StringValue{StringValue: "x"}}
	for range maxDepth + 1 {
		deep = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{deep}})
	}
	deepWire, err := proto.Marshal(&structpb.Struct{Fields: map[string]*structpb.Value{"d": deep}})
	if err != nil {
		t.Fatal(err)
	}
	for name, wire := range map[string][]byte{
		"truncated tag":    {0x0a},
		"truncated length": {0x0a, 0x05, 0x0a},
		// entry{key: "k", value: Value{string_value sent as a varint}}
		"value kind with the wrong wire type": {0x0a, 0x07, 0x0a, 0x01, 'k', 0x12, 0x02, 0x18, 0x01},
		"NaN":                                 nan,
		"too deep":                            deepWire,
		"bad group":                           {0x0b},
	} {
		if got, err := (&Result{ClaimsWire: wire}).AppendClaimsJSON(nil); !errors.Is(err, errCorrupt) {
			t.Errorf("%s: %q, %v; want errCorrupt", name, got, err)
		}
	}
}

func nanValue() float64 {
	zero := 0.0
	return zero / zero
}

// FuzzAppendClaimsJSON: for every response Parse accepts, the JSON form decodes
// to exactly the values the Struct form holds; for arbitrary wire bytes it never
// panics and writes only valid JSON.
func FuzzAppendClaimsJSON(f *testing.F) {
	for _, s := range []string{
		`{"active":true,"sub":"u1","exp":1900000000,"aud":["a"],"x":{"y":[1,2,{"z":null}]}}`,
		`{"active":true,"s":"\u2028\u0000\"\\é","n":1e-9,"m":-12.5e300}`,
		`{"active":true,"a":[[],{},[[null]]]}`,
	} {
		f.Add([]byte(s), false)
	}
	f.Add([]byte{0x0a, 0x07, 0x0a, 0x01, 'k', 0x12, 0x02, 0x20, 0x01}, true)
	f.Fuzz(func(t *testing.T, data []byte, raw bool) {
		if raw {
			got, err := (&Result{ClaimsWire: data}).AppendClaimsJSON(nil)
			if err == nil && len(data) > 0 && !json.Valid(got) {
				t.Fatalf("wire %x: wrote invalid JSON %q", data, got)
			}
			return
		}
		r, err := Parse(data)
		if err != nil || !r.Active {
			return
		}
		got, err := r.AppendClaimsJSON(nil)
		if err != nil {
			t.Fatalf("claims of an accepted response: %v", err)
		}
		if diff := cmp.Diff(claimsAsJSONValue(t, r), decodeJSONObject(t, got)); diff != "" {
			t.Fatalf("JSON and Struct disagree for %q (-struct +json):\n%s", data, diff)
		}
	})
}

func BenchmarkClaims(b *testing.B) {
	r, err := Parse([]byte(`{"active":true,"sub":"2c2b4ed9-6f0b-4f3c-9d6e-3b7f9a1c0d11","client_id":"c1a2b3","scope":"read:user_data read:org_data","aud":"http://localhost:8000/mcp","iss":"http://localhost:9000/oauth/2.1","exp":1764500000,"iat":1764496400,"token_type":"Bearer"}`))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("struct-decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.Claims(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json-append", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		for b.Loop() {
			var err error
			if buf, err = r.AppendClaimsJSON(buf[:0]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
