// Package challenge builds the WWW-Authenticate Bearer challenges of the
// gateway's OAuth errors: RFC 6750 §3 with the resource_metadata parameter of
// RFC 9728 §5.1. Package httperror sends them with the JSON body and status.
//
// # What the gateway challenges
//
//   - No token: 401, Bearer resource_metadata and scope only (RFC 6750 §3.1: no
//     error code when the request carried no authentication).
//   - Token invalid, expired, for another resource or issuer, or malformed: 401
//     with error="invalid_token", so the client obtains a new token.
//   - Token valid but missing a scope: 403 with error="insufficient_scope" and a
//     scope parameter naming every scope the operation needs (MCP step-up).
//   - Token sent in the query string or in several Authorization headers: 400
//     with error="invalid_request" (RFC 6750 §2 and §3.1).
//
// The gateway decides which scopes a challenge names (package gateway, Scopes).
//
// Every value is quoted, and reduced to the characters RFC 6750 §3 allows
// ([Sanitize]), so no client-supplied byte can break the header's syntax.
package challenge

import "strings"

// OAuth error codes of Bearer challenges (RFC 6750 §3.1), also the error of
// the JSON bodies that go with them.
const (
	ErrInvalidRequest    = "invalid_request"
	ErrInvalidToken      = "invalid_token"
	ErrInsufficientScope = "insufficient_scope"
)

// Bearer is one Bearer challenge.
type Bearer struct {
	// Error is the OAuth error code; empty for a request that carried no
	// token, whose challenge then has neither error nor error_description.
	Error string
	// Description is error_description: a human-readable explanation, safe
	// to show the client.
	Description string
	// ResourceMetadata is the absolute protected resource metadata URL.
	ResourceMetadata string
	// Scopes are advertised in scope, space-separated.
	Scopes []string
}

// String returns the WWW-Authenticate value of c. The parameter order follows
// the MCP authorization spec's examples: error first for insufficient_scope,
// resource_metadata first otherwise. Empty values are left out.
func (c Bearer) String() string {
	scope := strings.Join(c.Scopes, " ")
	desc := c.Description
	if c.Error == "" {
		desc = ""
	}
	if c.Error == ErrInsufficientScope {
		return format(
			param{"error", c.Error},
			param{"scope", scope},
			param{"resource_metadata", c.ResourceMetadata},
			param{"error_description", desc},
		)
	}
	return format(
		param{"resource_metadata", c.ResourceMetadata},
		param{"scope", scope},
		param{"error", c.Error},
		param{"error_description", desc},
	)
}

// param is one auth-param, in the order it is written.
type param struct{ name, value string }

// format writes a Bearer challenge with every non-empty value, sanitised, as
// a quoted-string.
func format(params ...param) string {
	var b strings.Builder
	b.WriteString("Bearer")
	first := true
	for _, p := range params {
		if p.value == "" {
			continue
		}
		if first {
			b.WriteByte(' ')
			first = false
		} else {
			b.WriteString(", ")
		}
		b.WriteString(p.name)
		b.WriteString(`="`)
		b.WriteString(Sanitize(p.value))
		b.WriteByte('"')
	}
	return b.String()
}

// maxValue bounds a value so a long upstream message cannot bloat every
// response header.
const maxValue = 300

// Sanitize returns s restricted to the characters RFC 6750 §3 allows in
// error_description and scope values (%x20-21 / %x23-5B / %x5D-7E): a double
// quote becomes a single quote, a backslash a slash, any other byte outside the
// set a question mark. The result is at most 300 bytes.
func Sanitize(s string) string {
	if len(s) > maxValue {
		s = s[:maxValue]
	}
	clean := true
	for i := 0; i < len(s); i++ {
		if !allowedValueByte(s[i]) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		switch {
		case allowedValueByte(c):
		case c == '"':
			b[i] = '\''
		case c == '\\':
			b[i] = '/'
		default:
			b[i] = '?'
		}
	}
	return string(b)
}

func allowedValueByte(c byte) bool {
	return c >= 0x20 && c <= 0x7e && c != '"' && c != '\\'
}
