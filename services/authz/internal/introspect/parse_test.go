package introspect

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mcpauthz/mcpauthz/services/authz/internal/tokeninfo"
)

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want *tokeninfo.Result
	}{
		{
			name: "propelauth",
			body: `{"active":true,"sub":"u1","client_id":"c1","scope":"read:user_data read:org_data","exp":1900000000,"iat":1800000000,"aud":"http://127.0.0.1:8000/mcp"}`,
			want: &tokeninfo.Result{Active: true, Subject: "u1", ClientID: "c1", Scopes: []string{"read:user_data", "read:org_data"},
				Audience: []string{"http://127.0.0.1:8000/mcp"}, CanonicalAudience: []string{"http://127.0.0.1:8000/mcp"},
				Exp: 1900000000, Iat: 1800000000, Has: tokeninfo.HasExp | tokeninfo.HasIat},
		},
		{
			name: "aud list, scope list, float times, nbf, iss",
			body: `{"active":true,"iss":"https://as","aud":["https://A/mcp/","urn:x"],"scope":["a","b c"],"exp":1900000000.9,"nbf":1.8e9}`,
			want: &tokeninfo.Result{Active: true, Issuer: "https://as", Scopes: []string{"a", "b", "c"},
				Audience: []string{"https://A/mcp/", "urn:x"}, CanonicalAudience: []string{"https://a/mcp", "urn:x"},
				Exp: 1900000000, Nbf: 1800000000, Has: tokeninfo.HasExp | tokeninfo.HasNbf},
		},
		{
			name: "resource instead of aud, scp instead of scope",
			body: `{"active":true,"resource":"https://r/mcp","scp":["x"]}`,
			want: &tokeninfo.Result{Active: true, Scopes: []string{"x"}, Audience: []string{"https://r/mcp"}, CanonicalAudience: []string{"https://r/mcp"}},
		},
		{
			name: "aud wins over resource",
			body: `{"active":true,"aud":"https://a","resource":"https://r"}`,
			want: &tokeninfo.Result{Active: true, Audience: []string{"https://a"}, CanonicalAudience: []string{"https://a"}},
		},
		{
			name: "uncanonicalisable audience kept but never matches",
			body: `{"active":true,"aud":["not a uri","https://a#frag"]}`,
			want: &tokeninfo.Result{Active: true, Audience: []string{"not a uri", "https://a#frag"}, CanonicalAudience: []string{}},
		},
		{
			name: "nulls are absent",
			body: `{"active":true,"sub":null,"exp":null,"aud":null,"scope":null}`,
			want: &tokeninfo.Result{Active: true},
		},
		{
			name: "empty scope",
			body: `{"active":true,"scope":"  "}`,
			want: &tokeninfo.Result{Active: true},
		},
		{
			name: "inactive carries nothing",
			body: `{"active":false,"sub":"u1","exp":"garbage"}`,
			want: &tokeninfo.Result{},
		},
		{
			name: "whitespace around the object",
			body: " \n{\"active\":false}\n",
			want: &tokeninfo.Result{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse([]byte(tt.body))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(tokeninfo.Result{}, "ClaimsWire"), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Parse mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseClaimsAreEveryMember(t *testing.T) {
	t.Parallel()
	r, err := Parse([]byte(`{"active":true,"sub":"u1","exp":1900000000,"ext":{"k":[1,"x",null]}}`))
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Claims()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := structpb.NewStruct(map[string]any{
		"active": true, "sub": "u1", "exp": 1900000000.0,
		"ext": map[string]any{"k": []any{1.0, "x", nil}},
	})
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("claims mismatch (-want +got):\n%s", diff)
	}
}

func TestParseMalformed(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, body string }{
		{"empty", ""},
		{"not JSON", "<html>bad gateway</html>"},
		{"null", "null"},
		{"array", `[{"active":true}]`},
		{"string", `"active"`},
		{"two objects", `{"active":true}{"active":false}`},
		{"trailing garbage", `{"active":true} x`},
		{"truncated", `{"active":true,"sub":"u`},
		{"active missing", `{"sub":"u1"}`},
		{"active as string", `{"active":"true"}`},
		{"active as number", `{"active":1}`},
		{"active null", `{"active":null}`},
		{"sub not a string", `{"active":true,"sub":42}`},
		{"client_id not a string", `{"active":true,"client_id":{}}`},
		{"iss not a string", `{"active":true,"iss":["a"]}`},
		{"aud number", `{"active":true,"aud":5}`},
		{"aud list with number", `{"active":true,"aud":["a",5]}`},
		{"scope object", `{"active":true,"scope":{"a":1}}`},
		{"exp as numeric string", `{"active":true,"exp":"1900000000"}`},
		{"exp negative", `{"active":true,"exp":-1}`},
		{"exp huge", `{"active":true,"exp":1e300}`},
		{"exp overflow", `{"active":true,"exp":1e400}`},
		{"iat bool", `{"active":true,"iat":true}`},
		{"too large", `{"active":true,"pad":"` + strings.Repeat("x", MaxBodyBytes) + `"}`},
		{"byte order mark", "\ufeff{\"active\":true}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse([]byte(tt.body))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(%.60q) = %+v, %v; want ErrMalformed", tt.body, got, err)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"active":true,"sub":"u1","client_id":"c1","scope":"a b","exp":1900000000,"iat":1800000000,"aud":"http://127.0.0.1:8000/mcp","iss":"http://x/oauth/2.1"}`,
		`{"active":true,"aud":["https://A:443/mcp/"],"scope":["a"],"exp":1.9e9,"nbf":0}`,
		`{"active":true,"resource":"urn:x","scp":"y"}`,
		`{"active":false}`,
		`{"active":"true"}`,
		`{"active":true,"exp":"1"}`,
		`{"active":true,"x":{"y":[1,2,{"z":null}]}}`,
		`[]`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := Parse(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not unwrap to ErrMalformed", err)
			}
			return
		}
		if !r.Active {
			if r.Subject != "" || len(r.Scopes) != 0 || len(r.ClaimsWire) != 0 || r.Has != 0 {
				t.Fatalf("inactive result carries data: %+v", r)
			}
			return
		}
		if _, err := r.Claims(); err != nil {
			t.Fatalf("claims of an accepted response do not decode: %v", err)
		}
		if len(r.CanonicalAudience) > len(r.Audience) {
			t.Fatalf("more canonical audiences than audiences: %q vs %q", r.CanonicalAudience, r.Audience)
		}
		for _, s := range r.Scopes {
			if s == "" || strings.ContainsAny(s, " \t\n") {
				t.Fatalf("scope %q is empty or contains whitespace", s)
			}
		}
		for _, v := range []int64{r.Exp, r.Iat, r.Nbf} {
			if v < 0 || v > maxTime {
				t.Fatalf("timestamp %d out of range", v)
			}
		}
	})
}
