package oauth

import (
	"strings"

	"github.com/mcpauthz/mcpauthz/internal/propelauthfake"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/store"
)

// Introspect implements propelauthfake.Tokens over the store: devauth's
// introspection endpoint is the shared PropelAuth backend's, answering from
// here. Only access tokens are active. A refresh token answered as active would
// be accepted as a bearer token by resource servers that do not check
// token_type (RFC 7662 lets the server choose).
func (s *Server) Introspect(tok string) (any, bool) {
	at, err := s.opts.Store.LookupAccessToken(tok)
	if err != nil {
		s.log.Debug("introspection: inactive token", "token", store.Fingerprint(tok))
		return nil, false
	}
	in := propelauthfake.Introspection{
		Active:    true,
		Subject:   at.Subject,
		ClientID:  at.ClientID,
		Scope:     strings.Join(at.Scopes, " "),
		ExpiresAt: at.ExpiresAt.Unix(),
		IssuedAt:  at.IssuedAt.Unix(),
		Issuer:    s.issuer,
		TokenType: "Bearer",
	}
	if at.Resource != "" {
		in.Audience = propelauthfake.Audience{at.Resource}
	}
	return in, true
}

// validValidationClient reports whether c are the request-validation client's
// credentials, which may introspect and revoke any token.
func (s *Server) validValidationClient(c propelauthfake.Credentials) bool {
	return c.Are(s.opts.ValidationClientID, s.opts.ValidationClientSecret)
}
