// Package redirects decides which redirect URIs devauth accepts: the rules
// every redirect URI must meet ([Validate]), how a requested URI matches a
// registered one ([Matches]), and the allow list of redirect URIs every
// client is held to ([AllowList]), the local counterpart of PropelAuth's
// "Allowed MCP Clients" with its templates ([Templates]).
//
// # Patterns
//
// An allow-list entry, and a pre-registered client's redirect URI, is a
// pattern: an absolute redirect URI, optionally ending in "*" at the end of
// its path. A pattern matches a requested URI when scheme, host, path and
// query are equal, except that
//
//   - for http on a loopback host the port is ignored, as RFC 8252 section
//     7.3 and OAuth 2.1 section 8.4.2 require for native apps, which bind an
//     ephemeral port at run time;
//   - a trailing "*" matches any rest of the path without dot segments, so
//     "https://chatgpt.com/connector/oauth/*" admits ChatGPT's per-connector
//     callbacks and "http://127.0.0.1/*" every local client.
package redirects

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// MaxURILength bounds redirect URIs and client_id URLs.
const MaxURILength = 2048

// forbiddenSchemes can run code or read local data in a browser or OS
// handler; they are never acceptable redirect targets.
var forbiddenSchemes = map[string]bool{
	"javascript": true, "data": true, "file": true, "vbscript": true, "about": true,
	"blob": true, "filesystem": true, "view-source": true, "ws": true, "wss": true, "ftp": true,
}

// Validate checks a redirect URI a client registers (RFC 7591, OAuth 2.1
// section 2.3.1, RFC 8252 for native apps). It accepts https URLs, http URLs
// on a loopback host (localhost, 127.0.0.0/8, ::1), and private-use schemes
// such as cursor://anysphere.cursor-mcp/oauth/callback. It returns an error
// describing why any other URI is refused: relative, with a fragment or user
// info, too long, plain http to a remote host, or a scheme that can run code
// (javascript:, data:, ...), or containing "*", which only an operator's
// pattern may.
func Validate(s string) error {
	if s == "" {
		return errors.New("redirect URI is empty")
	}
	if len(s) > MaxURILength {
		return fmt.Errorf("redirect URI longer than %d bytes", MaxURILength)
	}
	if strings.ContainsAny(s, " \t\r\n\x00\\") {
		return errors.New("redirect URI contains whitespace, a backslash or NUL")
	}
	if strings.Contains(s, "*") {
		// "*" ends an operator's pattern; in a URI a client registers it
		// would turn the URI into one.
		return errors.New("redirect URI must not contain \"*\"")
	}
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("redirect URI is not a URI")
	}
	if !u.IsAbs() {
		return errors.New("redirect URI must be absolute")
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return errors.New("redirect URI must not have a fragment")
	}
	if u.User != nil {
		return errors.New("redirect URI must not have user info")
	}
	scheme := strings.ToLower(u.Scheme)
	switch {
	case scheme == "https":
		if u.Hostname() == "" {
			return errors.New("https redirect URI has no host")
		}
	case scheme == "http":
		if !IsLoopbackHost(u.Hostname()) {
			return errors.New("http redirect URIs are only allowed on loopback (localhost, 127.0.0.1, [::1])")
		}
	case forbiddenSchemes[scheme]:
		return fmt.Errorf("redirect URI scheme %q is not allowed", scheme)
	default:
		// A private-use scheme (RFC 8252 section 7.1). It must be followed by
		// something, or the OS has nothing to route.
		if u.Opaque == "" && u.Host == "" && u.Path == "" {
			return errors.New("private-use redirect URI has nothing after the scheme")
		}
	}
	return nil
}

// IsLoopbackHost reports whether host (without port or brackets) is
// "localhost" or a loopback IP literal.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Matches reports whether requested matches the pattern registered (see the
// package documentation). Matching is exact string comparison, except for
// the loopback port rule and a trailing "*". A requested URI with user info
// or a fragment never matches a pattern other than itself.
func Matches(registered, requested string) bool {
	prefix, wild := strings.CutSuffix(registered, "*")
	if !wild && registered == requested {
		return true
	}
	if Validate(requested) != nil {
		return false
	}
	ru, err1 := url.Parse(prefix)
	qu, err2 := url.Parse(requested)
	if err1 != nil || err2 != nil || ru.Opaque != "" || qu.Opaque != "" || ru.User != nil {
		return false
	}
	if qu.User != nil || qu.Fragment != "" || strings.Contains(requested, "#") {
		return false
	}
	loopbackHTTP := ru.Scheme == "http" && IsLoopbackHost(ru.Hostname())
	if !wild && !loopbackHTTP {
		return false
	}
	if ru.Scheme != qu.Scheme || ru.Hostname() != qu.Hostname() || ru.RawQuery != qu.RawQuery || qu.ForceQuery {
		return false
	}
	if !loopbackHTTP && ru.Port() != qu.Port() {
		return false
	}
	rp, qp := ru.EscapedPath(), qu.EscapedPath()
	if !wild {
		return rp == qp
	}
	rest, ok := strings.CutPrefix(qp, rp)
	return ok && rest != "" && !hasDotSegment(qp)
}

// hasDotSegment reports whether an escaped path has a "." or ".." segment,
// plain or percent-encoded. The browser resolves them before it navigates,
// so ".../oauth/../../x" would leave the prefix a pattern allows.
func hasDotSegment(path string) bool {
	for _, seg := range strings.Split(path, "/") {
		if s, err := url.PathUnescape(seg); err != nil || s == "." || s == ".." {
			return true
		}
	}
	return false
}

// ValidatePattern checks an allow-list entry or a pre-registered client's
// redirect URI after template expansion: a redirect URI [Validate] accepts,
// which may end in "*" at the end of its path, and no "*" elsewhere.
func ValidatePattern(p string) error {
	base, wild := strings.CutSuffix(p, "*")
	if strings.Contains(base, "*") {
		return fmt.Errorf("%q: \"*\" is allowed only at the end of the path", p)
	}
	if err := Validate(base); err != nil {
		return fmt.Errorf("%q: %w", p, err)
	}
	if wild {
		u, _ := url.Parse(base)
		if u.RawQuery != "" || u.ForceQuery || u.Opaque != "" || !strings.HasSuffix(u.Path, "/") {
			return fmt.Errorf("%q: \"*\" must end a path that ends in \"/\", with no query", p)
		}
	}
	return nil
}

// covers reports whether pattern a admits every URI pattern b admits.
func covers(a, b string) bool {
	bp, bWild := strings.CutSuffix(b, "*")
	if !bWild {
		return Matches(a, b)
	}
	ap, aWild := strings.CutSuffix(a, "*")
	if !aWild {
		return false
	}
	au, err1 := url.Parse(ap)
	bu, err2 := url.Parse(bp)
	if err1 != nil || err2 != nil {
		return false
	}
	loopbackHTTP := au.Scheme == "http" && IsLoopbackHost(au.Hostname())
	return au.Scheme == bu.Scheme && au.Hostname() == bu.Hostname() && au.RawQuery == bu.RawQuery &&
		(loopbackHTTP || au.Port() == bu.Port()) && strings.HasPrefix(bu.EscapedPath(), au.EscapedPath())
}
