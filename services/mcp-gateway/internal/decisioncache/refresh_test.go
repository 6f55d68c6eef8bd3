package decisioncache

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/internal/tokenref"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/metrics"
)

// refresher is a fake RefreshFunc. Each call counts, runs during (if set) as
// if something happened while authz was being asked, and returns what answer
// returns.
type refresher struct {
	calls  atomic.Int32
	during func()
	answer func(req *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error)
}

func (r *refresher) refresh(_ context.Context, req *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) {
	r.calls.Add(1)
	if r.during != nil {
		r.during()
	}
	return r.answer(req)
}

func newRefreshingCache(tb testing.TB, r *refresher) (*Cache, *clock, *metrics.Metrics) {
	tb.Helper()
	clk := newClock()
	m := metrics.New()
	c := New(Options{TTL: ttl, Metrics: m, Now: clk.now, Refresh: r.refresh})
	tb.Cleanup(func() {
		c.refreshWG.Wait()
		checkIndex(tb, c)
	})
	c.Reset()
	return c, clk, m
}

// fetchSettled is fetch, then waits for any refresh it started to end.
func fetchSettled(c *Cache, req *authzv1.AuthorizeRequest, answer *authzv1.AuthorizeResponse) (hit bool) {
	hit = fetch(c, req, answer)
	c.refreshWG.Wait()
	return hit
}

var (
	errUnavailable = status.Error(codes.Unavailable, "authz is down")
	denial         = &authzv1.AuthorizeResponse{Denial: &authzv1.Denial{Reason: authzv1.DenialReason_DENIAL_REASON_TOKEN_INACTIVE}, TokenRef: "ref-a"}
)

// TestRefreshAhead walks a refreshing cache through one scenario per row
// (token "a", authz's answers from the row's refresher), and checks whether
// the last request was answered from the cache, how often authz was asked in
// the background, and the refreshes metric.
func TestRefreshAhead(t *testing.T) {
	t.Parallel()
	allowA := func(*authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) {
		return allowed("a", time.Time{}), nil
	}
	deny := func(*authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) { return denial, nil }
	fail := func(*authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) { return nil, errUnavailable }
	half, quarter := ttl/RefreshAfterDivisor, ttl/RefreshRetryDivisor
	req := func() *authzv1.AuthorizeRequest { return request("a", "s") }
	tests := []struct {
		name      string
		answer    func(*authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error)
		during    func(c *Cache) // while the refresh asks authz
		run       func(c *Cache, clk *clock) (hit bool)
		want      bool
		calls     int32
		refreshes map[string]float64 // by result; unlisted results must be 0
	}{
		{name: "hit before the refresh point does not refresh", answer: allowA, run: func(c *Cache, clk *clock) bool {
			fetch(c, req(), allowed("a", time.Time{}))
			clk.advance(half - time.Nanosecond)
			return fetchSettled(c, req(), nil)
		}, want: true, calls: 0},
		{name: "hit at the refresh point is served and refreshes", answer: allowA, run: func(c *Cache, clk *clock) bool {
			fetch(c, req(), allowed("a", time.Time{}))
			clk.advance(half)
			return fetchSettled(c, req(), nil)
		}, want: true, calls: 1, refreshes: map[string]float64{"stored": 1}},
		{name: "refreshed decision outlives the first", answer: allowA, run: func(c *Cache, clk *clock) bool {
			fetch(c, req(), allowed("a", time.Time{}))
			clk.advance(half)
			fetchSettled(c, req(), nil)
			clk.advance(half + quarter) // past the first decision's TTL (and the second's refresh point)
			return fetch(c, req(), nil)
		}, want: true, calls: 2, refreshes: map[string]float64{"stored": 2}},
		{name: "refreshed decision expires at its own TTL", answer: allowA, run: func(c *Cache, clk *clock) bool {
			fetch(c, req(), allowed("a", time.Time{}))
			clk.advance(half)
			fetchSettled(c, req(), nil)
			clk.advance(ttl)
			return fetchSettled(c, req(), allowed("a", time.Time{}))
		}, want: false, calls: 1, refreshes: map[string]float64{"stored": 1}},
		{name: "steady use keeps the decision, one refresh per TTL/2", answer: allowA, run: func(c *Cache, clk *clock) bool {
			fetch(c, req(), allowed("a", time.Time{}))
			hit := true
			for range 4 * RefreshAfterDivisor { // four TTLs, a hit every TTL/2
				clk.advance(half)
				hit = fetchSettled(c, req(), nil) && hit
			}
			return hit
		}, want: true, calls: 4 * RefreshAfterDivisor, refreshes: map[string]float64{"stored": 4 * RefreshAfterDivisor}},
		{name: "denial learned by a refresh drops the decision", answer: deny, run: func(c *Cache, clk *clock) bool {
			fetch(c, req(), allowed("a", time.Time{}))
			clk.advance(half)
			if !fetchSettled(c, req(), nil) {
				return false // the hit that starts the refresh is still served
			}
			return fetch(c, req(), nil)
		}, want: false, calls: 1, refreshes: map[string]float64{"denied": 1}},
		{name: "failed user lookup learned by a refresh drops the decision", answer: func(*authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) {
			res := allowed("a", time.Time{})
			res.UserError = "the user API is unavailable"
			return res, nil
		}, run: func(c *Cache, clk *clock) bool {
			r := req()
			r.IncludeUser = true
			res := allowed("a", time.Time{})
			res.User = &authzv1.User{UserId: "u"}
			fetch(c, r, res)
			clk.advance(half)
			fetchSettled(c, r, nil)
			return fetch(c, r, nil)
		}, want: false, calls: 1, refreshes: map[string]float64{"denied": 1}},
		{name: "failed refresh leaves the decision until its TTL", answer: fail, run: func(c *Cache, clk *clock) bool {
			fetch(c, req(), allowed("a", time.Time{}))
			clk.advance(half)
			fetchSettled(c, req(), nil)
			clk.advance(half - time.Nanosecond)
			return fetchSettled(c, req(), nil)
		}, want: true, calls: 2, refreshes: map[string]float64{"error": 2}},
		{name: "failed refresh does not extend the decision", answer: fail, run: func(c *Cache, clk *clock) bool {
			fetch(c, req(), allowed("a", time.Time{}))
			clk.advance(half)
			fetchSettled(c, req(), nil)
			clk.advance(half)
			return fetchSettled(c, req(), nil)
		}, want: false, calls: 1, refreshes: map[string]float64{"error": 1}},
		{name: "no retry within TTL/4 of a failed refresh", answer: fail, run: func(c *Cache, clk *clock) bool {
			fetch(c, req(), allowed("a", time.Time{}))
			clk.advance(half)
			fetchSettled(c, req(), nil)
			clk.advance(quarter - time.Nanosecond)
			return fetchSettled(c, req(), nil)
		}, want: true, calls: 1, refreshes: map[string]float64{"error": 1}},
		{name: "token expiring before the TTL is not refreshed", answer: allowA, run: func(c *Cache, clk *clock) bool {
			fetch(c, req(), allowed("a", t0.Add(ttl-time.Second)))
			clk.advance(half)
			return fetchSettled(c, req(), nil)
		}, want: true, calls: 0},
		{name: "other token's invalidation during the refresh: answer stored", answer: allowA,
			during: func(c *Cache) { c.Invalidate("ref-other") },
			run: func(c *Cache, clk *clock) bool {
				fetch(c, req(), allowed("a", time.Time{}))
				clk.advance(half)
				fetchSettled(c, req(), nil)
				clk.advance(half) // the first decision's TTL: only a refreshed one hits
				return fetch(c, req(), nil)
			}, want: true, calls: 2, refreshes: map[string]float64{"stored": 2}},
		{name: "the token's invalidation during the refresh drops it at once", answer: allowA,
			during: func(c *Cache) { c.Invalidate("ref-a") },
			run: func(c *Cache, clk *clock) bool {
				fetch(c, req(), allowed("a", time.Time{}))
				clk.advance(half)
				fetchSettled(c, req(), nil)
				return fetch(c, req(), nil)
			}, want: false, calls: 1, refreshes: map[string]float64{"discarded": 1}},
		{name: "reset during the refresh: answer not stored", answer: allowA,
			during: func(c *Cache) { c.Reset() },
			run: func(c *Cache, clk *clock) bool {
				fetch(c, req(), allowed("a", time.Time{}))
				clk.advance(half)
				fetchSettled(c, req(), nil)
				return fetch(c, req(), nil)
			}, want: false, calls: 1, refreshes: map[string]float64{"discarded": 1}},
		{name: "stream end during the refresh: answer not stored", answer: allowA,
			during: func(c *Cache) { c.Down(); c.Reset() },
			run: func(c *Cache, clk *clock) bool {
				fetch(c, req(), allowed("a", time.Time{}))
				clk.advance(half)
				fetchSettled(c, req(), nil)
				return fetch(c, req(), nil)
			}, want: false, calls: 1, refreshes: map[string]float64{"discarded": 1}},
		{name: "no refresh while the stream is down", answer: allowA, run: func(c *Cache, clk *clock) bool {
			fetch(c, req(), allowed("a", time.Time{}))
			clk.advance(half)
			c.Down()
			return fetchSettled(c, req(), nil)
		}, want: false, calls: 0},
		{name: "denial on a miss drops a decision another request stored", answer: allowA, run: func(c *Cache, _ *clock) bool {
			_, ticket := c.Get(req())
			fetch(c, req(), allowed("a", time.Time{}))
			c.Put(ticket, denial)
			return fetch(c, req(), nil)
		}, want: false, calls: 0},
	}
	results := []string{"stored", "denied", "discarded", "error", "skipped"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := &refresher{answer: tt.answer}
			c, clk, m := newRefreshingCache(t, r)
			if tt.during != nil {
				r.during = func() { tt.during(c) }
			}
			if got := tt.run(c, clk); got != tt.want {
				t.Errorf("hit = %v, want %v", got, tt.want)
			}
			c.refreshWG.Wait()
			if got := r.calls.Load(); got != tt.calls {
				t.Errorf("refreshes asked authz %d times, want %d", got, tt.calls)
			}
			for _, res := range results {
				if got := counter(t, m, "mcp_gateway_decision_cache_refreshes_total", res); got != tt.refreshes[res] {
					t.Errorf("refreshes{result=%q} = %v, want %v", res, got, tt.refreshes[res])
				}
			}
		})
	}
}

// blockingRefresher is a RefreshFunc whose calls wait until release is
// closed (or their context ends), answering allowed, with the user.
type blockingRefresher struct {
	calls      atomic.Int32
	started    chan *authzv1.AuthorizeRequest
	release    chan struct{}
	releaseAll func()
}

// newBlockingRefresher returns a refresher for up to n calls; its calls are
// released when the test ends, if not before.
func newBlockingRefresher(t *testing.T, n int) *blockingRefresher {
	r := &blockingRefresher{started: make(chan *authzv1.AuthorizeRequest, n), release: make(chan struct{})}
	r.releaseAll = sync.OnceFunc(func() { close(r.release) })
	t.Cleanup(r.releaseAll)
	return r
}

// next returns the request of the next refresh to start, failing t if none
// starts within 5s.
func (r *blockingRefresher) next(t *testing.T) *authzv1.AuthorizeRequest {
	t.Helper()
	select {
	case req := <-r.started:
		return req
	case <-time.After(5 * time.Second):
		t.Fatal("no refresh started within 5s")
		return nil
	}
}

func (r *blockingRefresher) refresh(ctx context.Context, req *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) {
	r.calls.Add(1)
	r.started <- req
	select {
	case <-r.release:
		res := allowed(req.GetToken(), time.Time{})
		res.User = &authzv1.User{UserId: "u"}
		return res, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// TestRefreshOnePerKey: concurrent hits past the refresh point, and hits past
// the retry point while it is still in flight, start one refresh, with a copy
// of the request.
func TestRefreshOnePerKey(t *testing.T) {
	t.Parallel()
	r := newBlockingRefresher(t, 100)
	clk := newClock()
	m := metrics.New()
	c := New(Options{TTL: ttl, Metrics: m, Now: clk.now, Refresh: r.refresh})
	c.Reset()
	orig := request("a", "s", "t")
	orig.IncludeUser = true
	res := allowed("a", time.Time{})
	res.User = &authzv1.User{UserId: "u"}
	fetch(c, orig, res)
	clk.advance(ttl / RefreshAfterDivisor)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if !fetch(c, orig, nil) {
				t.Error("a hit past the refresh point was not served")
			}
		})
	}
	wg.Wait()
	got := r.next(t)
	if got == orig || !proto.Equal(got, orig) {
		t.Errorf("refresh asked %v (same pointer: %v), want a copy of %v", got, got == orig, orig)
	}
	clk.advance(ttl / RefreshRetryDivisor) // a retry would be due, but one is in flight
	fetch(c, orig, nil)
	r.releaseAll()
	c.refreshWG.Wait()
	if n := r.calls.Load(); n != 1 {
		t.Errorf("%d refreshes for one key, want 1", n)
	}
	if n := counter(t, m, "mcp_gateway_decision_cache_refreshes_total", "stored"); n != 1 {
		t.Errorf("refreshes{stored} = %v, want 1", n)
	}
	c.mu.Lock()
	inFlight := len(c.refreshing)
	c.mu.Unlock()
	if inFlight != 0 {
		t.Errorf("%d keys still marked in flight after every refresh ended", inFlight)
	}
	checkIndex(t, c)
}

// TestRefreshCap: past MaxRefreshes in flight a hit is served without a
// refresh, counted as skipped; once they end refreshes start again.
func TestRefreshCap(t *testing.T) {
	t.Parallel()
	r := newBlockingRefresher(t, MaxRefreshes+2)
	clk := newClock()
	m := metrics.New()
	c := New(Options{TTL: ttl, Metrics: m, Now: clk.now, Refresh: r.refresh})
	c.Reset()
	tokens := make([]string, MaxRefreshes+1)
	for i := range tokens {
		tokens[i] = fmt.Sprint("t", i)
		fetch(c, request(tokens[i], "s"), allowed(tokens[i], time.Time{}))
	}
	clk.advance(ttl / RefreshAfterDivisor)
	for _, tok := range tokens {
		if !fetch(c, request(tok, "s"), nil) {
			t.Fatalf("%s: a hit past the refresh point was not served", tok)
		}
	}
	c.mu.Lock()
	inFlight := len(c.refreshing)
	c.mu.Unlock()
	if inFlight != MaxRefreshes {
		t.Errorf("%d refreshes in flight, want MaxRefreshes = %d", inFlight, MaxRefreshes)
	}
	if n := counter(t, m, "mcp_gateway_decision_cache_refreshes_total", "skipped"); n != 1 {
		t.Errorf("refreshes{skipped} = %v, want 1", n)
	}
	for range MaxRefreshes {
		r.next(t)
	}
	r.releaseAll()
	c.refreshWG.Wait()
	// The skipped decision waits TTL/4 like a failed one, then refreshes.
	clk.advance(ttl / RefreshRetryDivisor)
	fetchSettled(c, request(tokens[MaxRefreshes], "s"), nil)
	if n := r.calls.Load(); n != MaxRefreshes+1 {
		t.Errorf("after the others ended: %d refreshes, want %d", n, MaxRefreshes+1)
	}
	checkIndex(t, c)
}

// openStream is a Stream that sends a reset and then waits for its context.
type openStream struct {
	ctx  context.Context
	sent bool
}

func (s *openStream) Recv() (*authzv1.WatchInvalidationsResponse, error) {
	if !s.sent {
		s.sent = true
		return &authzv1.WatchInvalidationsResponse{Reset_: true}, nil
	}
	<-s.ctx.Done()
	return nil, s.ctx.Err()
}

// TestWatchEndsRefreshes: a refresh runs under Watch's context, not a
// request's, and Watch returns only once it has ended; the refresh's failure
// logs no token.
func TestWatchEndsRefreshes(t *testing.T) {
	t.Parallel()
	var logs strings.Builder
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	var ended atomic.Bool
	started := make(chan struct{})
	refresh := func(ctx context.Context, _ *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) {
		close(started)
		<-ctx.Done()
		// Slow to wind down, so that a Watch that does not wait returns first.
		time.Sleep(50 * time.Millisecond)
		ended.Store(true)
		return nil, fmt.Errorf("asking authz: %w", ctx.Err())
	}
	clk := newClock()
	c := New(Options{TTL: ttl, Now: clk.now, Refresh: refresh, Logger: logger})
	ctx, cancel := context.WithCancel(t.Context())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		c.Watch(ctx, func(ctx context.Context) (Stream, error) { return &openStream{ctx: ctx}, nil })
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !c.Up() {
		if time.Now().After(deadline) {
			t.Fatal("the cache is not up 5s after Watch started")
		}
		time.Sleep(time.Millisecond)
	}
	const token = "secret-token-value-0987654321"
	fetch(c, request(token, "s"), allowed("x", time.Time{})) // its token_ref is ref-x
	clk.advance(ttl / RefreshAfterDivisor)
	fetch(c, request(token, "s"), nil)
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("no refresh started")
	}
	cancel()
	select {
	case <-watched:
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return 5s after its context ended")
	}
	if !ended.Load() {
		t.Error("Watch returned before the refresh in flight ended")
	}
	logMu.Lock()
	defer logMu.Unlock()
	if !strings.Contains(logs.String(), "decision refresh failed") {
		t.Errorf("the failed refresh was not logged: %s", logs.String())
	}
	if strings.Contains(logs.String(), token) {
		t.Errorf("the logs hold the raw token: %s", logs.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestLogsShortTokenRef: the cache's log lines name a token as every service
// does (internal/tokenref: 12 hex digits of its token_ref), never by the whole
// token_ref authz sent, which is its cache key.
func TestLogsShortTokenRef(t *testing.T) {
	t.Parallel()
	const ref = "3f9a0c7e5b1d2f4a6c8e0b2d4f6a8c0e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f1a"
	logs := &testenv.LogBuffer{}
	clk := newClock()
	c := New(Options{
		TTL:    ttl,
		Now:    clk.now,
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Refresh: func(context.Context, *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) {
			return nil, errUnavailable
		},
	})
	c.Reset()
	res := allowed("a", time.Time{})
	res.TokenRef = ref
	fetch(c, request("a", "s"), res)
	clk.advance(ttl / RefreshAfterDivisor)
	fetchSettled(c, request("a", "s"), nil) // a refresh that fails
	c.logInvalidation(t.Context(), ref)

	refs := map[string]any{}
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		refs[m["msg"].(string)] = m[tokenref.Key]
	}
	want := ref[:tokenref.LogLen]
	for _, msg := range []string{"decision refresh failed; the decision expires as usual", "token invalidated"} {
		if got := refs[msg]; got != want {
			t.Errorf("%q logs token_ref %v, want %q", msg, got, want)
		}
	}
	if strings.Contains(logs.String(), ref) {
		t.Errorf("the logs hold a whole token_ref: %s", logs.String())
	}
}
