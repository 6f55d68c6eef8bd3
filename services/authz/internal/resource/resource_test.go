package resource

import (
	"errors"
	"strings"
	"testing"
)

func TestCanonicalize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want string
	}{
		{"https://mcp.example.com/mcp", "https://mcp.example.com/mcp"},
		{"https://mcp.example.com/mcp/", "https://mcp.example.com/mcp"},
		{"HTTPS://MCP.Example.COM/mcp", "https://mcp.example.com/mcp"},
		{"https://mcp.example.com:443/mcp", "https://mcp.example.com/mcp"},
		{"http://mcp.example.com:80/mcp", "http://mcp.example.com/mcp"},
		{"http://mcp.example.com:0080/mcp", "http://mcp.example.com/mcp"},
		{"http://127.0.0.1:8000/mcp", "http://127.0.0.1:8000/mcp"},
		{"https://mcp.example.com:80/mcp", "https://mcp.example.com:80/mcp"},
		{"https://mcp.example.com", "https://mcp.example.com"},
		{"https://mcp.example.com/", "https://mcp.example.com"},
		{"https://mcp.example.com/a/./b/../mcp", "https://mcp.example.com/a/mcp"},
		{"https://mcp.example.com/MCP", "https://mcp.example.com/MCP"},
		{"https://mcp.example.com/mcp?tenant=A", "https://mcp.example.com/mcp?tenant=A"},
		{"https://mcp.example.com/mcp/?tenant=A", "https://mcp.example.com/mcp?tenant=A"},
		{"https://[::1]:443/mcp", "https://[::1]/mcp"},
		{"https://[::1]:8443/mcp", "https://[::1]:8443/mcp"},
		{"https://mcp.example.com/.well-known/x", "https://mcp.example.com/.well-known/x"},
		{"URN:Example:API", "urn:Example:API"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := Canonicalize(tt.in)
			if err != nil {
				t.Fatalf("Canonicalize(%q) error: %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("Canonicalize(%q) = %q, want %q", tt.in, got, tt.want)
			}
			again, err := Canonicalize(got)
			if err != nil || again != got {
				t.Errorf("Canonicalize(%q) = %q, %v; want it unchanged", got, again, err)
			}
		})
	}
}

func TestCanonicalizeRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", ErrEmpty},
		{"relative", "/mcp", ErrNotAbsolute},
		{"no scheme", "mcp.example.com/mcp", ErrNotAbsolute},
		{"fragment", "https://mcp.example.com/mcp#x", ErrFragment},
		{"empty fragment", "https://mcp.example.com/mcp#", ErrFragment},
		{"userinfo", "https://u:p@mcp.example.com/mcp", ErrUserinfo},
		{"no host", "https:///mcp", ErrNoHost},
		{"opaque http", "http:mcp", ErrNoHost},
		{"space", "https://mcp.example.com/a b", ErrNotAbsolute},
		{"newline", "https://mcp.example.com/\n", ErrNotAbsolute},
		{"non-ascii", "https://mcp.exämple.com/", ErrNotAbsolute},
		{"bad port", "https://mcp.example.com:x/", ErrNotAbsolute},
		{"too long", "https://mcp.example.com/" + strings.Repeat("a", MaxLength), ErrTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Canonicalize(tt.in)
			if !errors.Is(err, tt.want) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Canonicalize(%q) = %q, %v; want an error matching %v and ErrInvalid", tt.in, got, err, tt.want)
			}
		})
	}
}

func FuzzCanonicalize(f *testing.F) {
	for _, s := range []string{
		"https://mcp.example.com/mcp",
		"HTTP://A:80/./b/../c/",
		"https://[::1]:0443/x?y#z",
		"urn:x:y",
		"http://a//.//..",
		"https://a/%2e%2E/b%2f",
		"https://a/b?",
		"http:x",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Canonicalize(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Canonicalize(%q) error %v does not unwrap to ErrInvalid", s, err)
			}
			return
		}
		again, err := Canonicalize(c)
		if err != nil {
			t.Fatalf("Canonicalize(%q) = %q, but canonicalising that fails: %v", s, c, err)
		}
		if again != c {
			t.Fatalf("not idempotent: %q -> %q -> %q", s, c, again)
		}
		if strings.Contains(c, "#") {
			t.Fatalf("Canonicalize(%q) = %q has a fragment", s, c)
		}
		// Only URIs with an authority lose trailing slashes: "a:://" is an
		// opaque URI (path "://"), kept as it is.
		if _, rest, _ := strings.Cut(c, ":"); strings.HasPrefix(rest, "//") && !strings.Contains(c, "?") && strings.HasSuffix(c, "/") {
			t.Fatalf("Canonicalize(%q) = %q has a trailing slash", s, c)
		}
	})
}
