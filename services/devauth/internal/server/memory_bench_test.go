package server_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"

	"github.com/mcpauthz/mcpauthz/services/devauth/internal/config"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/server"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/users"
)

// heapInUse returns the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

func benchServer(b *testing.B) *server.Server {
	b.Helper()
	cfg, err := config.Load(func(k string) string {
		return map[string]string{
			"PROPELAUTH_AUTH_URL": "http://127.0.0.1:9000", "REQUEST_VALIDATION_CLIENT_ID": rvID,
			"REQUEST_VALIDATION_CLIENT_SECRET": rvSecret, "PROPELAUTH_API_KEY": apiKey,
		}[k]
	})
	if err != nil {
		b.Fatal(err)
	}
	return server.New(cfg, users.Seed(), slog.New(slog.DiscardHandler), server.Options{})
}

// largestRegistration returns the largest registration body srv accepts, of
// those tried: 20 redirect URIs as long as the body limit allows.
func largestRegistration(b *testing.B, srv *server.Server) string {
	b.Helper()
	for _, size := range []int{31 << 10, 15 << 10, 7 << 10, 3 << 10} {
		per := (size - 100) / 20
		uris := make([]string, 20)
		for i := range uris {
			p := fmt.Sprintf("https://app.example/%02d/", i)
			uris[i] = `"` + p + strings.Repeat("x", per-len(p)-3) + `"`
		}
		body := `{"redirect_uris":[` + strings.Join(uris, ",") + `]}`
		rec := httptest.NewRecorder()
		srv.Handler.ServeHTTP(rec, httptest.NewRequest("POST", "/oauth/2.1/register", strings.NewReader(body)))
		if rec.Code == http.StatusCreated {
			return body
		}
	}
	b.Fatal("no registration size accepted")
	return ""
}

// BenchmarkMemoryRegistrationsAtCap registers clients with the largest body
// accepted until devauth refuses, and reports the heap they hold.
func BenchmarkMemoryRegistrationsAtCap(b *testing.B) {
	for b.Loop() {
		srv := benchServer(b)
		before := heapInUse()
		body := largestRegistration(b, srv)
		n := 1
		for ; n < 1_000_000; n++ {
			rec := httptest.NewRecorder()
			srv.Handler.ServeHTTP(rec, httptest.NewRequest("POST", "/oauth/2.1/register", strings.NewReader(body)))
			if rec.Code != http.StatusCreated {
				break
			}
		}
		b.ReportMetric(float64(heapInUse()-before)/(1<<20), "MB-held")
		b.ReportMetric(float64(n), "clients")
		b.ReportMetric(float64(len(body)), "body-bytes")
		runtime.KeepAlive(srv)
	}
}

// BenchmarkMemoryAnonymousAuthorizations sends authorization requests with
// the longest state and resource devauth accepts, from fresh (cookie-less)
// and from cookie-keeping anonymous browsers, and reports the heap held by
// the sessions and pending requests.
func BenchmarkMemoryAnonymousAuthorizations(b *testing.B) {
	for b.Loop() {
		srv := benchServer(b)
		body := `{"redirect_uris":["http://127.0.0.1/` + strings.Repeat("r", 2000) + `"]}`
		rec := httptest.NewRecorder()
		srv.Handler.ServeHTTP(rec, httptest.NewRequest("POST", "/oauth/2.1/register", strings.NewReader(body)))
		if rec.Code != http.StatusCreated {
			b.Fatalf("register: %d %s", rec.Code, rec.Body)
		}
		clientID := decodeB[map[string]any](b, rec.Body.Bytes())["client_id"].(string)
		_, challenge := pkce()
		before := heapInUse()
		// 12,000 browsers each open 10 authorization requests: more than any
		// session or pending bound, so the totals show what the bounds hold.
		for i := range 12_000 {
			var cookie string
			for j := range 10 {
				q := url.Values{
					"response_type": {"code"}, "client_id": {clientID},
					"redirect_uri":   {"http://127.0.0.1/" + strings.Repeat("r", 2000)},
					"code_challenge": {challenge}, "code_challenge_method": {"S256"},
					"state":    {fmt.Sprintf("%06d%02d", i, j) + strings.Repeat("s", 2000)},
					"resource": {"https://mcp.example/" + strings.Repeat("m", 2000)},
				}
				req := httptest.NewRequest("GET", "/oauth/2.1/authorize?"+q.Encode(), nil)
				if cookie != "" {
					req.Header.Set("Cookie", cookie)
				}
				rec := httptest.NewRecorder()
				srv.Handler.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("authorize: %d", rec.Code)
				}
				if c := rec.Result().Cookies(); len(c) > 0 {
					cookie = c[0].Name + "=" + c[0].Value
				}
			}
		}
		b.ReportMetric(float64(heapInUse()-before)/(1<<20), "MB-held")
		runtime.KeepAlive(srv)
	}
}

func decodeB[T any](b *testing.B, data []byte) T {
	b.Helper()
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		b.Fatalf("decoding %s: %v", data, err)
	}
	return v
}
