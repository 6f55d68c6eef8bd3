package challenge

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

const prm = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"

func TestResponseWrite(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		r          Response
		wantStatus int
		wantChall  []Challenge
		wantBody   Body
		wantRetry  string
	}{
		{
			name:       "no token",
			r:          Response{Status: 401, Challenge: true, ResourceMetadata: prm, Scopes: []string{"read:user_data"}, Description: "an access token is required"},
			wantStatus: 401,
			wantChall: []Challenge{{Scheme: "Bearer", Params: map[string]string{
				"resource_metadata": prm, "scope": "read:user_data",
			}}},
			wantBody: Body{Error: "unauthorized", ErrorDescription: "an access token is required"},
		},
		{
			name:       "invalid token",
			r:          Response{Status: 401, Challenge: true, Error: ErrInvalidToken, Description: `token "x" expired`, ResourceMetadata: prm, Scopes: []string{"a", "b"}},
			wantStatus: 401,
			wantChall: []Challenge{{Scheme: "Bearer", Params: map[string]string{
				"resource_metadata": prm, "scope": "a b", "error": "invalid_token", "error_description": "token 'x' expired",
			}}},
			wantBody: Body{Error: "invalid_token", ErrorDescription: `token "x" expired`},
		},
		{
			name:       "insufficient scope",
			r:          Response{Status: 403, Challenge: true, Error: ErrInsufficientScope, Description: "missing read:org_data", ResourceMetadata: prm, Scopes: []string{"read:user_data", "read:org_data"}},
			wantStatus: 403,
			wantChall: []Challenge{{Scheme: "Bearer", Params: map[string]string{
				"error": "insufficient_scope", "scope": "read:user_data read:org_data", "resource_metadata": prm, "error_description": "missing read:org_data",
			}}},
			wantBody: Body{Error: "insufficient_scope", ErrorDescription: "missing read:org_data"},
		},
		{
			name:       "unavailable",
			r:          Response{Status: 503, Description: "authorization service unavailable", RetryAfter: 1500 * time.Millisecond},
			wantStatus: 503,
			wantBody:   Body{Error: "temporarily_unavailable", ErrorDescription: "authorization service unavailable"},
			wantRetry:  "2",
		},
		{
			name:       "body too slow",
			r:          Response{Status: 408, Description: "the request body did not arrive in time"},
			wantStatus: 408,
			wantBody:   Body{Error: "request_timeout", ErrorDescription: "the request body did not arrive in time"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			tt.r.Write(rec)
			res := rec.Result()
			if res.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", res.StatusCode, tt.wantStatus)
			}
			got, err := Parse(res.Header.Values("WWW-Authenticate")...)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantChall, got); diff != "" {
				t.Errorf("challenge mismatch (-want +got):\n%s", diff)
			}
			var body Body
			if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantBody, body); diff != "" {
				t.Errorf("body mismatch (-want +got):\n%s", diff)
			}
			if got := res.Header.Get("Retry-After"); got != tt.wantRetry {
				t.Errorf("Retry-After = %q, want %q", got, tt.wantRetry)
			}
			if got := res.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q", got)
			}
			// The go-sdk client must read the same parameters.
			sdk, err := oauthex.ParseWWWAuthenticate(res.Header.Values("WWW-Authenticate"))
			if err != nil {
				t.Fatalf("go-sdk cannot parse our challenge: %v", err)
			}
			for i, c := range sdk {
				if diff := cmp.Diff(got[i].Params, c.Params); diff != "" {
					t.Errorf("go-sdk reads different params (-ours +sdk):\n%s", diff)
				}
			}
		})
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []Challenge
	}{
		{`Bearer`, []Challenge{{Scheme: "Bearer"}}},
		{`Bearer realm=`, []Challenge{{Scheme: "Bearer", Token68: "realm="}}},
		{`Bearer realm="example"`, []Challenge{{Scheme: "Bearer", Params: map[string]string{"realm": "example"}}}},
		{`Bearer Realm = example , scope="a b"`, []Challenge{{Scheme: "Bearer", Params: map[string]string{"realm": "example", "scope": "a b"}}}},
		{`Basic abc+/=, Bearer error="invalid_token"`, []Challenge{
			{Scheme: "Basic", Token68: "abc+/="},
			{Scheme: "Bearer", Params: map[string]string{"error": "invalid_token"}},
		}},
		{`Bearer a="x,y", b="q\"uo\\te", Basic realm=r,, DPoP`, []Challenge{
			{Scheme: "Bearer", Params: map[string]string{"a": "x,y", "b": `q"uo\te`}},
			{Scheme: "Basic", Params: map[string]string{"realm": "r"}},
			{Scheme: "DPoP"},
		}},
		{` , Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple"`, []Challenge{
			{Scheme: "Newauth", Params: map[string]string{"realm": "apps", "type": "1", "title": `Login to "apps"`}},
			{Scheme: "Basic", Params: map[string]string{"realm": "simple"}},
		}},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Parse(%q) mismatch (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`"Bearer"`,
		`Bearer realm="x`,
		`Bearer realm="x" scope="y"`,
		`Bearer realm="a", realm="b"`,
		`Bearer,realm="x" =`,
		"Bearer realm=\"a\x01\"",
		`Bearer realm="a\`,
		`Bearer@ x`,
	} {
		if got, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %+v, want error", in, got)
		}
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

// FuzzParse checks that Parse never panics and that what it accepts survives a
// Format/Parse round trip unchanged.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`Bearer resource_metadata="https://x/.well-known/oauth-protected-resource/mcp", scope="a b"`,
		`Bearer error="insufficient_scope", scope="a", error_description="x \"y\""`,
		`Basic abc==, Bearer`,
		`Newauth realm="apps", type=1, , Basic realm="simple"`,
		`Bearer realm="unterminated`,
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cs, err := Parse(s)
		if err != nil {
			return
		}
		var parts []string
		for _, c := range cs {
			parts = append(parts, Format(c))
		}
		again, err := Parse(strings.Join(parts, ", "))
		if err != nil {
			t.Fatalf("Parse(Format(Parse(%q))) = %v", s, err)
		}
		if diff := cmp.Diff(cs, again); diff != "" {
			t.Fatalf("round trip of %q changed (-first +second):\n%s", s, diff)
		}
	})
}

// FuzzBearer checks that any description and scope the gateway could put in a
// challenge comes back from the parser exactly as sanitised.
func FuzzBearer(f *testing.F) {
	f.Add("token expired", "read:user_data")
	f.Add(`quote " and \ backslash, comma`, "a b")
	f.Add("\x00\xff", "")
	f.Fuzz(func(t *testing.T, desc, scope string) {
		r := Response{Status: http.StatusUnauthorized, Challenge: true, Error: ErrInvalidToken, Description: desc, ResourceMetadata: prm, Scopes: []string{scope}}
		cs, err := Parse(r.Header())
		if err != nil {
			t.Fatalf("Parse(%q): %v", r.Header(), err)
		}
		if len(cs) != 1 {
			t.Fatalf("got %d challenges from %q", len(cs), r.Header())
		}
		want := map[string]string{"resource_metadata": prm, "error": ErrInvalidToken}
		if d := Sanitize(desc); d != "" {
			want["error_description"] = d
		}
		if s := Sanitize(scope); s != "" {
			want["scope"] = s
		}
		if diff := cmp.Diff(want, cs[0].Params); diff != "" {
			t.Fatalf("params mismatch (-want +got):\n%s", diff)
		}
	})
}
