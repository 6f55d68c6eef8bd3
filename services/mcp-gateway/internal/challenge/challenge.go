// Package challenge builds the gateway's OAuth error responses: the
// WWW-Authenticate Bearer challenges of RFC 6750 §3 with the resource_metadata
// parameter of RFC 9728 §5.1, and the JSON bodies that go with them. It also
// parses WWW-Authenticate headers (RFC 9110 §11.6.1), which tests use to compare
// challenges parameter by parameter instead of matching substrings.
//
// # What the gateway answers
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
// Every value is quoted, and error_description is reduced to the characters RFC
// 6750 §3 allows, so no client-supplied byte can break the header's syntax.
package challenge

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// OAuth error codes used in challenges and bodies (RFC 6750 §3.1).
const (
	ErrInvalidRequest    = "invalid_request"
	ErrInvalidToken      = "invalid_token"
	ErrInsufficientScope = "insufficient_scope"
)

// Param is one auth-param of a challenge, in the order it is written.
type Param struct {
	Name  string
	Value string
}

// Bearer formats a Bearer challenge with every value as a quoted-string. Empty
// values are left out. Values are sanitised with [Sanitize].
func Bearer(params ...Param) string {
	var b strings.Builder
	b.WriteString("Bearer")
	first := true
	for _, p := range params {
		if p.Value == "" {
			continue
		}
		if first {
			b.WriteByte(' ')
			first = false
		} else {
			b.WriteString(", ")
		}
		b.WriteString(p.Name)
		b.WriteString(`="`)
		b.WriteString(Sanitize(p.Value))
		b.WriteByte('"')
	}
	return b.String()
}

// maxDescription bounds error_description so a long upstream message cannot
// bloat every response header.
const maxDescription = 300

// Sanitize returns s restricted to the characters RFC 6750 §3 allows in
// error_description and scope values (%x20-21 / %x23-5B / %x5D-7E): a double
// quote becomes a single quote, a backslash a slash, any other byte outside the
// set a question mark. The result is at most 300 bytes.
func Sanitize(s string) string {
	if len(s) > maxDescription {
		s = s[:maxDescription]
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

// Response is an error answer of the gateway: a status, an optional Bearer
// challenge and a JSON body {"error", "error_description"}.
type Response struct {
	// Status is the HTTP status code.
	Status int
	// Error is the OAuth error code; empty for a request without a token, whose
	// challenge then carries no error parameter.
	Error string
	// Description is a human-readable explanation, safe to show the client.
	Description string
	// Challenge, when true, adds a WWW-Authenticate Bearer challenge.
	Challenge bool
	// ResourceMetadata is the absolute protected resource metadata URL.
	ResourceMetadata string
	// Scopes are the scopes the operation needs, advertised in scope.
	Scopes []string
	// RetryAfter, when positive, sets Retry-After in whole seconds (at least 1).
	RetryAfter time.Duration
}

// Header returns the WWW-Authenticate value of r, or "" when r has none. The
// parameter order follows the MCP authorization spec's examples: error first
// for 403 insufficient_scope, resource_metadata first otherwise.
func (r Response) Header() string {
	if !r.Challenge {
		return ""
	}
	scope := strings.Join(r.Scopes, " ")
	if r.Error == ErrInsufficientScope {
		return Bearer(
			Param{"error", r.Error},
			Param{"scope", scope},
			Param{"resource_metadata", r.ResourceMetadata},
			Param{"error_description", r.Description},
		)
	}
	params := []Param{
		{"resource_metadata", r.ResourceMetadata},
		{"scope", scope},
	}
	if r.Error != "" {
		params = append(params, Param{"error", r.Error}, Param{"error_description", r.Description})
	}
	return Bearer(params...)
}

// Body is the JSON error body the gateway sends with every error status.
type Body struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description,omitempty"`
}

// Write sends r. Responses are never cached: a challenge depends on the token.
func (r Response) Write(w http.ResponseWriter) {
	h := w.Header()
	if v := r.Header(); v != "" {
		h.Set("WWW-Authenticate", v)
	}
	if r.RetryAfter > 0 {
		secs := int((r.RetryAfter + time.Second - 1) / time.Second)
		h.Set("Retry-After", strconv.Itoa(max(secs, 1)))
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(r.Status)
	code := r.Error
	if code == "" {
		code = defaultCode(r.Status)
	}
	// Encoding a struct of two strings cannot fail.
	data, _ := json.Marshal(Body{Error: code, ErrorDescription: r.Description})
	_, _ = w.Write(append(data, '\n'))
}

func defaultCode(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusServiceUnavailable:
		return "temporarily_unavailable"
	case http.StatusRequestEntityTooLarge:
		return "request_too_large"
	case http.StatusRequestTimeout:
		return "request_timeout"
	case http.StatusUnsupportedMediaType:
		return "unsupported_media_type"
	case http.StatusMethodNotAllowed:
		return "method_not_allowed"
	case http.StatusBadGateway:
		return "bad_gateway"
	case http.StatusNotFound:
		return "not_found"
	}
	if status >= 500 {
		return "server_error"
	}
	return ErrInvalidRequest
}
