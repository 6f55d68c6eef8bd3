package devauth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fake serves the parts of devauth's test API the client uses.
func fake(t *testing.T, mintFailsAfter int64) (*Client, *atomic.Int64) {
	t.Helper()
	var minted atomic.Int64
	mux := http.NewServeMux()
	auth := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer key" {
				http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("GET /dev/stats", auth(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"introspections": 7, "user_fetches": 2, "tokens_issued": 9}`))
	}))
	mux.HandleFunc("POST /dev/stats/reset", auth(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	mux.HandleFunc("POST /dev/faults", auth(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body["mode"] != "ok" || body["latency_ms"] != float64(30) {
			http.Error(w, "bad fault body", http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("POST /dev/tokens", auth(func(w http.ResponseWriter, r *http.Request) {
		var tr TokenRequest
		if err := json.NewDecoder(r.Body).Decode(&tr); err != nil || tr.Resource == "" {
			http.Error(w, "bad token body", http.StatusBadRequest)
			return
		}
		n := minted.Add(1)
		if mintFailsAfter > 0 && n > mintFailsAfter {
			http.Error(w, `{"error":"temporarily_unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(`{"access_token":"tok-` + strings.Repeat("x", int(n%3)) + `","token_type":"Bearer"}`))
	}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &Client{BaseURL: srv.URL + "/", APIKey: "key"}, &minted
}

func TestClient(t *testing.T) {
	t.Parallel()
	c, _ := fake(t, 0)
	s, err := c.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Stats{Introspections: 7, UserFetches: 2, TokensIssued: 9}, s); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
	if got := s.Sub(Stats{Introspections: 5, UserFetches: 2, TokensIssued: 1}); got != (Stats{Introspections: 2, TokensIssued: 8}) {
		t.Errorf("Sub = %+v", got)
	}
	if err := c.ResetStats(t.Context()); err != nil {
		t.Error(err)
	}
	if err := c.SetLatency(t.Context(), 30*time.Millisecond); err != nil {
		t.Error(err)
	}
	toks, err := c.MintMany(t.Context(), 50, 4, func(int) TokenRequest { return TokenRequest{Email: "a@b", Resource: "http://x/mcp"} })
	if err != nil {
		t.Fatal(err)
	}
	for i, tok := range toks {
		if !strings.HasPrefix(tok, "tok-") {
			t.Fatalf("token %d = %q", i, tok)
		}
	}
}

func TestClientErrors(t *testing.T) {
	t.Parallel()
	c, minted := fake(t, 10)
	if _, err := c.MintMany(t.Context(), 100, 4, func(int) TokenRequest { return TokenRequest{Email: "a@b", Resource: "http://x/mcp"} }); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("MintMany with a failing devauth: error %v, want the 503", err)
	}
	if n := minted.Load(); n >= 100 {
		t.Errorf("MintMany kept minting after the first error (%d requests)", n)
	}
	bad := &Client{BaseURL: c.BaseURL, APIKey: "wrong"}
	if _, err := bad.Stats(t.Context()); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("Stats with a wrong key: error %v, want 401", err)
	}
	if err := bad.ResetStats(t.Context()); err == nil {
		t.Error("ResetStats with a wrong key succeeded")
	}
	if _, err := bad.Mint(t.Context(), TokenRequest{Resource: "http://x/mcp"}); err == nil {
		t.Error("Mint with a wrong key succeeded")
	}
}
