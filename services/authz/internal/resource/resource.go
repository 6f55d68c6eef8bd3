// Package resource canonicalises OAuth protected-resource identifiers (RFC 8707), so
// that a token's audience and the resource a caller asks about compare equal when they
// name the same resource.
//
// # Rules
//
// A resource must be an absolute URI without a fragment (RFC 8707 §2). For URIs with an
// authority (http, https and similar):
//
//   - the scheme and host are lower-cased;
//   - the port is dropped when it is the scheme's default (80 for http, 443 for https);
//   - trailing slashes of the path are removed, so "https://a/mcp/" equals
//     "https://a/mcp" and "https://a/" equals "https://a";
//   - "." and ".." path segments are resolved;
//   - the query is kept as sent;
//   - user information is rejected: it has no place in a resource identifier.
//
// URIs without an authority (for example "urn:example:api") only have their scheme
// lower-cased. Canonicalize is idempotent.
package resource

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// MaxLength bounds the resource identifiers Canonicalize accepts.
const MaxLength = 2048

// Errors returned by Canonicalize. They are all wrapped in an error that
// unwraps to ErrInvalid.
var (
	ErrInvalid     = errors.New("invalid resource")
	ErrEmpty       = errors.New("resource is empty")
	ErrTooLong     = errors.New("resource is too long")
	ErrNotAbsolute = errors.New("resource is not an absolute URI")
	ErrFragment    = errors.New("resource has a fragment")
	ErrUserinfo    = errors.New("resource has user information")
	ErrNoHost      = errors.New("resource has no host")
)

type invalidError struct{ err error }

func (e invalidError) Error() string { return e.err.Error() }
func (e invalidError) Is(target error) bool {
	return target == ErrInvalid || errors.Is(e.err, target)
}

func invalid(err error) error { return invalidError{err: err} }

var defaultPorts = map[string]string{"http": "80", "https": "443", "ws": "80", "wss": "443"}

// Canonicalize returns the canonical form of the resource identifier s. When s is
// already canonical the same string is returned without allocating.
//
// If s is not an acceptable resource identifier, Canonicalize returns an error that
// unwraps to ErrInvalid and to one of the more specific errors of this package.
func Canonicalize(s string) (string, error) {
	switch {
	case s == "":
		return "", invalid(ErrEmpty)
	case len(s) > MaxLength:
		return "", invalid(ErrTooLong)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return "", invalid(fmt.Errorf("%w: contains a control, space or non-ASCII byte", ErrNotAbsolute))
		}
	}
	if strings.Contains(s, "#") {
		return "", invalid(ErrFragment)
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", invalid(fmt.Errorf("%w: %v", ErrNotAbsolute, err))
	}
	if u.Scheme == "" {
		return "", invalid(ErrNotAbsolute)
	}
	if u.User != nil {
		return "", invalid(ErrUserinfo)
	}
	scheme := strings.ToLower(u.Scheme)
	if _, hierarchical := defaultPorts[scheme]; hierarchical && u.Opaque != "" {
		return "", invalid(ErrNoHost)
	}
	if u.Opaque != "" {
		// An opaque URI such as "urn:example:api". Its remainder is case-sensitive.
		out := scheme + ":" + u.Opaque
		if u.ForceQuery || u.RawQuery != "" {
			out += "?" + u.RawQuery
		}
		return same(s, out), nil
	}
	if !strings.HasPrefix(s[len(u.Scheme):], "://") {
		// "http:/x" or "http:x" style URIs have no authority; treat them as malformed
		// rather than guessing what was meant.
		return "", invalid(ErrNoHost)
	}
	host := strings.ToLower(u.Hostname())
	if host == "" {
		return "", invalid(ErrNoHost)
	}
	if strings.Contains(host, ":") {
		addr, err := netip.ParseAddr(host)
		if err != nil || !addr.Is6() || addr.Zone() != "" || !strings.HasPrefix(u.Host, "[") {
			return "", invalid(fmt.Errorf("%w: bad IPv6 literal", ErrNoHost))
		}
		host = "[" + addr.String() + "]"
	} else if !validRegName(host) {
		return "", invalid(fmt.Errorf("%w: bad host name", ErrNoHost))
	}
	port := u.Port()
	if port != "" {
		port = strings.TrimLeft(port, "0")
		if port == "" {
			port = "0"
		}
		if port == defaultPorts[scheme] {
			port = ""
		}
	}
	p := u.EscapedPath()
	if hasDotSegment(p) {
		p = removeDotSegments(p)
	}
	p = strings.TrimRight(p, "/")
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(scheme)
	b.WriteString("://")
	b.WriteString(host)
	if port != "" {
		b.WriteByte(':')
		b.WriteString(port)
	}
	b.WriteString(p)
	if u.ForceQuery || u.RawQuery != "" {
		b.WriteByte('?')
		b.WriteString(u.RawQuery)
	}
	return same(s, b.String()), nil
}

// validRegName reports whether host uses only RFC 3986 reg-name characters
// (unreserved and sub-delims; percent-encoding is not accepted in hosts here).
func validRegName(host string) bool {
	for i := 0; i < len(host); i++ {
		c := host[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func hasDotSegment(p string) bool {
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// removeDotSegments resolves "." and ".." segments of an escaped path as RFC 3986
// §5.2.4 does. Unlike path.Clean it keeps empty segments ("//"), which are
// significant to some servers.
func removeDotSegments(p string) string {
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	out := make([]string, 0, len(segs))
	for i, seg := range segs {
		last := i == len(segs)-1
		switch seg {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, seg)
		}
	}
	return "/" + strings.Join(out, "/")
}

// same returns orig when it equals canon, so canonical input costs no allocation
// for the caller to keep.
func same(orig, canon string) string {
	if orig == canon {
		return orig
	}
	return canon
}
