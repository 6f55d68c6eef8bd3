package scenario

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"time"
)

// assertionKey is the gateway's identity signing key in the federated
// scenarios: the tool writes it for the gateway (identity.signing_key_file)
// and signs with it the assertion its direct calls to identity-upstream carry,
// so the direct path pays the upstream's verification too and the comparison
// isolates what the gateway adds.
type assertionKey struct {
	priv *ecdsa.PrivateKey
	kid  string // RFC 7638 thumbprint, as the gateway computes it
}

func newAssertionKey() (*assertionKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the identity key: %w", err)
	}
	pub, err := priv.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		return nil, fmt.Errorf("encoding the identity key: %w", err)
	}
	b64 := base64.RawURLEncoding
	jwk := `{"crv":"P-256","kty":"EC","x":"` + b64.EncodeToString(pub[1:33]) + `","y":"` + b64.EncodeToString(pub[33:]) + `"}`
	sum := sha256.Sum256([]byte(jwk))
	return &assertionKey{priv: priv, kid: b64.EncodeToString(sum[:])}, nil
}

// writePEM writes the private key as PKCS #8 PEM to path.
func (k *assertionKey) writePEM(path string) error {
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return fmt.Errorf("encoding the identity key: %w", err)
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// sign returns an ES256 identity assertion with the gateway's claims (see
// docs/federation.md) for subject toward audience, valid for ttl from now.
func (k *assertionKey) sign(issuer, audience, subject string, ttl time.Duration) (string, error) {
	now := time.Now()
	claims, err := json.Marshal(map[string]any{
		"iss": issuer, "aud": audience, "sub": subject, "client_id": "mcpload-direct",
		"scope": "read:user_data", "iat": now.Unix(), "exp": now.Add(ttl).Unix(), "jti": rand.Text(),
	})
	if err != nil {
		return "", err
	}
	b64 := base64.RawURLEncoding
	input := b64.EncodeToString([]byte(`{"alg":"ES256","kid":"`+k.kid+`","typ":"JWT"}`)) + "." + b64.EncodeToString(claims)
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, k.priv, digest[:])
	if err != nil {
		return "", fmt.Errorf("signing an assertion: %w", err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + b64.EncodeToString(sig), nil
}
