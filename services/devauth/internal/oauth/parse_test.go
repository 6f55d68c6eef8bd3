package oauth

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"
)

func TestValidateRedirectURI(t *testing.T) {
	t.Parallel()
	tests := []struct {
		uri string
		ok  bool
	}{
		{"https://app.example/cb", true},
		{"https://app.example:8443/cb?x=1", true},
		{"http://localhost:3000/callback", true},
		{"http://127.0.0.1/cb", true},
		{"http://127.5.6.7:1/cb", true},
		{"http://[::1]:8080/cb", true},
		{"cursor://anysphere.cursor-mcp/oauth/callback", true},
		{"com.example.app:/oauth2redirect", true},
		{"vscode://vscode.github-authentication/did-authenticate", true},
		{"http://app.example/cb", false},
		{"http://localhost.evil.example/cb", false},
		{"http://127.0.0.1.nip.io/cb", false},
		{"https:///cb", false},
		// A client registering "*" would get a pattern's wildcard.
		{"https://app.example/cb/*", false},
		{"A://aAaaaaaa*", false},
		{"https://app.example/cb#frag", false},
		{"https://app.example/cb#", false},
		{"https://u:p@app.example/cb", false},
		{"/relative", false},
		{"app.example/cb", false},
		{"", false},
		{"javascript:alert(1)", false},
		{"JavaScript:alert(1)", false},
		{"data:text/html,x", false},
		{"file:///etc/passwd", false},
		{"myapp:", false},
		{"https://app.example/c b", false},
		{"https://app.example\\@evil.example/", false},
		{"https://app.example/" + strings.Repeat("a", 3000), false},
	}
	for _, tt := range tests {
		if err := ValidateRedirectURI(tt.uri); (err == nil) != tt.ok {
			t.Errorf("ValidateRedirectURI(%q) = %v, want ok=%v", tt.uri, err, tt.ok)
		}
	}
}

func TestRedirectMatches(t *testing.T) {
	t.Parallel()
	tests := []struct {
		registered, requested string
		want                  bool
	}{
		{"https://a.example/cb", "https://a.example/cb", true},
		{"https://a.example/cb", "https://a.example/cb/", false},
		{"https://a.example/cb", "https://a.example:443/cb", false},
		{"https://a.example:8443/cb", "https://a.example:9443/cb", false},
		{"http://127.0.0.1:3000/cb", "http://127.0.0.1:4000/cb", true},
		{"http://127.0.0.1/cb", "http://127.0.0.1:4000/cb", true},
		{"http://localhost:3000/cb", "http://localhost:5000/cb", true},
		{"http://127.0.0.1:3000/cb", "http://localhost:3000/cb", false},
		{"http://127.0.0.1:3000/cb", "http://127.0.0.1:3000/other", false},
		{"http://127.0.0.1:3000/cb", "http://127.0.0.1:3000/cb?x=1", false},
		{"cursor://anysphere.cursor-mcp/oauth/callback", "cursor://anysphere.cursor-mcp/oauth/callback", true},
		{"cursor://anysphere.cursor-mcp/oauth/callback", "cursor://anysphere.cursor-mcp/oauth/callbacK", false},
	}
	for _, tt := range tests {
		if got := redirectMatches(tt.registered, tt.requested); got != tt.want {
			t.Errorf("redirectMatches(%q, %q) = %v, want %v", tt.registered, tt.requested, got, tt.want)
		}
	}
}

func TestVerifyS256(t *testing.T) {
	t.Parallel()
	v := oauth2.GenerateVerifier()
	c := oauth2.S256ChallengeFromVerifier(v)
	// RFC 7636 appendix B.
	const rfcVerifier, rfcChallenge = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
	tests := []struct {
		name, verifier, challenge string
		want                      bool
	}{
		{"x/oauth2 pair", v, c, true},
		{"RFC 7636 example", rfcVerifier, rfcChallenge, true},
		{"plain", v, v, false},
		{"other verifier", oauth2.GenerateVerifier(), c, false},
		{"too short", "abc", "abc", false},
		{"too long", strings.Repeat("a", 129), c, false},
		{"bad character", strings.Repeat("a", 42) + "+", c, false},
		{"empty challenge", v, "", false},
	}
	for _, tt := range tests {
		if got := VerifyS256(tt.verifier, tt.challenge); got != tt.want {
			t.Errorf("%s: VerifyS256 = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestValidateClientIDURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id            string
		allowLoopback bool
		ok            bool
	}{
		{"https://app.example/client.json", false, true},
		{"https://app.example/oauth/metadata?v=1", false, true},
		{"http://127.0.0.1:8080/client.json", true, true},
		{"http://localhost/c.json", true, true},
		{"http://127.0.0.1:8080/client.json", false, false},
		{"http://app.example/client.json", true, false},
		{"https://app.example", false, false},
		{"https://app.example/", false, false},
		{"https://app.example/a/../b.json", false, false},
		{"https://app.example/./b.json", false, false},
		{"https://app.example/c.json#f", false, false},
		{"https://u:p@app.example/c.json", false, false},
		{"https:///c.json", false, false},
		{"ftp://app.example/c.json", false, false},
	}
	for _, tt := range tests {
		if _, err := ValidateClientIDURL(tt.id, tt.allowLoopback); (err == nil) != tt.ok {
			t.Errorf("ValidateClientIDURL(%q, %v) = %v, want ok=%v", tt.id, tt.allowLoopback, err, tt.ok)
		}
	}
}

var scopes = []string{"read:user_data", "read:org_data"}

func FuzzValidateRedirectURI(f *testing.F) {
	for _, s := range []string{"https://a.example/cb", "http://127.0.0.1:1/cb", "cursor://x/y", "javascript:x",
		"http://[::1]/", "https://a.example/#", "http://localhost%2eevil.example/", "myapp:", "HTTP://LOCALHOST/cb", "A://aAaaaaaa*", "https://a.example/cb/*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateRedirectURI(s) != nil {
			return
		}
		u, err := url.Parse(s)
		if err != nil || !u.IsAbs() || u.Fragment != "" || u.User != nil || strings.Contains(s, "#") {
			t.Fatalf("accepted %q", s)
		}
		switch strings.ToLower(u.Scheme) {
		case "http":
			if !IsLoopbackHost(u.Hostname()) {
				t.Fatalf("accepted http to non-loopback %q", s)
			}
		case "javascript", "data", "file", "vbscript":
			t.Fatalf("accepted dangerous scheme %q", s)
		}
		if !redirectMatches(s, s) {
			t.Fatalf("%q does not match itself", s)
		}
	})
}

func FuzzParseClientMetadata(f *testing.F) {
	f.Add([]byte(`{"redirect_uris":["https://a.example/cb"]}`))
	f.Add([]byte(`{"redirect_uris":["cursor://anysphere.cursor-mcp/oauth/callback"],"token_endpoint_auth_method":"client_secret_basic","grant_types":["authorization_code","refresh_token","authorization_code"],"scope":"read:user_data x"}`))
	f.Add([]byte(`{"redirect_uris":["http://evil.example/"]}`))
	f.Add([]byte(`{"redirect_uris":null,"client_uri":"javascript:1"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := ParseClientMetadata(body, scopes)
		if err != nil {
			var me *MetadataError
			if !errors.As(err, &me) || (me.Code != errInvalidRedirectURI && me.Code != errInvalidClientMetadata) {
				t.Fatalf("error %v is not an RFC 7591 error", err)
			}
			return
		}
		if len(m.RedirectURIs) == 0 || m.Scope == "" {
			t.Fatalf("accepted metadata without redirect URIs or scope: %+v", m)
		}
		for _, r := range m.RedirectURIs {
			if ValidateRedirectURI(r) != nil {
				t.Fatalf("accepted invalid redirect %q", r)
			}
		}
		for _, s := range strings.Fields(m.Scope) {
			if s != scopes[0] && s != scopes[1] {
				t.Fatalf("granted unsupported scope %q", s)
			}
		}
		switch m.TokenEndpointAuthMethod {
		case "none", "client_secret_basic", "client_secret_post":
		default:
			t.Fatalf("accepted auth method %q", m.TokenEndpointAuthMethod)
		}
	})
}

func FuzzParseClientIDDocument(f *testing.F) {
	const id = "https://app.example/client.json"
	f.Add([]byte(`{"client_id":"` + id + `","redirect_uris":["http://127.0.0.1/cb"],"client_name":"x"}`))
	f.Add([]byte(`{"client_id":"` + id + `","redirect_uris":["http://127.0.0.1/cb"],"client_secret":"s"}`))
	f.Add([]byte(`{"client_id":"https://other.example/c.json","redirect_uris":["http://127.0.0.1/cb"]}`))
	f.Add([]byte(`{"client_id":"` + id + `","redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"client_secret_post"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := ParseClientIDDocument(id, body, scopes)
		if err != nil {
			return
		}
		if c.ID != id || c.TokenEndpointAuthMethod != "none" || len(c.RedirectURIs) == 0 {
			t.Fatalf("accepted client %+v", c)
		}
	})
}
