package oauth

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// maxURILength bounds redirect URIs and client_id URLs.
const maxURILength = 2048

// forbiddenSchemes can run code or read local data in a browser or OS
// handler; they are never acceptable redirect targets.
var forbiddenSchemes = map[string]bool{
	"javascript": true, "data": true, "file": true, "vbscript": true, "about": true,
	"blob": true, "filesystem": true, "view-source": true, "ws": true, "wss": true, "ftp": true,
}

// ValidateRedirectURI checks a redirect URI a client registers (RFC 7591,
// OAuth 2.1 section 2.3.1, RFC 8252 for native apps). It accepts https URLs,
// http URLs on a loopback host (localhost, 127.0.0.0/8, ::1), and
// private-use schemes such as cursor://anysphere.cursor-mcp/oauth/callback.
// It returns an error describing why any other URI is refused: relative,
// with a fragment or user info, too long, plain http to a remote host, or a
// scheme that can run code (javascript:, data:, ...).
func ValidateRedirectURI(s string) error {
	if s == "" {
		return errors.New("redirect URI is empty")
	}
	if len(s) > maxURILength {
		return fmt.Errorf("redirect URI longer than %d bytes", maxURILength)
	}
	if strings.ContainsAny(s, " \t\r\n\x00\\") {
		return errors.New("redirect URI contains whitespace, a backslash or NUL")
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

// redirectMatches reports whether a requested redirect URI matches a
// registered one. Matching is exact, except that for http loopback URIs the
// port is ignored, as RFC 8252 section 7.3 and OAuth 2.1 section 8.4.2
// require: native apps bind an ephemeral port at run time.
func redirectMatches(registered, requested string) bool {
	if registered == requested {
		return true
	}
	ru, err1 := url.Parse(registered)
	qu, err2 := url.Parse(requested)
	if err1 != nil || err2 != nil {
		return false
	}
	if ru.Scheme != "http" || qu.Scheme != "http" || !IsLoopbackHost(ru.Hostname()) {
		return false
	}
	return ru.Hostname() == qu.Hostname() && ru.EscapedPath() == qu.EscapedPath() &&
		ru.RawQuery == qu.RawQuery && qu.User == nil && qu.Fragment == "" && ru.User == nil
}
