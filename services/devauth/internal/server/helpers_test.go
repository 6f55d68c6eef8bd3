package server_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/config"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/server"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/users"
)

const (
	apiKey     = "test-api-key"
	rvID       = "rv-client"
	rvSecret   = "rv-secret+/="
	resource   = "http://127.0.0.1:8000/mcp"
	aliceID    = seedusers.AliceID
	bobID      = seedusers.BobID
	aliceEmail = seedusers.AliceEmail
)

// webAppRedirects are allowed in every test environment, on top of the
// default allow list.
var webAppRedirects = []string{"https://app.example/cb", "https://app.example/cb?x=1", "https://a.example/cb", "https://ok.example/cb"}

// env is a devauth running on a loopback httptest server.
type env struct {
	URL  string
	Srv  *server.Server
	Cfg  config.Config
	Logs *testenv.LogBuffer
}

type envOption func(*config.Config, *server.Options)

func withAutoApprove(email string) envOption {
	return func(c *config.Config, _ *server.Options) { c.AutoApprove = email }
}

func withTestAPI(on bool) envOption {
	return func(c *config.Config, _ *server.Options) { c.TestAPI = on }
}

func withTTL(d time.Duration) envOption {
	return func(c *config.Config, _ *server.Options) { c.TokenTTL = d }
}

func withOptions(f func(*server.Options)) envOption {
	return func(_ *config.Config, o *server.Options) { f(o) }
}

// newEnv starts devauth with a test configuration: test API on, loopback
// client metadata allowed, debug logs captured (and checked for leaks by
// callers that care).
func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	base := "http://" + ts.Listener.Addr().String()
	cfg, err := config.Load(func(k string) string {
		return map[string]string{
			"PROPELAUTH_AUTH_URL":              base,
			"REQUEST_VALIDATION_CLIENT_ID":     rvID,
			"REQUEST_VALIDATION_CLIENT_SECRET": rvSecret,
			"PROPELAUTH_API_KEY":               apiKey,
			"DEVAUTH_TEST_API":                 "true",
			"LOG_LEVEL":                        "debug",
		}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	// Besides the default templates, the web-app redirect URIs the
	// registration and authorization tests use.
	cfg.MCP.AllowedRedirectURIs = append(cfg.MCP.AllowedRedirectURIs, webAppRedirects...)
	so := server.Options{AllowLoopbackMetadata: true}
	for _, o := range opts {
		o(&cfg, &so)
	}
	logs := &testenv.LogBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := server.New(cfg, users.Seed(), logger, so)
	ts.Config.Handler = srv.Handler
	ts.Start()
	t.Cleanup(func() {
		srv.Faults.Close()
		ts.Close()
	})
	return &env{URL: base, Srv: srv, Cfg: cfg, Logs: logs}
}

// do sends a request and returns status, headers and body.
func do(t *testing.T, method, u string, header http.Header, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

var (
	formHdr   = hdr("Content-Type", "application/x-www-form-urlencoded")
	jsonHdr   = hdr("Content-Type", "application/json")
	apiKeyHdr = hdr("Authorization", "Bearer "+apiKey, "Content-Type", "application/json")
)

func rvHdr() http.Header {
	h := hdr("Content-Type", "application/x-www-form-urlencoded")
	h.Set("Authorization", "Basic "+basic(rvID, rvSecret))
	return h
}

func basic(id, secret string) string {
	r, _ := http.NewRequest("GET", "http://x", nil)
	r.SetBasicAuth(id, secret)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return v
}

// mint uses the test API to mint an access token.
func (e *env) mint(t *testing.T, body string) string {
	t.Helper()
	status, _, b := do(t, "POST", e.URL+"/dev/tokens", apiKeyHdr, body)
	if status != http.StatusOK {
		t.Fatalf("POST /dev/tokens = %d %s", status, b)
	}
	return decode[map[string]any](t, b)["access_token"].(string)
}

// introspect returns the introspection answer for tok.
func (e *env) introspect(t *testing.T, tok string) map[string]any {
	t.Helper()
	status, _, b := do(t, "POST", e.URL+"/oauth/2.1/introspect", rvHdr(), url.Values{"token": {tok}, "token_type_hint": {"access_token"}}.Encode())
	if status != http.StatusOK {
		t.Fatalf("introspect = %d %s", status, b)
	}
	return decode[map[string]any](t, b)
}

// register performs DCR and returns the answer.
func (e *env) register(t *testing.T, body string) map[string]any {
	t.Helper()
	status, _, b := do(t, "POST", e.URL+"/oauth/2.1/register", jsonHdr, body)
	if status != http.StatusCreated {
		t.Fatalf("register = %d %s", status, b)
	}
	return decode[map[string]any](t, b)
}
