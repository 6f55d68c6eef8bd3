// Package httperror writes the gateway's error answers: a status, a JSON body
// {"error", "error_description"}, and the headers that go with them (a Bearer
// challenge built by package challenge, Retry-After, no caching). Every error
// status the gateway sends is written by [Response.Write].
package httperror

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/challenge"
)

// Response is one error answer.
type Response struct {
	// Status is the HTTP status code.
	Status int
	// Error is the body's error code; when empty, one that names Status
	// ("unauthorized", "not_found", ...).
	Error string
	// Description is a human-readable explanation, safe to show the client.
	Description string
	// Challenge, when set, is sent in WWW-Authenticate.
	Challenge *challenge.Bearer
	// RetryAfter, when positive, sets Retry-After in whole seconds (at least 1).
	RetryAfter time.Duration
}

// Body is the JSON body of every error answer.
type Body struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description,omitempty"`
}

// Write sends r. Answers are never cached: a challenge depends on the token.
func (r Response) Write(w http.ResponseWriter) {
	h := w.Header()
	if r.Challenge != nil {
		h.Set("WWW-Authenticate", r.Challenge.String())
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
	return challenge.ErrInvalidRequest
}
