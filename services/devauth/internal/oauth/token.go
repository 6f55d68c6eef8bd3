package oauth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/mcpauthz/mcpauthz/internal/propelauthfake"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/store"
)

// TokenResponse is the RFC 6749 section 5.1 success body.
type TokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope"`
}

// grantError carries an OAuth error out of a store callback.
type grantError struct{ code, desc string }

func (e *grantError) Error() string { return e.code + ": " + e.desc }

// authenticateClient identifies and authenticates the client of a token or
// revocation request. Public clients send only client_id; confidential ones
// may use HTTP Basic or the form, whichever they registered (both are
// accepted, as many clients mix them up), as long as the method is one of
// [Options.TokenAuthMethods]. The error text is safe to return.
func (s *Server) authenticateClient(ctx context.Context, r *http.Request) (store.Client, error) {
	creds, ok := propelauthfake.ClientCredentials(r)
	if !ok {
		return store.Client{}, errors.New("client authentication is missing or ambiguous")
	}
	method := "none"
	switch {
	case creds.Basic:
		method = "client_secret_basic"
	case creds.Secret != "":
		method = "client_secret_post"
	}
	if !slices.Contains(s.opts.TokenAuthMethods, method) {
		return store.Client{}, fmt.Errorf("%s is not accepted here (token_endpoint_auth_methods_supported: %s)", method, strings.Join(s.opts.TokenAuthMethods, ", "))
	}
	c, err := s.client(ctx, creds.ClientID())
	if err != nil {
		return store.Client{}, errors.New("unknown client")
	}
	if c.TokenEndpointAuthMethod == "none" || c.TokenEndpointAuthMethod == "" {
		if creds.Secret != "" {
			return store.Client{}, errors.New("public client sent a client secret")
		}
		return c, nil
	}
	if creds.Secret == "" || !(c.CheckSecret(creds.Secret) || (creds.Basic && c.CheckSecret(formDecoded(creds.Secret)))) {
		return store.Client{}, errors.New("client authentication failed")
	}
	return c, nil
}

// formDecoded undoes RFC 6749 section 2.3.1's form-encoding, or returns s.
func formDecoded(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Pragma", "no-cache")
	if msg, ok := propelauthfake.ParseForm(w, r); !ok {
		writeOAuthError(w, http.StatusBadRequest, errInvalidRequest, msg)
		return
	}
	for p, vs := range r.PostForm {
		if len(vs) > 1 {
			writeOAuthError(w, http.StatusBadRequest, errInvalidRequest, p+" is repeated")
			return
		}
	}
	client, err := s.authenticateClient(r.Context(), r)
	if err != nil {
		writeInvalidClient(w, err.Error())
		return
	}
	grant := r.PostForm.Get("grant_type")
	switch grant {
	case "":
		writeOAuthError(w, http.StatusBadRequest, errInvalidRequest, "grant_type is required")
		return
	case "authorization_code", "refresh_token":
	default:
		writeOAuthError(w, http.StatusBadRequest, errUnsupportedGrantType, "grant_type must be authorization_code or refresh_token")
		return
	}
	if !allowsGrant(client, grant) {
		writeOAuthError(w, http.StatusBadRequest, errUnauthorizedClient, "the client is not registered for "+grant)
		return
	}
	var pair store.TokenPair
	if grant == "authorization_code" {
		pair, err = s.exchangeCode(r, client)
	} else {
		pair, err = s.refresh(r, client)
	}
	if err != nil {
		var ge *grantError
		switch {
		case errors.As(err, &ge):
			writeOAuthError(w, http.StatusBadRequest, ge.code, ge.desc)
		case errors.Is(err, store.ErrReused):
			s.log.Warn("credential replay detected; token family revoked", "client_id", client.ID, "grant_type", grant)
			writeOAuthError(w, http.StatusBadRequest, errInvalidGrant, "the "+strings.ReplaceAll(grant, "_", " ")+" was already used; its tokens are revoked")
		case errors.Is(err, store.ErrNotFound):
			writeOAuthError(w, http.StatusBadRequest, errInvalidGrant, "the "+strings.ReplaceAll(grant, "_", " ")+" is invalid, expired or revoked")
		case errors.Is(err, store.ErrFull):
			writeOAuthError(w, http.StatusServiceUnavailable, errTemporarilyUnavailable, "token store is full")
		default:
			writeOAuthError(w, http.StatusInternalServerError, errServerError, "internal error")
		}
		return
	}
	s.opts.Counters.TokensIssued.Add(1)
	s.log.Info("tokens issued", "grant_type", grant, "client_id", client.ID, "sub", pair.Access.Subject,
		"token", store.Fingerprint(pair.AccessToken))
	propelauthfake.WriteJSON(w, http.StatusOK, TokenResponse{
		AccessToken:  pair.AccessToken,
		TokenType:    "Bearer",
		ExpiresIn:    int64(s.opts.TokenTTL.Seconds()),
		RefreshToken: pair.RefreshToken,
		Scope:        strings.Join(pair.Access.Scopes, " "),
	})
}

func (s *Server) exchangeCode(r *http.Request, client store.Client) (store.TokenPair, error) {
	f := r.PostForm
	code, redirectURI, verifier := f.Get("code"), f.Get("redirect_uri"), f.Get("code_verifier")
	switch {
	case code == "":
		return store.TokenPair{}, &grantError{errInvalidRequest, "code is required"}
	case redirectURI == "":
		return store.TokenPair{}, &grantError{errInvalidRequest, "redirect_uri is required"}
	case verifier == "":
		return store.TokenPair{}, &grantError{errInvalidRequest, "code_verifier is required (PKCE)"}
	}
	resource := f.Get("resource")
	return s.opts.Store.ExchangeCode(code, func(c store.Code) error {
		if c.ClientID != client.ID {
			return &grantError{errInvalidGrant, "the code was issued to another client"}
		}
		if c.RedirectURI != redirectURI {
			return &grantError{errInvalidGrant, "redirect_uri does not match the authorization request"}
		}
		if !VerifyS256(verifier, c.CodeChallenge) {
			return &grantError{errInvalidGrant, "code_verifier does not match the code_challenge"}
		}
		if resource != "" && resource != c.Resource {
			return &grantError{errInvalidTarget, "resource does not match the authorization request"}
		}
		return nil
	}, s.opts.TokenTTL, RefreshTTL)
}

func (s *Server) refresh(r *http.Request, client store.Client) (store.TokenPair, error) {
	f := r.PostForm
	tok := f.Get("refresh_token")
	if tok == "" {
		return store.TokenPair{}, &grantError{errInvalidRequest, "refresh_token is required"}
	}
	requested := strings.Fields(f.Get("scope"))
	resource := f.Get("resource")
	return s.opts.Store.Refresh(tok, func(g store.Grant) ([]string, error) {
		if g.ClientID != client.ID {
			return nil, &grantError{errInvalidGrant, "the refresh token was issued to another client"}
		}
		if resource != "" && resource != g.Resource {
			return nil, &grantError{errInvalidTarget, "resource does not match the original grant"}
		}
		if len(requested) == 0 {
			return nil, nil
		}
		for _, sc := range requested {
			if !slices.Contains(g.Scopes, sc) {
				return nil, &grantError{errInvalidScope, "scope " + sc + " exceeds the original grant"}
			}
		}
		return requested, nil
	}, s.opts.TokenTTL, RefreshTTL)
}

// VerifyS256 reports whether verifier is a valid RFC 7636 code verifier
// (43-128 unreserved characters) whose S256 transform equals challenge.
func VerifyS256(verifier, challenge string) bool {
	if len(verifier) < 43 || len(verifier) > 128 {
		return false
	}
	for i := 0; i < len(verifier); i++ {
		b := verifier[i]
		if !(b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-' || b == '.' || b == '_' || b == '~') {
			return false
		}
	}
	sum := sha256.Sum256([]byte(verifier))
	want := base64.RawURLEncoding.EncodeToString(sum[:])
	return subtle.ConstantTimeCompare([]byte(want), []byte(challenge)) == 1
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	if msg, ok := propelauthfake.ParseForm(w, r); !ok {
		writeOAuthError(w, http.StatusBadRequest, errInvalidRequest, msg)
		return
	}
	tok := r.PostForm.Get("token")
	if tok == "" {
		writeOAuthError(w, http.StatusBadRequest, errInvalidRequest, "token is required")
		return
	}
	// The owner check: a client may revoke only its own tokens. The
	// request-validation client (authz) may revoke any. A request without any
	// client identification is accepted too: holding a token is enough to
	// use it, so it is enough to end it.
	owner := ""
	creds, identified := propelauthfake.ClientCredentials(r)
	switch {
	case identified && s.validValidationClient(creds):
	case identified:
		c, err := s.authenticateClient(r.Context(), r)
		if err != nil {
			writeInvalidClient(w, err.Error())
			return
		}
		owner = c.ID
	case r.Header.Get("Authorization") != "" || r.PostForm.Get("client_secret") != "":
		writeInvalidClient(w, "client authentication is malformed")
		return
	}
	if s.opts.Store.Revoke(tok, owner) {
		s.log.Info("token revoked", "token", store.Fingerprint(tok), "by", owner)
	}
	// RFC 7009 section 2.2: 200 whether or not the token was known.
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}
