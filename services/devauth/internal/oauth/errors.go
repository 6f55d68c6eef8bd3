package oauth

import (
	"net/http"

	"github.com/mcpauthz/mcpauthz/internal/propelauthfake"
)

// OAuth error codes (RFC 6749 section 5.2, RFC 7591 section 3.2.2).
const (
	errInvalidRequest          = "invalid_request"
	errInvalidGrant            = "invalid_grant"
	errUnauthorizedClient      = "unauthorized_client"
	errUnsupportedGrantType    = "unsupported_grant_type"
	errInvalidScope            = "invalid_scope"
	errInvalidTarget           = "invalid_target" // RFC 8707 section 2
	errAccessDenied            = "access_denied"
	errUnsupportedResponseType = "unsupported_response_type"
	errServerError             = "server_error"
	errTemporarilyUnavailable  = "temporarily_unavailable"
	errInvalidRedirectURI      = "invalid_redirect_uri"
	errInvalidClientMetadata   = "invalid_client_metadata"
)

// realm names devauth in Basic challenges.
const realm = "devauth"

// writeOAuthError writes the JSON error body of the token-style endpoints,
// {"error": code, "error_description": desc}.
func writeOAuthError(w http.ResponseWriter, status int, code, desc string) {
	propelauthfake.WriteError(w, status, code, desc)
}

// writeInvalidClient answers 401 with a challenge for the scheme the client
// tried, as RFC 6749 section 5.2 requires.
func writeInvalidClient(w http.ResponseWriter, desc string) {
	propelauthfake.WriteInvalidClient(w, realm, desc)
}
