package structjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// wireOf returns the deterministic wire encoding of the Struct holding the JSON
// object body, as authz's introspection parser stores it; ok is false when body
// is not such an object.
func wireOf(t testing.TB, body []byte) (wire []byte, ok bool) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil || m == nil {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	s, err := structpb.NewStruct(m)
	if err != nil {
		return nil, false
	}
	wire, err = proto.MarshalOptions{Deterministic: true}.Marshal(s)
	if err != nil {
		t.Fatalf("marshalling a Struct: %v", err)
	}
	return wire, true
}

// structAsJSONValue is what Append must agree with: the Struct decoded and turned
// into Go values, as a caller of CLAIMS_FORMAT_STRUCT would see them.
func structAsJSONValue(t testing.TB, wire []byte) map[string]any {
	t.Helper()
	s := &structpb.Struct{}
	if err := proto.Unmarshal(wire, s); err != nil {
		t.Fatalf("decoding the Struct: %v", err)
	}
	return s.AsMap()
}

func decodeJSONObject(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("Append wrote invalid JSON %q: %v", b, err)
	}
	return m
}

func TestAppend(t *testing.T) {
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
			name: "empty object",
			body: `{}`,
			want: `{}`,
		},
		{
			name: "a PropelAuth-shaped response",
			body: `{"active":true,"sub":"2c2b4ed9-6f0b-4f3c-9d6e-3b7f9a1c0d11","client_id":"c1a2b3","scope":"read:user_data read:org_data","aud":"http://localhost:8000/mcp","iss":"http://localhost:9000/oauth/2.1","exp":1764500000,"iat":1764496400,"token_type":"Bearer"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			wire, ok := wireOf(t, []byte(tt.body))
			if !ok {
				t.Fatalf("test body %s is not a JSON object", tt.body)
			}
			got, err := Append([]byte("prefix:"), wire)
			if err != nil {
				t.Fatal(err)
			}
			if string(got[:7]) != "prefix:" {
				t.Fatalf("Append did not append: %q", got)
			}
			got = got[7:]
			if tt.want != "" && string(got) != tt.want {
				t.Errorf("Append =\n%s\nwant\n%s", got, tt.want)
			}
			if diff := cmp.Diff(structAsJSONValue(t, wire), decodeJSONObject(t, got)); diff != "" {
				t.Errorf("JSON and Struct disagree (-struct +json):\n%s", diff)
			}
		})
	}
}

// TestAppendReusesCapacity: with room in dst, the JSON is written into dst's
// array, not into a copy.
func TestAppendReusesCapacity(t *testing.T) {
	t.Parallel()
	wire, _ := wireOf(t, []byte(`{"active":true,"sub":"u1","exp":1900000000}`))
	dst := make([]byte, 0, 512)
	got, err := Append(dst, wire)
	if err != nil {
		t.Fatal(err)
	}
	if &got[0] != &dst[:1][0] {
		t.Error("Append wrote into a new array although dst had room")
	}
}

// TestAppendCorrupt: wire bytes authz never writes are refused, never turned into
// something that looks like claims, and dst comes back unchanged.
func TestAppendCorrupt(t *testing.T) {
	t.Parallel()
	marshal := func(s *structpb.Struct) []byte {
		b, err := proto.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	zero := 0.0
	deep := &structpb.Value{Kind: &structpb.Value_StringValue{StringValue: "x"}}
	for range MaxDepth + 1 {
		deep = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{deep}})
	}
	for name, wire := range map[string][]byte{
		"truncated tag":    {0x0a},
		"truncated length": {0x0a, 0x05, 0x0a},
		// entry{key: "k", value: Value{string_value sent as a varint}}
		"value kind with the wrong wire type": {0x0a, 0x07, 0x0a, 0x01, 'k', 0x12, 0x02, 0x18, 0x01},
		"NaN":                                 marshal(&structpb.Struct{Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(zero / zero)}}),
		"infinity":                            marshal(&structpb.Struct{Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(1 / zero)}}),
		"too deep":                            marshal(&structpb.Struct{Fields: map[string]*structpb.Value{"d": deep}}),
		"bad group":                           {0x0b},
		// entry{key: "k", value: Value{string_value: "\xff"}}
		"string not UTF-8": {0x0a, 0x08, 0x0a, 0x01, 'k', 0x12, 0x03, 0x1a, 0x01, 0xff},
		// entry{key: "\xff", value: Value{null_value: 0}}
		"name not UTF-8": {0x0a, 0x07, 0x0a, 0x01, 0xff, 0x12, 0x02, 0x08, 0x00},
	} {
		got, err := Append([]byte("kept"), wire)
		if !errors.Is(err, ErrCorrupt) || string(got) != "kept" {
			t.Errorf("%s: %q, %v; want \"kept\" and ErrCorrupt", name, got, err)
		}
	}
}

// FuzzAppend: for every JSON object, the JSON form of its Struct decodes to
// exactly the values the Struct holds; for arbitrary wire bytes it never panics
// and writes only valid JSON.
func FuzzAppend(f *testing.F) {
	for _, s := range []string{
		`{"active":true,"sub":"u1","exp":1900000000,"aud":["a"],"x":{"y":[1,2,{"z":null}]}}`,
		`{"active":true,"s":"\u2028\u0000\"\\é\b\f","n":1e-9,"m":-12.5e300}`,
		`{"active":true,"a":[[],{},[[null]]]}`,
	} {
		f.Add([]byte(s), false)
	}
	f.Add([]byte{0x0a, 0x07, 0x0a, 0x01, 'k', 0x12, 0x02, 0x20, 0x01}, true)
	f.Fuzz(func(t *testing.T, data []byte, raw bool) {
		if raw {
			got, err := Append(nil, data)
			if err == nil && !json.Valid(got) {
				t.Fatalf("wire %x: wrote invalid JSON %q", data, got)
			}
			return
		}
		wire, ok := wireOf(t, data)
		if !ok {
			return
		}
		got, err := Append(nil, wire)
		if err != nil {
			t.Fatalf("Struct of %q: %v", data, err)
		}
		if diff := cmp.Diff(structAsJSONValue(t, wire), decodeJSONObject(t, got)); diff != "" {
			t.Fatalf("JSON and Struct disagree for %q (-struct +json):\n%s", data, diff)
		}
	})
}

func BenchmarkAppend(b *testing.B) {
	wire, _ := wireOf(b, []byte(`{"active":true,"sub":"2c2b4ed9-6f0b-4f3c-9d6e-3b7f9a1c0d11","client_id":"c1a2b3","scope":"read:user_data read:org_data","aud":"http://localhost:8000/mcp","iss":"http://localhost:9000/oauth/2.1","exp":1764500000,"iat":1764496400,"token_type":"Bearer"}`))
	b.Run("struct-decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := proto.Unmarshal(wire, &structpb.Struct{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json-append", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		for b.Loop() {
			var err error
			if buf, err = Append(buf[:0], wire); err != nil {
				b.Fatal(err)
			}
		}
	})
	// As the server calls it: a fresh buffer of the wire's size per response.
	b.Run("json-new-buffer", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Append(make([]byte, 0, len(wire)), wire); err != nil {
				b.Fatal(err)
			}
		}
	})
}
