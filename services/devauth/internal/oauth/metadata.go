package oauth

import (
	"net/http"
	"slices"

	"github.com/mcpauthz/mcpauthz/internal/propelauthfake"
)

// Metadata is the RFC 8414 authorization server metadata document.
type Metadata struct {
	Issuer                                     string   `json:"issuer"`
	AuthorizationEndpoint                      string   `json:"authorization_endpoint"`
	TokenEndpoint                              string   `json:"token_endpoint"`
	RegistrationEndpoint                       string   `json:"registration_endpoint,omitempty"`
	IntrospectionEndpoint                      string   `json:"introspection_endpoint"`
	RevocationEndpoint                         string   `json:"revocation_endpoint"`
	ResponseTypesSupported                     []string `json:"response_types_supported"`
	ResponseModesSupported                     []string `json:"response_modes_supported"`
	GrantTypesSupported                        []string `json:"grant_types_supported"`
	CodeChallengeMethodsSupported              []string `json:"code_challenge_methods_supported"`
	TokenEndpointAuthMethodsSupported          []string `json:"token_endpoint_auth_methods_supported"`
	IntrospectionEndpointAuthMethodsSupported  []string `json:"introspection_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethodsSupported     []string `json:"revocation_endpoint_auth_methods_supported"`
	ScopesSupported                            []string `json:"scopes_supported"`
	ClientIDMetadataDocumentSupported          bool     `json:"client_id_metadata_document_supported"`
	AuthorizationResponseIssParameterSupported bool     `json:"authorization_response_iss_parameter_supported"`

	// OpenID Connect Discovery 1.0 requires these three; devauth issues no ID
	// tokens, so only the openid-configuration document carries them.
	SubjectTypesSupported            []string `json:"subject_types_supported,omitempty"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported,omitempty"`
	JWKSURI                          string   `json:"jwks_uri,omitempty"`
}

// AuthMethods are the token endpoint client authentication methods devauth
// implements; [Options.TokenAuthMethods] may narrow them.
var AuthMethods = []string{"none", "client_secret_basic", "client_secret_post"}

// Metadata returns the RFC 8414 document.
func (s *Server) Metadata() Metadata {
	base := s.opts.BaseURL
	registration := base + PathRegister
	if !s.opts.DCR {
		registration = ""
	}
	return Metadata{
		Issuer:                                     s.issuer,
		AuthorizationEndpoint:                      base + PathAuthorize,
		TokenEndpoint:                              base + PathToken,
		RegistrationEndpoint:                       registration,
		IntrospectionEndpoint:                      base + PathIntrospect,
		RevocationEndpoint:                         base + PathRevoke,
		ResponseTypesSupported:                     []string{"code"},
		ResponseModesSupported:                     []string{"query"},
		GrantTypesSupported:                        []string{"authorization_code", "refresh_token"},
		CodeChallengeMethodsSupported:              []string{"S256"},
		TokenEndpointAuthMethodsSupported:          slices.Clone(s.opts.TokenAuthMethods),
		IntrospectionEndpointAuthMethodsSupported:  []string{"client_secret_basic", "client_secret_post"},
		RevocationEndpointAuthMethodsSupported:     slices.Clone(s.opts.TokenAuthMethods),
		ScopesSupported:                            append([]string(nil), s.opts.Scopes...),
		ClientIDMetadataDocumentSupported:          true,
		AuthorizationResponseIssParameterSupported: true,
	}
}

func (s *Server) metadata(w http.ResponseWriter, r *http.Request) {
	propelauthfake.WriteJSON(w, http.StatusOK, s.Metadata())
}

func (s *Server) openIDMetadata(w http.ResponseWriter, r *http.Request) {
	m := s.Metadata()
	m.SubjectTypesSupported = []string{"public"}
	// "none" is the only honest answer: no ID token is ever signed. The JWKS
	// is an empty key set for the same reason.
	m.IDTokenSigningAlgValuesSupported = []string{"none"}
	m.JWKSURI = s.opts.BaseURL + PathJWKS
	propelauthfake.WriteJSON(w, http.StatusOK, m)
}

func (s *Server) jwks(w http.ResponseWriter, r *http.Request) {
	propelauthfake.WriteJSON(w, http.StatusOK, map[string][]any{"keys": {}})
}
