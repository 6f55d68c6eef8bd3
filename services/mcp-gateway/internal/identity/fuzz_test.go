package identity

import (
	"encoding/pem"
	"testing"
)

// FuzzParseKeyPEM: whatever a key file holds, parsing returns a usable key or
// an error, without panicking; a key it returns is P-256 or RSA >= 2048 with
// a 43-character kid.
func FuzzParseKeyPEM(f *testing.F) {
	for _, fm := range formats {
		f.Add(fm.pem(f))
	}
	f.Add([]byte(ecParamsPEM))
	f.Add(publicPEM(f, &ecKey().PublicKey))
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: []byte{1}}))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\n\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, publicOK := range []bool{false, true} {
			k, err := parseKeyPEM(b, publicOK)
			if err != nil {
				continue
			}
			if len(k.kid) != 43 || (k.alg != "ES256" && k.alg != "RS256") {
				t.Fatalf("parsed a key with kid %q alg %q", k.kid, k.alg)
			}
			if !publicOK && k.signer == nil {
				t.Fatal("a signing key without its private part")
			}
		}
	})
}
