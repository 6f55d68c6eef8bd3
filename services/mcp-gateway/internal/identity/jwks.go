package identity

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// JWKSMaxAge is how long verifiers and proxies may cache the JWKS. A new key
// reaches a verifier within it, or at once if the verifier refetches the JWKS
// when it meets an unknown kid, as it should.
const JWKSMaxAge = 5 * time.Minute

var jwksCacheControl = "public, max-age=" + strconv.Itoa(int(JWKSMaxAge/time.Second))

// jwksDocument encodes the public halves of ks as an RFC 7517 JWK Set.
func jwksDocument(ks []*key) ([]byte, error) {
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(ks))}
	for _, k := range ks {
		set.Keys = append(set.Keys, jose.JSONWebKey{
			Key:       k.public, // never k.signer: go-jose would write the private members
			KeyID:     k.kid,
			Algorithm: string(k.alg),
			Use:       "sig",
		})
	}
	b, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("encoding the JWKS: %w", err)
	}
	return b, nil
}

// JWKSHandler serves the JWK Set of the signing key and the previous keys
// (public parts only) to GET and HEAD, with Cache-Control max-age
// [JWKSMaxAge]; other methods get 405.
func (s *Signer) JWKSHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		// application/json, as JWKS endpoints are commonly served; RFC 7517
		// §8.5 also registers application/jwk-set+json.
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", jwksCacheControl)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Length", strconv.Itoa(len(s.jwks)))
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(s.jwks)
	})
}
