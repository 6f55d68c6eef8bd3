package identity

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestJWKSPublicOnly: for EC and RSA signing keys with previous keys of the
// other kind (given as private key files), the JWKS carries public keys only:
// no member of a private JWK (RFC 7518 §6.2.2, §6.3.2), nor a symmetric key's
// k. Each key has kty, kid, alg and use "sig", and the kid is the one the
// signer signs with.
func TestJWKSPublicOnly(t *testing.T) {
	t.Parallel()
	ec := writeFile(t, "ec.pem", pkcs8PEM(t, ecKey()))
	rsa := writeFile(t, "rsa.pem", pkcs1PEM(rsaKey()))
	for _, tc := range []struct {
		name       string
		cur, prev  string
		wantKTY    []string
		wantAlgs   []string
		wantLength int
	}{
		{"EC signing, RSA previous", ec, rsa, []string{"EC", "RSA"}, []string{"ES256", "RS256"}, 2},
		{"RSA signing, EC previous", rsa, ec, []string{"RSA", "EC"}, []string{"RS256", "ES256"}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newSigner(t, Options{KeyFile: tc.cur, PreviousKeyFiles: []string{tc.prev}})
			_, body, _ := fetchJWKS(t, s)
			var doc struct {
				Keys []map[string]any `json:"keys"`
			}
			if err := json.Unmarshal(body, &doc); err != nil {
				t.Fatal(err)
			}
			if len(doc.Keys) != tc.wantLength {
				t.Fatalf("%d keys in %s", len(doc.Keys), body)
			}
			for i, k := range doc.Keys {
				for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"} {
					if _, ok := k[private]; ok {
						t.Errorf("key %d has the private member %q: %s", i, private, body)
					}
				}
				if k["kty"] != tc.wantKTY[i] || k["alg"] != tc.wantAlgs[i] || k["use"] != "sig" {
					t.Errorf("key %d: kty %v alg %v use %v, want %s %s sig", i, k["kty"], k["alg"], k["use"], tc.wantKTY[i], tc.wantAlgs[i])
				}
				var want []string
				switch k["kty"] {
				case "EC":
					want = []string{"alg", "crv", "kid", "kty", "use", "x", "y"}
				case "RSA":
					want = []string{"alg", "e", "kid", "kty", "n", "use"}
				}
				var got []string
				for m := range k {
					got = append(got, m)
				}
				slices.Sort(got)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("key %d members (-want +got):\n%s", i, diff)
				}
			}
			if doc.Keys[0]["kid"] != s.KeyID() {
				t.Errorf("the first key's kid is %v, want the signing key's %s", doc.Keys[0]["kid"], s.KeyID())
			}
		})
	}
}

// TestJWKSHTTP: content type, caching headers, HEAD without a body, and 405
// with Allow for other methods.
func TestJWKSHTTP(t *testing.T) {
	t.Parallel()
	s := newSigner(t, Options{})
	srv := httptest.NewServer(s.JWKSHandler())
	t.Cleanup(srv.Close)

	_, body, h := fetchJWKS(t, s)
	for name, want := range map[string]string{
		"Content-Type":           "application/json",
		"Cache-Control":          "public, max-age=300",
		"X-Content-Type-Options": "nosniff",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}

	resp, err := http.Head(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(b) != 0 || resp.ContentLength != int64(len(body)) {
		t.Errorf("HEAD: %s, %d body bytes, Content-Length %d; want 200, none, %d", resp.Status, len(b), resp.ContentLength, len(body))
	}

	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		req, _ := http.NewRequestWithContext(t.Context(), method, srv.URL, strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: %s, Allow %q; want 405, GET, HEAD", method, resp.Status, resp.Header.Get("Allow"))
		}
	}
}
