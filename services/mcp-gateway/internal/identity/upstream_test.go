package identity

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// identityHeader sets the assertion on every request, as the gateway's
// upstream client does.
type identityHeader string

func (h identityHeader) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(HeaderName, string(h))
	return http.DefaultTransport.RoundTrip(r)
}

// TestExampleUpstream: the example upstream, a program of its own verifying
// with its own code as any upstream would, accepts what a Signer signs (ES256
// and RS256) against the JWKS JWKSHandler serves, and answers whoami with the
// principal; an assertion for another audience gets 401.
func TestExampleUpstream(t *testing.T) {
	t.Parallel()
	bin := testenv.Binary(t, "identity-upstream")
	for _, f := range []keyFormat{formats[0], formats[4]} {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			const issuer = "http://gateway.test:8000"
			s := newSigner(t, Options{Issuer: issuer, KeyFile: writeFile(t, "key.pem", f.pem(t))})
			mux := http.NewServeMux()
			mux.Handle("GET "+JWKSPath, s.JWKSHandler())
			gw := httptest.NewServer(mux)
			t.Cleanup(gw.Close)

			addr := testenv.FreeAddr(t)
			audience := "http://" + addr + "/mcp"
			testenv.StartProcess(t, "identity-upstream", bin, testenv.ProcessOptions{
				Args:     []string{"-listen", addr, "-jwks", gw.URL + JWKSPath, "-issuer", issuer, "-audience", audience},
				ReadyURL: "http://" + addr + "/healthz",
			})

			p := Principal{Subject: "user-42", ClientID: "cursor", Scopes: []string{"read:user_data", "write:jobs"}}
			jws, err := s.Assertion(p, audience)
			if err != nil {
				t.Fatal(err)
			}
			client := mcp.NewClient(&mcp.Implementation{Name: "gateway", Version: "test"}, nil)
			cs, err := client.Connect(t.Context(), &mcp.StreamableClientTransport{
				Endpoint:   audience,
				HTTPClient: &http.Client{Transport: identityHeader(jws)},
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "whoami"})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(res.StructuredContent)
			var got struct {
				Sub      string   `json:"sub"`
				ClientID string   `json:"client_id"`
				Scopes   []string `json:"scopes"`
			}
			if err := json.Unmarshal(b, &got); err != nil || res.IsError {
				t.Fatalf("whoami: %s (%v)", b, err)
			}
			if diff := cmp.Diff(p, Principal{Subject: got.Sub, ClientID: got.ClientID, Scopes: got.Scopes}); diff != "" {
				t.Errorf("whoami (-want +got):\n%s", diff)
			}

			other, err := s.Assertion(p, "http://another-upstream/mcp")
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, audience, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set(HeaderName, other)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "audience") {
				t.Errorf("an assertion for another upstream: %s %s, want 401 naming the audience", resp.Status, body)
			}
		})
	}
}
