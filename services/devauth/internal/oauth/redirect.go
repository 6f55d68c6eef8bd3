package oauth

import "github.com/mcpauthz/mcpauthz/services/devauth/internal/redirects"

// maxURILength bounds redirect URIs and client_id URLs.
const maxURILength = redirects.MaxURILength

// ValidateRedirectURI checks a redirect URI a client registers; see
// [redirects.Validate].
func ValidateRedirectURI(s string) error { return redirects.Validate(s) }

// IsLoopbackHost reports whether host (without port or brackets) is
// "localhost" or a loopback IP literal.
func IsLoopbackHost(host string) bool { return redirects.IsLoopbackHost(host) }

// redirectMatches reports whether a requested redirect URI matches a
// registered one: exactly, except that for http loopback URIs the port is
// ignored (RFC 8252 section 7.3, OAuth 2.1 section 8.4.2) and a
// pre-registered client's pattern may end in "*" ([redirects.Matches]).
func redirectMatches(registered, requested string) bool {
	return redirects.Matches(registered, requested)
}
