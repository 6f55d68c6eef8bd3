package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/go-jose/go-jose/v4"
)

// MinRSABits is the smallest RSA modulus accepted for signing (RFC 7518 §3.3
// requires 2048 bits for RS256).
const MinRSABits = 2048

// maxKeyFileBytes bounds what is read from a key file: a 16384-bit RSA key in
// PEM is about 13 KiB, so anything larger is not a key file.
const maxKeyFileBytes = 64 << 10

// key is a loaded signing or verification key.
type key struct {
	// signer is the private key, nil for a key that only verifies.
	signer crypto.Signer
	public crypto.PublicKey
	alg    jose.SignatureAlgorithm
	// kid is the RFC 7638 thumbprint (SHA-256, base64url without padding).
	kid string
}

// loadSigningKey reads the PEM private key in path: EC P-256 (PKCS #8 or SEC 1)
// or RSA of at least [MinRSABits] (PKCS #8 or PKCS #1). Every error names the
// file and says what is wrong with it, never showing key material.
func loadSigningKey(path string) (*key, error) {
	k, err := loadKeyFile(path, false)
	if err != nil {
		return nil, fmt.Errorf("signing key file %s: %w", path, err)
	}
	return k, nil
}

// loadPreviousKey reads a previous signing key from path: a private key as for
// [loadSigningKey], or its public half ("PUBLIC KEY", PKIX), which is all that
// is published.
func loadPreviousKey(path string) (*key, error) {
	k, err := loadKeyFile(path, true)
	if err != nil {
		return nil, fmt.Errorf("previous key file %s: %w", path, err)
	}
	k.signer = nil
	return k, nil
}

func loadKeyFile(path string, publicOK bool) (*key, error) {
	f, err := os.Open(path)
	if err != nil {
		// The *PathError repeats the path; its Err says what went wrong.
		if pe := (*os.PathError)(nil); errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("cannot be read: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("cannot be read: %w", err)
	}
	if len(b) > maxKeyFileBytes {
		return nil, fmt.Errorf("is larger than %d KiB: not a PEM key file", maxKeyFileBytes>>10)
	}
	return parseKeyPEM(b, publicOK)
}

// parseKeyPEM finds the one key block in b. "EC PARAMETERS" blocks, which
// `openssl ecparam -genkey` writes before the key unless told -noout, are
// skipped, as is text around the blocks.
func parseKeyPEM(b []byte, publicOK bool) (*key, error) {
	var found *pem.Block
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		switch blk.Type {
		case "EC PARAMETERS":
			continue
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("holds an encrypted private key (ENCRYPTED PRIVATE KEY): store it unencrypted, readable only by the gateway")
		case "CERTIFICATE":
			return nil, errors.New("holds a CERTIFICATE, not a private key")
		case "PUBLIC KEY":
			if !publicOK {
				return nil, errors.New("holds a PUBLIC KEY, not a private key")
			}
		case "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY":
		default:
			return nil, fmt.Errorf("holds a PEM block of type %q; want PRIVATE KEY (PKCS #8), EC PRIVATE KEY (SEC 1) or RSA PRIVATE KEY (PKCS #1)", blk.Type)
		}
		if found != nil {
			return nil, errors.New("holds more than one key; put one key in each file")
		}
		found = blk
	}
	if found == nil {
		return nil, errors.New("holds no PEM key block (want -----BEGIN PRIVATE KEY-----, EC PRIVATE KEY or RSA PRIVATE KEY)")
	}
	// RFC 1421 encryption, as `openssl genrsa -aes256` writes with old OpenSSL.
	if strings.Contains(found.Headers["Proc-Type"], "ENCRYPTED") {
		return nil, fmt.Errorf("holds an encrypted %s: store it unencrypted, readable only by the gateway", found.Type)
	}

	var parsed any
	var err error
	switch found.Type {
	case "PRIVATE KEY":
		parsed, err = x509.ParsePKCS8PrivateKey(found.Bytes)
		if err != nil {
			return nil, fmt.Errorf("its PRIVATE KEY block is not a valid PKCS #8 key: %v", err)
		}
	case "EC PRIVATE KEY":
		parsed, err = x509.ParseECPrivateKey(found.Bytes)
		if err != nil {
			return nil, fmt.Errorf("its EC PRIVATE KEY block is not a valid SEC 1 key: %v", err)
		}
	case "RSA PRIVATE KEY":
		parsed, err = x509.ParsePKCS1PrivateKey(found.Bytes)
		if err != nil {
			return nil, fmt.Errorf("its RSA PRIVATE KEY block is not a valid PKCS #1 key: %v", err)
		}
	case "PUBLIC KEY":
		parsed, err = x509.ParsePKIXPublicKey(found.Bytes)
		if err != nil {
			return nil, fmt.Errorf("its PUBLIC KEY block is not a valid PKIX public key: %v", err)
		}
	}
	return newKey(parsed)
}

// newKey checks that k is a key this package signs with (EC P-256 or RSA of at
// least [MinRSABits]), private or public, and computes its kid.
func newKey(k any) (*key, error) {
	out := &key{}
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		out.signer, out.public = k, &k.PublicKey
	case *rsa.PrivateKey:
		out.signer, out.public = k, &k.PublicKey
	case *ecdsa.PublicKey, *rsa.PublicKey:
		out.public = k
	case ed25519.PrivateKey, ed25519.PublicKey:
		return nil, errors.New("holds an Ed25519 key; only EC P-256 (ES256) and RSA (RS256) keys are supported")
	default:
		return nil, fmt.Errorf("holds a key of type %T; only EC P-256 (ES256) and RSA (RS256) keys are supported", k)
	}
	switch pub := out.public.(type) {
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return nil, fmt.Errorf("holds an EC key on curve %s; only P-256 (ES256) is supported", pub.Curve.Params().Name)
		}
		out.alg = jose.ES256
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); bits < MinRSABits {
			return nil, fmt.Errorf("holds an RSA key of %d bits; at least %d are needed", bits, MinRSABits)
		}
		out.alg = jose.RS256
	}
	kid, err := thumbprint(out.public)
	if err != nil {
		return nil, err
	}
	out.kid = kid
	return out, nil
}

// generateKey makes an ephemeral EC P-256 key.
func generateKey() (*key, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating a P-256 key: %w", err)
	}
	return newKey(k)
}

// thumbprint returns the RFC 7638 JWK thumbprint of pub: SHA-256 over the
// key's required members in lexicographic order, base64url without padding.
func thumbprint(pub crypto.PublicKey) (string, error) {
	jwk := jose.JSONWebKey{Key: pub}
	sum, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("computing the key's thumbprint: %w", err)
	}
	if len(sum) != sha256.Size {
		return "", fmt.Errorf("computing the key's thumbprint: got %d bytes", len(sum))
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}
