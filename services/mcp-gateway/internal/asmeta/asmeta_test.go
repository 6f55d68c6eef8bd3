package asmeta

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestMetadataURLs(t *testing.T) {
	t.Parallel()
	tests := map[string][]string{
		"https://auth.example.com/oauth/2.1": {
			"https://auth.example.com/.well-known/oauth-authorization-server/oauth/2.1",
			"https://auth.example.com/.well-known/openid-configuration/oauth/2.1",
			"https://auth.example.com/oauth/2.1/.well-known/openid-configuration",
		},
		"https://auth.example.com": {
			"https://auth.example.com/.well-known/oauth-authorization-server",
			"https://auth.example.com/.well-known/openid-configuration",
		},
		"http://127.0.0.1:9000/": {
			"http://127.0.0.1:9000/.well-known/oauth-authorization-server",
			"http://127.0.0.1:9000/.well-known/openid-configuration",
		},
	}
	for issuer, want := range tests {
		if diff := cmp.Diff(want, MetadataURLs(issuer)); diff != "" {
			t.Errorf("MetadataURLs(%q) (-want +got):\n%s", issuer, diff)
		}
	}
}

// as is a stand-in authorization server for these unit tests: it serves a
// metadata document at one path with a chosen issuer, or fails. The gateway's
// integration tests fetch devauth's real metadata.
type as struct {
	srv    *httptest.Server
	path   string
	issuer string
	status atomic.Int32 // 0: serve the document
	hits   atomic.Int64
	delay  time.Duration
	gate   chan struct{} // if set, each request waits until it is closed
}

func newAS(t *testing.T, path string) *as {
	a := &as{path: path}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		time.Sleep(a.delay)
		if a.gate != nil {
			<-a.gate
		}
		if s := a.status.Load(); s != 0 {
			w.WriteHeader(int(s))
			return
		}
		if r.URL.Path != a.path {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, `{"issuer":%q,"authorization_endpoint":"%s/authorize"}`, a.issuer, a.issuer)
	}))
	t.Cleanup(a.srv.Close)
	a.issuer = a.srv.URL + "/oauth/2.1"
	return a
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

func TestGetFindsEachLocation(t *testing.T) {
	t.Parallel()
	for _, path := range []string{
		"/.well-known/oauth-authorization-server/oauth/2.1",
		"/.well-known/openid-configuration/oauth/2.1",
		"/oauth/2.1/.well-known/openid-configuration",
	} {
		a := newAS(t, path)
		doc, err := New(Options{Issuer: a.issuer}).Get(t.Context())
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		want := fmt.Sprintf(`{"issuer":%q,"authorization_endpoint":"%s/authorize"}`, a.issuer, a.issuer)
		if string(doc) != want {
			t.Errorf("%s: got %s", path, doc)
		}
	}
}

// TestMetadataURLOverride fetches from the configured URL only (another host
// than the issuer's, as inside a container network) and still checks the issuer.
func TestMetadataURLOverride(t *testing.T) {
	t.Parallel()
	a := newAS(t, "/internal/metadata")
	doc, err := New(Options{Issuer: a.issuer, MetadataURL: a.srv.URL + "/internal/metadata"}).Get(t.Context())
	if err != nil {
		t.Fatalf("Get with MetadataURL: %v", err)
	}
	if !strings.Contains(string(doc), a.issuer) {
		t.Errorf("got %s, want the issuer's document", doc)
	}
	if _, err := New(Options{Issuer: a.issuer}).Get(t.Context()); err == nil {
		t.Error("without MetadataURL the derived URLs found a document only served at /internal/metadata")
	}
	wrong := New(Options{Issuer: "http://localhost:9000/oauth/2.1", MetadataURL: a.srv.URL + "/internal/metadata"})
	if _, err := wrong.Get(t.Context()); !errors.Is(err, ErrInvalid) {
		t.Errorf("issuer mismatch through MetadataURL: %v, want ErrInvalid", err)
	}
}

func TestCacheCoalesceAndStale(t *testing.T) {
	t.Parallel()
	a := newAS(t, "/.well-known/oauth-authorization-server/oauth/2.1")
	a.delay = 50 * time.Millisecond
	clk := &clock{now: time.Unix(1000, 0)}
	p := New(Options{Issuer: a.issuer, TTL: time.Minute, StaleFor: time.Hour, Now: clk.Now})

	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := p.Get(t.Context()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := a.hits.Load(); n != 1 {
		t.Errorf("20 concurrent misses made %d fetches, want 1", n)
	}
	clk.add(30 * time.Second)
	if _, err := p.Get(t.Context()); err != nil || a.hits.Load() != 1 {
		t.Errorf("fresh hit refetched (hits %d) or failed: %v", a.hits.Load(), err)
	}

	// Past the TTL with the server failing: the stale document is served.
	a.delay = 0
	a.status.Store(http.StatusInternalServerError)
	clk.add(time.Minute)
	if _, err := p.Get(t.Context()); err != nil {
		t.Errorf("stale-while-error: %v", err)
	}
	// Past TTL+StaleFor: the error shows.
	clk.add(2 * time.Hour)
	if _, err := p.Get(t.Context()); !errors.Is(err, ErrUnavailable) {
		t.Errorf("after the stale window: %v, want ErrUnavailable", err)
	}
	// The server recovers.
	a.status.Store(0)
	if _, err := p.Get(t.Context()); err != nil {
		t.Errorf("after recovery: %v", err)
	}
}

// TestCallerStopsWaiting: a caller whose context ends stops waiting at once,
// also the one whose miss started the fetch, and the fetch runs on for the
// others.
func TestCallerStopsWaiting(t *testing.T) {
	t.Parallel()
	a := newAS(t, "/.well-known/oauth-authorization-server/oauth/2.1")
	a.gate = make(chan struct{})
	open := sync.OnceFunc(func() { close(a.gate) })
	t.Cleanup(open) // before the server's Close, which waits for its handlers
	p := New(Options{Issuer: a.issuer, FetchTimeout: time.Minute})
	ctx, cancel := context.WithCancel(t.Context())
	first := make(chan error, 1)
	go func() {
		_, err := p.Get(ctx)
		first <- err
	}()
	for a.hits.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case err := <-first:
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("Get with an ended context = %v, want ErrUnavailable", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Get did not return 5s after its context ended: it waits for the fetch it started")
	}
	second := make(chan error, 1)
	go func() {
		_, err := p.Get(t.Context())
		second <- err
	}()
	open()
	if err := <-second; err != nil {
		t.Errorf("a caller waiting for the fetch in flight: %v", err)
	}
	if n := a.hits.Load(); n != 1 {
		t.Errorf("%d fetches, want the one in flight", n)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	wrongIssuer := newAS(t, "/.well-known/oauth-authorization-server/oauth/2.1")
	failing := newAS(t, "/")
	failing.status.Store(http.StatusBadGateway)
	missing := newAS(t, "/elsewhere")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + lis.Addr().String() + "/oauth/2.1"
	lis.Close()
	tests := []struct {
		name   string
		issuer string
		want   error
		status int
	}{
		{"issuer mismatch", wrongIssuer.srv.URL + "/oauth/2.1/", ErrInvalid, http.StatusBadGateway},
		{"5xx", failing.issuer, ErrUnavailable, http.StatusServiceUnavailable},
		{"nothing published", missing.issuer, ErrInvalid, http.StatusBadGateway},
		{"unreachable", closed, ErrUnavailable, http.StatusServiceUnavailable},
		{"not a URL", "::", ErrInvalid, http.StatusBadGateway},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := New(Options{Issuer: tt.issuer, FetchTimeout: 2 * time.Second})
			if _, err := p.Get(t.Context()); !errors.Is(err, tt.want) {
				t.Errorf("Get() = %v, want %v", err, tt.want)
			}
			rec := httptest.NewRecorder()
			p.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/.well-known/oauth-authorization-server", nil))
			if rec.Code != tt.status {
				t.Errorf("status %d, want %d", rec.Code, tt.status)
			}
			if tt.status == http.StatusServiceUnavailable && rec.Header().Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
		})
	}
}

func TestServeHTTP(t *testing.T) {
	t.Parallel()
	a := newAS(t, "/.well-known/oauth-authorization-server/oauth/2.1")
	p := New(Options{Issuer: a.issuer})
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	tests := []struct {
		method     string
		wantStatus int
		wantBody   bool
	}{
		{http.MethodGet, http.StatusOK, true},
		{http.MethodHead, http.StatusOK, false},
		{http.MethodOptions, http.StatusNoContent, false},
		{http.MethodPost, http.StatusMethodNotAllowed, true},
		{http.MethodDelete, http.StatusMethodNotAllowed, true},
	}
	for _, tt := range tests {
		req, _ := http.NewRequestWithContext(t.Context(), tt.method, srv.URL+"/.well-known/oauth-authorization-server", nil)
		req.Header.Set("Origin", "http://localhost:6274")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tt.wantStatus || (len(body) > 0) != tt.wantBody {
			t.Errorf("%s: status %d body %q, want %d (body %v)", tt.method, res.StatusCode, body, tt.wantStatus, tt.wantBody)
		}
		if got := res.Header.Get("Access-Control-Allow-Origin"); got != "*" {
			t.Errorf("%s: Access-Control-Allow-Origin %q", tt.method, got)
		}
	}
}
