package redirects

import (
	"fmt"
	"slices"
	"strings"
)

// Templates are the redirect URIs of well-known MCP clients, by the name an
// allow list or a pre-registered client may use instead of the URIs. They
// mirror the templates of PropelAuth's "Allowed MCP Clients"; the sources of
// each URI are in docs/propelauth-guide.md.
var Templates = map[string][]string{
	// Cursor's fixed callback for MCP OAuth, also the redirect URI its
	// mcp.json "auth" block (a pre-registered client) uses; newer desktop
	// versions are reported to use a loopback callback on port 8787 instead.
	"cursor": {"cursor://anysphere.cursor-mcp/oauth/callback", "http://localhost:8787/callback"},
	// Claude (claude.ai, Claude Desktop connectors): both hosts are in use.
	"claude": {"https://claude.ai/api/mcp/auth_callback", "https://claude.com/api/mcp/auth_callback"},
	// ChatGPT connectors: the stable callback, and the per-connector one
	// (https://chatgpt.com/connector/oauth/{callback_id}).
	"chatgpt": {"https://chatgpt.com/connector_platform_oauth_redirect", "https://chatgpt.com/connector/oauth/*"},
	// Native and command-line clients on this machine (Claude Code, MCP
	// Inspector, mcp-remote, the SDKs' clients): http on a loopback address,
	// any port (RFC 8252 section 7.3), any path.
	"loopback": {"http://localhost/*", "http://127.0.0.1/*", "http://[::1]/*"},
}

// DefaultAllowed is the allow list when the configuration names none: every
// template, so Cursor, Claude, ChatGPT and every local client work out of
// the box, and nothing else.
var DefaultAllowed = []string{"cursor", "claude", "chatgpt", "loopback"}

// TemplateNames returns the template names, sorted.
func TemplateNames() []string {
	names := make([]string, 0, len(Templates))
	for n := range Templates {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Expand replaces template names by their URIs and checks every resulting
// pattern ([ValidatePattern]). It returns the patterns without duplicates, in
// the order given, or an error naming the first bad entry.
func Expand(entries []string) ([]string, error) {
	var out []string
	add := func(p string) {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if uris, ok := Templates[e]; ok {
			for _, u := range uris {
				add(u)
			}
			continue
		}
		if !strings.Contains(e, ":") {
			return nil, fmt.Errorf("%q is neither a URI nor a template (%s)", e, strings.Join(TemplateNames(), ", "))
		}
		if err := ValidatePattern(e); err != nil {
			return nil, err
		}
		add(e)
	}
	return out, nil
}

// AllowList is the set of redirect URIs any client may use. The zero value
// allows nothing; a nil *AllowList allows every URI [Validate] accepts.
type AllowList struct {
	patterns []string
}

// NewAllowList builds an allow list from entries (URIs, patterns and
// template names). It returns an error naming the first invalid entry.
func NewAllowList(entries []string) (*AllowList, error) {
	p, err := Expand(entries)
	if err != nil {
		return nil, err
	}
	return &AllowList{patterns: p}, nil
}

// Allows reports whether uri is on the list.
func (l *AllowList) Allows(uri string) bool {
	if l == nil {
		return true
	}
	return slices.ContainsFunc(l.patterns, func(p string) bool { return Matches(p, uri) })
}

// Covers reports whether every URI pattern admits is on the list, so a
// pre-registered client's redirect URIs can be checked at start.
func (l *AllowList) Covers(pattern string) bool {
	if l == nil {
		return true
	}
	return slices.ContainsFunc(l.patterns, func(p string) bool { return covers(p, pattern) })
}

// Patterns returns the expanded patterns, in order.
func (l *AllowList) Patterns() []string {
	if l == nil {
		return nil
	}
	return slices.Clone(l.patterns)
}
