package oauth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/mcpauthz/mcpauthz/internal/propelauthfake"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/store"
)

// ClientMetadata is the RFC 7591 client metadata devauth understands. Other
// fields are ignored, as RFC 7591 section 2 requires.
type ClientMetadata struct {
	RedirectURIs            []string `json:"redirect_uris"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method,omitempty"`
	GrantTypes              []string `json:"grant_types,omitempty"`
	ResponseTypes           []string `json:"response_types,omitempty"`
	ClientName              string   `json:"client_name,omitempty"`
	ClientURI               string   `json:"client_uri,omitempty"`
	LogoURI                 string   `json:"logo_uri,omitempty"`
	Scope                   string   `json:"scope,omitempty"`
	SoftwareID              string   `json:"software_id,omitempty"`
	SoftwareVersion         string   `json:"software_version,omitempty"`
}

// RegistrationResponse is the RFC 7591 section 3.2.1 answer.
type RegistrationResponse struct {
	ClientID              string `json:"client_id"`
	ClientSecret          string `json:"client_secret,omitempty"`
	ClientIDIssuedAt      int64  `json:"client_id_issued_at"`
	ClientSecretExpiresAt *int64 `json:"client_secret_expires_at,omitempty"`
	ClientMetadata
}

// MetadataError is a client-metadata validation failure; Code is the RFC 7591
// error code (invalid_redirect_uri or invalid_client_metadata).
type MetadataError struct {
	Code        string
	Description string
}

func (e *MetadataError) Error() string { return e.Code + ": " + e.Description }

func metaErr(code, format string, args ...any) error {
	return &MetadataError{Code: code, Description: fmt.Sprintf(format, args...)}
}

// MaxRegistrationBody bounds DCR requests; real ones are well under 2 KB.
// It also bounds what one registration holds in memory: with the client cap
// ([store.DefaultLimits]) a full client table stays under about 100 MB.
const MaxRegistrationBody = 8 << 10

// ParseClientMetadata decodes and normalizes an RFC 7591 registration
// request. supported lists the scopes devauth offers: requested scopes
// outside it are dropped (RFC 7591 section 3.2.1 lets the server replace
// requested values), and an empty result means every supported scope. It
// returns a *MetadataError for anything it refuses.
func ParseClientMetadata(body []byte, supported []string) (ClientMetadata, error) {
	var m ClientMetadata
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&m); err != nil {
		return ClientMetadata{}, metaErr(errInvalidClientMetadata, "body is not a JSON object of client metadata: %v", err)
	}
	if dec.More() {
		return ClientMetadata{}, metaErr(errInvalidClientMetadata, "trailing data after the JSON object")
	}
	if err := normalizeMetadata(&m, supported); err != nil {
		return ClientMetadata{}, err
	}
	return m, nil
}

func normalizeMetadata(m *ClientMetadata, supported []string) error {
	if len(m.RedirectURIs) == 0 {
		return metaErr(errInvalidRedirectURI, "redirect_uris is required")
	}
	if len(m.RedirectURIs) > 20 {
		return metaErr(errInvalidRedirectURI, "at most 20 redirect_uris")
	}
	for _, r := range m.RedirectURIs {
		if err := ValidateRedirectURI(r); err != nil {
			return metaErr(errInvalidRedirectURI, "%s", err)
		}
	}
	switch m.TokenEndpointAuthMethod {
	case "":
		m.TokenEndpointAuthMethod = "none"
	case "none", "client_secret_basic", "client_secret_post":
	default:
		return metaErr(errInvalidClientMetadata, "token_endpoint_auth_method %q is not supported (none, client_secret_basic, client_secret_post)", m.TokenEndpointAuthMethod)
	}
	if len(m.ResponseTypes) == 0 {
		m.ResponseTypes = []string{"code"}
	}
	for _, rt := range m.ResponseTypes {
		if rt != "code" {
			return metaErr(errInvalidClientMetadata, "response_type %q is not supported (code)", rt)
		}
	}
	if len(m.GrantTypes) == 0 {
		m.GrantTypes = []string{"authorization_code", "refresh_token"}
	}
	for _, g := range m.GrantTypes {
		if g != "authorization_code" && g != "refresh_token" {
			return metaErr(errInvalidClientMetadata, "grant_type %q is not supported (authorization_code, refresh_token)", g)
		}
	}
	if !slices.Contains(m.GrantTypes, "authorization_code") {
		return metaErr(errInvalidClientMetadata, "grant_types must include authorization_code for response_type code")
	}
	m.GrantTypes = dedupe(m.GrantTypes)
	m.ResponseTypes = dedupe(m.ResponseTypes)
	if len(m.ClientName) > 200 {
		return metaErr(errInvalidClientMetadata, "client_name longer than 200 characters")
	}
	for _, u := range []struct{ name, v string }{{"client_uri", m.ClientURI}, {"logo_uri", m.LogoURI}} {
		if u.v == "" {
			continue
		}
		p, err := url.Parse(u.v)
		if err != nil || len(u.v) > maxURILength || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
			return metaErr(errInvalidClientMetadata, "%s must be an http(s) URL", u.name)
		}
	}
	var granted []string
	for _, sc := range strings.Fields(m.Scope) {
		if slices.Contains(supported, sc) && !slices.Contains(granted, sc) {
			granted = append(granted, sc)
		}
	}
	if len(granted) == 0 {
		granted = supported
	}
	m.Scope = strings.Join(granted, " ")
	return nil
}

func dedupe(in []string) []string {
	var out []string
	for _, s := range in {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	if !s.opts.DCR {
		// RFC 7591 defines no error for a server that registers no one;
		// 403 with a description that names the setting is the clearest.
		writeOAuthError(w, http.StatusForbidden, errAccessDenied,
			"dynamic client registration is turned off (mcp.dcr in DEVAUTH_CONFIG_FILE); use a pre-registered client")
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		writeOAuthError(w, http.StatusBadRequest, errInvalidClientMetadata, "Content-Type must be application/json")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRegistrationBody))
	if err != nil {
		desc := "the body could not be read"
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			desc = fmt.Sprintf("the body is larger than %d bytes", MaxRegistrationBody)
		}
		writeOAuthError(w, http.StatusBadRequest, errInvalidClientMetadata, desc)
		return
	}
	m, err := ParseClientMetadata(body, s.opts.Scopes)
	if err != nil {
		var me *MetadataError
		if errors.As(err, &me) {
			writeOAuthError(w, http.StatusBadRequest, me.Code, me.Description)
			return
		}
		writeOAuthError(w, http.StatusBadRequest, errInvalidClientMetadata, "invalid client metadata")
		return
	}
	// The allow list comes after the metadata's own checks, so a request
	// that is wrong in itself hears about that first.
	for _, u := range m.RedirectURIs {
		if !s.opts.AllowedRedirects.Allows(u) {
			writeOAuthError(w, http.StatusBadRequest, errInvalidRedirectURI,
				fmt.Sprintf("redirect URI %q is not among the allowed redirect URIs (Allowed MCP Clients: mcp.allowed_redirect_uris in DEVAUTH_CONFIG_FILE)", u))
			return
		}
	}
	if !slices.Contains(s.opts.TokenAuthMethods, m.TokenEndpointAuthMethod) {
		writeOAuthError(w, http.StatusBadRequest, errInvalidClientMetadata,
			fmt.Sprintf("token_endpoint_auth_method %q is not accepted here (%s)", m.TokenEndpointAuthMethod, strings.Join(s.opts.TokenAuthMethods, ", ")))
		return
	}
	now := s.opts.Store.Now()
	c := store.Client{
		ID:                      "dcr_" + store.NewSecret()[:32],
		Name:                    m.ClientName,
		RedirectURIs:            m.RedirectURIs,
		TokenEndpointAuthMethod: m.TokenEndpointAuthMethod,
		GrantTypes:              m.GrantTypes,
		ResponseTypes:           m.ResponseTypes,
		Scope:                   m.Scope,
		ClientURI:               m.ClientURI,
		LogoURI:                 m.LogoURI,
		IssuedAt:                now,
	}
	resp := RegistrationResponse{ClientID: c.ID, ClientIDIssuedAt: now.Unix(), ClientMetadata: m}
	if m.TokenEndpointAuthMethod != "none" {
		secret := store.NewSecret()
		c.SecretHash = store.HashSecret(secret)
		never := int64(0)
		resp.ClientSecret = secret
		resp.ClientSecretExpiresAt = &never
	}
	if err := s.opts.Store.AddClient(c); err != nil {
		// RFC 7591 section 3.2.2's error format; the code is RFC 6749's, as
		// RFC 7591 allows. Nothing is evicted to make room: that would let
		// anyone log every other client out.
		s.log.Warn("client registration refused: client table full")
		writeOAuthError(w, http.StatusServiceUnavailable, errTemporarilyUnavailable,
			fmt.Sprintf("too many registered clients; a registration unused for %v is removed", s.opts.Store.ClientTTL()))
		return
	}
	s.log.Info("client registered", "client_id", c.ID, "client_name", c.Name,
		"auth_method", c.TokenEndpointAuthMethod, "redirect_uris", c.RedirectURIs)
	propelauthfake.WriteJSON(w, http.StatusCreated, resp)
}
