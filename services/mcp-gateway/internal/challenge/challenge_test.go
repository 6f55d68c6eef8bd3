package challenge

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

const prm = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"

func TestBearer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		c          Bearer
		wantHeader string
		wantParams map[string]string
	}{
		{
			name:       "no token",
			c:          Bearer{ResourceMetadata: prm, Scopes: []string{"read:user_data"}, Description: "an access token is required"},
			wantHeader: `Bearer resource_metadata="` + prm + `", scope="read:user_data"`,
			wantParams: map[string]string{"resource_metadata": prm, "scope": "read:user_data"},
		},
		{
			name:       "invalid token",
			c:          Bearer{Error: ErrInvalidToken, Description: `token "x" expired`, ResourceMetadata: prm, Scopes: []string{"a", "b"}},
			wantHeader: `Bearer resource_metadata="` + prm + `", scope="a b", error="invalid_token", error_description="token 'x' expired"`,
			wantParams: map[string]string{"resource_metadata": prm, "scope": "a b", "error": "invalid_token", "error_description": "token 'x' expired"},
		},
		{
			name:       "insufficient scope",
			c:          Bearer{Error: ErrInsufficientScope, Description: "missing read:org_data", ResourceMetadata: prm, Scopes: []string{"read:user_data", "read:org_data"}},
			wantHeader: `Bearer error="insufficient_scope", scope="read:user_data read:org_data", resource_metadata="` + prm + `", error_description="missing read:org_data"`,
			wantParams: map[string]string{"error": "insufficient_scope", "scope": "read:user_data read:org_data", "resource_metadata": prm, "error_description": "missing read:org_data"},
		},
		{
			name:       "invalid request without scopes",
			c:          Bearer{Error: ErrInvalidRequest, Description: "2 Authorization headers, send one", ResourceMetadata: prm},
			wantHeader: `Bearer resource_metadata="` + prm + `", error="invalid_request", error_description="2 Authorization headers, send one"`,
			wantParams: map[string]string{"resource_metadata": prm, "error": "invalid_request", "error_description": "2 Authorization headers, send one"},
		},
		{
			name:       "nothing",
			c:          Bearer{},
			wantHeader: "Bearer",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := tt.c.String()
			if got != tt.wantHeader {
				t.Errorf("String() = %s\nwant %s", got, tt.wantHeader)
			}
			// The go-sdk client must read the same parameters.
			cs, err := oauthex.ParseWWWAuthenticate([]string{got})
			if err != nil {
				t.Fatalf("go-sdk cannot parse %q: %v", got, err)
			}
			if len(cs) != 1 || cs[0].Scheme != "bearer" {
				t.Fatalf("go-sdk reads %+v from %q, want one Bearer challenge", cs, got)
			}
			if diff := cmp.Diff(tt.wantParams, cs[0].Params); diff != "" {
				t.Errorf("parameters the go-sdk reads (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSanitize(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"plain text 1.2":         "plain text 1.2",
		`a "b" \c`:               `a 'b' /c`,
		"tab\tnewline\né":        "tab?newline???",
		strings.Repeat("x", 400): strings.Repeat("x", 300),
	}
	for in, want := range tests {
		if got := Sanitize(in); got != want {
			t.Errorf("Sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzBearer checks that whatever description, scopes and error code the
// gateway puts in a challenge, the go-sdk's parser reads back exactly what
// Sanitize made of them: no value can break the header's syntax or spill into
// another parameter.
func FuzzBearer(f *testing.F) {
	f.Add(ErrInvalidToken, "token expired", "read:user_data", "")
	f.Add(ErrInsufficientScope, `quote " and \ backslash, comma`, "a b", "x=y, Basic realm=\"r\"")
	f.Add("", "\x00\xff", "", "")
	f.Add(ErrInvalidRequest, "a, b=c", `s"`, " ")
	f.Fuzz(func(t *testing.T, code, desc, scope1, scope2 string) {
		c := Bearer{Error: code, Description: desc, ResourceMetadata: prm, Scopes: []string{scope1, scope2}}
		header := c.String()
		cs, err := oauthex.ParseWWWAuthenticate([]string{header})
		if err != nil {
			t.Fatalf("go-sdk cannot parse %q: %v", header, err)
		}
		if len(cs) != 1 || cs[0].Scheme != "bearer" {
			t.Fatalf("go-sdk reads %+v from %q, want one Bearer challenge", cs, header)
		}
		want := map[string]string{"resource_metadata": prm, "scope": Sanitize(scope1 + " " + scope2)}
		if code != "" {
			want["error"] = Sanitize(code)
			if d := Sanitize(desc); d != "" {
				want["error_description"] = d
			}
		}
		if diff := cmp.Diff(want, cs[0].Params); diff != "" {
			t.Fatalf("parameters of %q (-want +got):\n%s", header, diff)
		}
	})
}
