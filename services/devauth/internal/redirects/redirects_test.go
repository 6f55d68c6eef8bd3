package redirects

import (
	"net/url"
	"strings"
	"testing"
)

func TestMatches(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern, requested string
		want               bool
	}{
		{"cursor://anysphere.cursor-mcp/oauth/callback", "cursor://anysphere.cursor-mcp/oauth/callback", true},
		{"cursor://anysphere.cursor-mcp/oauth/callback", "cursor://anysphere.cursor-mcp/oauth/callback/", false},
		{"https://claude.ai/api/mcp/auth_callback", "https://claude.ai/api/mcp/auth_callback", true},
		{"https://claude.ai/api/mcp/auth_callback", "https://CLAUDE.ai/api/mcp/auth_callback", false},
		{"https://claude.ai/api/mcp/auth_callback", "https://claude.ai:443/api/mcp/auth_callback", false},
		{"https://claude.ai/api/mcp/auth_callback", "https://claude.ai/api/mcp/auth_callback?x=1", false},
		// RFC 8252 section 7.3: any port on loopback, same path.
		{"http://127.0.0.1/callback", "http://127.0.0.1:53682/callback", true},
		{"http://127.0.0.1:4000/callback", "http://127.0.0.1:53682/callback", true},
		{"http://127.0.0.1/callback", "http://localhost:53682/callback", false},
		{"http://127.0.0.1/callback", "http://127.0.0.1:53682/other", false},
		{"http://127.0.0.1/callback", "http://user@127.0.0.1:53682/callback", false},
		{"https://127.0.0.1/callback", "https://127.0.0.1:8443/callback", false},
		// A trailing "*" matches any rest of the path.
		{"https://chatgpt.com/connector/oauth/*", "https://chatgpt.com/connector/oauth/abc123", true},
		{"https://chatgpt.com/connector/oauth/*", "https://chatgpt.com/connector/oauth/a/b", true},
		{"https://chatgpt.com/connector/oauth/*", "https://chatgpt.com/connector/oauth/", false},
		{"https://chatgpt.com/connector/oauth/*", "https://chatgpt.com/connector/oauth", false},
		{"https://chatgpt.com/connector/oauth/*", "https://chatgpt.com/connector/oauth/../../evil", false},
		{"https://chatgpt.com/connector/oauth/*", "https://chatgpt.com/connector/oauth/%2e%2e/evil", false},
		{"https://chatgpt.com/connector/oauth/*", "https://chatgpt.com/connector/oauth/x?next=evil", false},
		{"https://chatgpt.com/connector/oauth/*", "https://chatgpt.com/connector/oauth/x#frag", false},
		{"https://chatgpt.com/connector/oauth/*", "https://chatgpt.com.evil.example/connector/oauth/x", false},
		{"https://chatgpt.com/connector/oauth/*", "https://chatgpt.com:8443/connector/oauth/x", false},
		{"https://chatgpt.com/connector/oauth/*", "http://chatgpt.com/connector/oauth/x", false},
		{"https://chatgpt.com/connector/oauth/*", "https://user@chatgpt.com/connector/oauth/x", false},
		{"https://chatgpt.com/connector/oauth/*", "https://chatgpt.com/connector/oauth/*", false},
		{"http://localhost/*", "http://localhost:6274/oauth/callback", true},
		{"http://localhost/*", "http://localhost:6274/oauth/callback/debug", true},
		{"http://localhost/*", "http://localhost:6274/", false},
		{"http://[::1]/*", "http://[::1]:8080/cb", true},
	}
	for _, tt := range tests {
		if got := Matches(tt.pattern, tt.requested); got != tt.want {
			t.Errorf("Matches(%q, %q) = %v, want %v", tt.pattern, tt.requested, got, tt.want)
		}
	}
}

func TestValidatePattern(t *testing.T) {
	t.Parallel()
	for p, ok := range map[string]bool{
		"https://chatgpt.com/connector/oauth/*": true,
		"http://127.0.0.1/*":                    true,
		"cursor://anysphere.cursor-mcp/oauth/*": true,
		"https://app.example/cb":                true,
		"https://*.example/cb":                  false,
		"https://app.example/*/cb":              false,
		"https://app.example/cb*":               false,
		"https://app.example/?x=*":              false,
		"https://app.example/*?x=1":             false,
		"http://app.example/*":                  false,
		"javascript:alert(1)//*":                false,
		"*":                                     false,
	} {
		if err := ValidatePattern(p); (err == nil) != ok {
			t.Errorf("ValidatePattern(%q) = %v, want ok=%v", p, err, ok)
		}
	}
}

func TestTemplatesAreValid(t *testing.T) {
	t.Parallel()
	for name, uris := range Templates {
		for _, u := range uris {
			if err := ValidatePattern(u); err != nil {
				t.Errorf("template %s: %v", name, err)
			}
		}
	}
	if _, err := Expand(DefaultAllowed); err != nil {
		t.Errorf("DefaultAllowed: %v", err)
	}
}

// TestDefaultAllowList: the list devauth uses without a configuration file
// admits the clients the README and docs/clients.md tell users to connect,
// and nothing else.
func TestDefaultAllowList(t *testing.T) {
	t.Parallel()
	l, err := NewAllowList(DefaultAllowed)
	if err != nil {
		t.Fatal(err)
	}
	for uri, want := range map[string]bool{
		"cursor://anysphere.cursor-mcp/oauth/callback":          true,
		"https://claude.ai/api/mcp/auth_callback":               true,
		"https://claude.com/api/mcp/auth_callback":              true,
		"https://chatgpt.com/connector_platform_oauth_redirect": true,
		"https://chatgpt.com/connector/oauth/abcDEF123":         true,
		"http://localhost:33418/callback":                       true, // Claude Code
		"http://localhost:6274/oauth/callback":                  true, // MCP Inspector
		"http://127.0.0.1:53682/callback":                       true, // the e2e clients
		"http://[::1]:9999/cb":                                  true,
		"https://app.example.com/cb":                            false,
		"https://claude.ai/api/mcp/other":                       false,
		"cursor://anysphere.cursor-mcp/oauth/other":             false,
		"vscode://vscode.dev/redirect":                          false,
	} {
		if got := l.Allows(uri); got != want {
			t.Errorf("Allows(%q) = %v, want %v", uri, got, want)
		}
	}
}

func TestCovers(t *testing.T) {
	t.Parallel()
	l, err := NewAllowList([]string{"loopback", "https://app.example/cb/*", "cursor"})
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{
		"http://127.0.0.1:8080/cb":                     true,
		"http://127.0.0.1/x/*":                         true,
		"https://app.example/cb/x":                     true,
		"https://app.example/cb/x/*":                   true,
		"https://app.example/cb/*":                     true,
		"https://app.example/*":                        false,
		"https://app.example/cb":                       false,
		"cursor://anysphere.cursor-mcp/oauth/callback": true,
		"cursor://anysphere.cursor-mcp/oauth/*":        false,
		"https://other.example/cb/*":                   false,
	} {
		if got := l.Covers(p); got != want {
			t.Errorf("Covers(%q) = %v, want %v", p, got, want)
		}
	}
}

// FuzzMatches: a requested URI (from anyone calling /authorize) never
// matches a pattern unless it is a valid redirect URI on the pattern's origin
// that keeps the pattern's path prefix.
func FuzzMatches(f *testing.F) {
	for _, s := range []string{
		"https://chatgpt.com/connector/oauth/x", "https://chatgpt.com/connector/oauth/../x",
		"http://127.0.0.1:1/cb", "http://localhost:6274/oauth/callback", "https://chatgpt.com/connector/oauth/%2e%2e/x",
		"cursor://anysphere.cursor-mcp/oauth/callback", "https://chatgpt.com@evil/connector/oauth/x",
		"https://chatgpt.com/connector/oauth/0 00",
	} {
		f.Add(s)
	}
	l, err := NewAllowList(DefaultAllowed)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, requested string) {
		if !l.Allows(requested) {
			return
		}
		if err := Validate(requested); err != nil {
			t.Fatalf("allowed %q, which Validate refuses: %v", requested, err)
		}
		u, _ := url.Parse(requested)
		if strings.Contains(u.Path, "/../") || strings.HasSuffix(u.Path, "/..") {
			t.Errorf("allowed %q with a dot segment", requested)
		}
		switch u.Hostname() {
		case "anysphere.cursor-mcp", "claude.ai", "claude.com", "chatgpt.com", "localhost", "127.0.0.1", "::1":
		default:
			t.Errorf("allowed %q on host %q", requested, u.Hostname())
		}
	})
}
