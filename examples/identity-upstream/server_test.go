package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// withHeader adds the identity header to every request, as the gateway does.
type withHeader struct{ assertion string }

func (h withHeader) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if h.assertion != "" {
		r.Header.Set(HeaderName, h.assertion)
	}
	return http.DefaultTransport.RoundTrip(r)
}

func startUpstream(t *testing.T, js *jwksServer) string {
	t.Helper()
	srv := httptest.NewServer(newHandler(NewVerifier(js.URL, testIssuer, testAudience), slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	return srv.URL
}

func connect(ctx context.Context, endpoint, assertion string) (*mcp.ClientSession, error) {
	client := mcp.NewClient(&mcp.Implementation{Name: "test-gateway", Version: "1"}, nil)
	return client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   endpoint,
		HTTPClient: &http.Client{Transport: withHeader{assertion}},
	}, nil)
}

// TestWhoAmI: through real HTTP and the go-sdk client, whoami answers with
// the caller the assertion names, for either algorithm.
func TestWhoAmI(t *testing.T) {
	t.Parallel()
	js := newJWKSServer(t, esKey(), rsKey())
	base := startUpstream(t, js)
	for _, k := range []*gatewayKey{esKey(), rsKey()} {
		t.Run(string(k.alg), func(t *testing.T) {
			t.Parallel()
			now := time.Now()
			claims := with(claimsAt(now), "sub", "user-"+string(k.alg))
			cs, err := connect(t.Context(), base+"/mcp", k.sign(t, claims, nil))
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "whoami"})
			if err != nil {
				t.Fatal(err)
			}
			if res.IsError {
				t.Fatalf("whoami failed: %+v", res.Content)
			}
			b, err := json.Marshal(res.StructuredContent)
			if err != nil {
				t.Fatal(err)
			}
			var got WhoAmI
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			want := WhoAmI{
				Subject:   "user-" + string(k.alg),
				ClientID:  "client-1",
				Scopes:    []string{"read:user_data", "openid"},
				ExpiresAt: time.Unix(claims["exp"].(int64), 0).UTC().Format(time.RFC3339),
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("whoami (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRefused: without a valid assertion the go-sdk client cannot even
// connect, and the HTTP answer is 401 with a WWW-Authenticate challenge and
// the reason.
func TestRefused(t *testing.T) {
	t.Parallel()
	es, rogue := esKey(), rogueKey()
	js := newJWKSServer(t, es)
	base := startUpstream(t, js)
	now := time.Now()
	good := claimsAt(now)
	cases := []struct {
		name, assertion, reason string
	}{
		{"missing", "", "no X-Mcpauthz-Identity header"},
		{"expired", es.sign(t, with(good, "iat", now.Add(-7*time.Minute).Unix(), "exp", now.Add(-2*time.Minute).Unix()), nil), "expired"},
		{"wrong audience", es.sign(t, with(good, "aud", "http://other.example.com/mcp"), nil), "audience"},
		{"wrong issuer", es.sign(t, with(good, "iss", "https://evil.example.com"), nil), "issuer"},
		{"unknown kid", rogue.sign(t, good, nil), "no key"},
		{"alg none", unsigned(map[string]any{"alg": "none", "typ": "JWT", "kid": es.kid}, good, nil), "malformed"},
		{"HS256 keyed with the public key", hs256WithPublicKey(t, es, good), "malformed"},
	}
	initialize := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if cs, err := connect(t.Context(), base+"/mcp", tc.assertion); err == nil {
				cs.Close()
				t.Fatal("the go-sdk client connected")
			}

			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/mcp", strings.NewReader(initialize))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			if tc.assertion != "" {
				req.Header.Set(HeaderName, tc.assertion)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), tc.reason) {
				t.Errorf("POST /mcp: %s %q, want 401 saying %q", resp.Status, body, tc.reason)
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != `Mcpauthz-Identity error="invalid_token"` {
				t.Errorf("WWW-Authenticate %q", got)
			}
		})
	}
}

// TestRun runs the command as main does: it listens where told, serves
// /healthz without an assertion, and stops cleanly when its context ends,
// also with a client's session still open.
func TestRun(t *testing.T) {
	t.Parallel()
	js := newJWKSServer(t, esKey())
	var logs syncBuffer
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-jwks", js.URL, "-issuer", testIssuer, "-audience", testAudience},
			noEnv, slog.New(slog.NewTextHandler(&logs, nil)))
	}()
	addrRE := regexp.MustCompile(`addr=(\S+)`)
	var addr string
	for deadline := time.Now().Add(10 * time.Second); addr == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m := addrRE.FindStringSubmatch(logs.String()); m != nil {
			addr = m[1]
		}
	}
	if addr == "" {
		t.Fatalf("no listening address logged: %q", logs.String())
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %s", resp.Status)
	}
	// A session left open, as the gateway keeps one (with its stream of
	// list changes) for as long as it runs: stopping must not wait for it.
	cs, err := connect(t.Context(), "http://"+addr+"/mcp", esKey().sign(t, claimsAt(time.Now()), nil))
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if _, err := cs.ListTools(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	listen := holdListen(t, "http://"+addr+"/mcp", esKey().sign(t, claimsAt(time.Now()), nil))
	defer listen.Close()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}

	if err := run(t.Context(), []string{"-listen", "127.0.0.1:0", "-jwks", js.URL, "-issuer", testIssuer}, noEnv, slog.New(slog.DiscardHandler)); err == nil ||
		!strings.Contains(err.Error(), "-audience (EXPECTED_AUDIENCE) is required") {
		t.Errorf("run without -audience: %v", err)
	}
}

func noEnv(string) string { return "" }

// holdListen opens the subscriptions/listen stream the gateway holds open
// for list changes (MCP 2026-07-28) and waits for its first event; the
// caller closes the body it returns.
func holdListen(t *testing.T, endpoint, assertion string) io.ReadCloser {
	t.Helper()
	const body = `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"_meta":{` +
		`"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"test-gateway","version":"1"},` +
		`"io.modelcontextprotocol/clientCapabilities":{}},"notifications":{"toolsListChanged":true}}}`
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, endpoint, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", "subscriptions/listen")
	req.Header.Set(HeaderName, assertion)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("subscriptions/listen: %s %s: %s", resp.Status, ct, b)
	}
	line := make([]byte, 1)
	if _, err := resp.Body.Read(line); err != nil {
		resp.Body.Close()
		t.Fatalf("subscriptions/listen: no event: %v", err)
	}
	return resp.Body
}

// syncBuffer is a bytes.Buffer safe for the logger and the test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
