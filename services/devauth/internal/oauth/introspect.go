package oauth

import (
	"crypto/subtle"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/mcpauthz/mcpauthz/services/devauth/internal/store"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/users"
)

// IntrospectionResponse is the RFC 7662 answer, shaped like PropelAuth's:
// an inactive token yields only {"active": false}.
type IntrospectionResponse struct {
	Active    bool   `json:"active"`
	Subject   string `json:"sub,omitempty"`
	ClientID  string `json:"client_id,omitempty"`
	Scope     string `json:"scope,omitempty"`
	ExpiresAt int64  `json:"exp,omitempty"`
	IssuedAt  int64  `json:"iat,omitempty"`
	Audience  string `json:"aud,omitempty"`
	Issuer    string `json:"iss,omitempty"`
	TokenType string `json:"token_type,omitempty"`
}

// maxFormBody bounds form bodies on the token-style endpoints.
const maxFormBody = 64 << 10

// parseForm reads an application/x-www-form-urlencoded body, the only
// encoding RFC 6749, 7009 and 7662 define for these endpoints. It returns an
// error description for any other content type or a malformed body.
func parseForm(w http.ResponseWriter, r *http.Request) (string, bool) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-www-form-urlencoded" {
		return "the body must be application/x-www-form-urlencoded", false
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
	if err := r.ParseForm(); err != nil {
		return "malformed form body", false
	}
	return "", true
}

func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	if msg, ok := parseForm(w, r); !ok {
		writeOAuthError(w, http.StatusBadRequest, errInvalidRequest, msg)
		return
	}
	creds, ok := clientCredentials(r)
	if !ok || !s.validValidationClient(creds) {
		writeInvalidClient(w, "introspection needs the request-validation client credentials")
		return
	}
	tok := r.PostForm.Get("token")
	if tok == "" {
		writeOAuthError(w, http.StatusBadRequest, errInvalidRequest, "token is required")
		return
	}
	// Only access tokens are introspected as active. A refresh token answered
	// as active would be accepted as a bearer token by resource servers that
	// do not check token_type (RFC 7662 lets the server choose).
	at, err := s.opts.Store.LookupAccessToken(tok)
	if err != nil {
		s.log.Debug("introspection: inactive token", "token", store.Fingerprint(tok))
		users.WriteJSON(w, http.StatusOK, IntrospectionResponse{Active: false})
		return
	}
	users.WriteJSON(w, http.StatusOK, IntrospectionResponse{
		Active:    true,
		Subject:   at.Subject,
		ClientID:  at.ClientID,
		Scope:     strings.Join(at.Scopes, " "),
		ExpiresAt: at.ExpiresAt.Unix(),
		IssuedAt:  at.IssuedAt.Unix(),
		Audience:  at.Resource,
		Issuer:    s.issuer,
		TokenType: "Bearer",
	})
}

func (s *Server) validValidationClient(c credentials) bool {
	return s.opts.ValidationClientID != "" && c.idIs(s.opts.ValidationClientID) && c.secretIs(s.opts.ValidationClientSecret)
}

// credentials are client credentials as sent. Values from HTTP Basic are
// kept raw: RFC 6749 section 2.3.1 says to form-encode them first, but many
// clients do not, so both readings are accepted.
type credentials struct {
	id, secret string
	basic      bool
}

func (c credentials) idIs(want string) bool { return c.matches(c.id, want) }

func (c credentials) secretIs(want string) bool { return want != "" && c.matches(c.secret, want) }

func (c credentials) matches(got, want string) bool {
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1 {
		return true
	}
	if !c.basic {
		return false
	}
	u, err := url.QueryUnescape(got)
	return err == nil && subtle.ConstantTimeCompare([]byte(u), []byte(want)) == 1
}

// clientID returns the client id, form-decoded when it came from HTTP Basic.
func (c credentials) clientID() string {
	if c.basic {
		if u, err := url.QueryUnescape(c.id); err == nil {
			return u
		}
	}
	return c.id
}

// clientCredentials returns the client credentials from HTTP Basic
// (client_secret_basic) or from the form (client_secret_post, or a bare
// client_id for public clients). ok is false when both methods are used at
// once, which RFC 6749 section 2.3 forbids, or when no client_id is present.
// The form must already be parsed.
func clientCredentials(r *http.Request) (credentials, bool) {
	bid, bsecret, basic := r.BasicAuth()
	fid, fsecret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if basic {
		c := credentials{id: bid, secret: bsecret, basic: true}
		if fsecret != "" || (fid != "" && fid != c.clientID()) {
			return credentials{}, false
		}
		return c, bid != ""
	}
	return credentials{id: fid, secret: fsecret}, fid != ""
}
