package tokencache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/internal/tokenref"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/introspect"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/metrics"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/tokeninfo"
)

// fakeFetcher answers from a function of the token and counts calls.
type fakeFetcher struct {
	calls atomic.Int64
	reply func(token string) (string, error)
	gate  chan struct{} // if set, each call waits for a value
}

func (f *fakeFetcher) Endpoint() string { return "https://as.example/oauth/2.1/introspect" }

func (f *fakeFetcher) Introspect(_ context.Context, token string) ([]byte, *tokeninfo.Result, error) {
	f.calls.Add(1)
	if f.gate != nil {
		<-f.gate
	}
	body, err := f.reply(token)
	if err != nil {
		return nil, nil, err
	}
	r, err := introspect.Parse([]byte(body))
	if err != nil {
		return nil, nil, err
	}
	return []byte(body), r, nil
}

type clock struct{ t atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(0, c.t.Load()) }
func (c *clock) add(d time.Duration) { c.t.Add(int64(d)) }

func newCache(t testing.TB, f Fetcher, clk *clock, mod func(*Options)) *Cache {
	t.Helper()
	o := Options{Fetcher: f, L1Max: 1000, CacheTTL: time.Minute, NegativeTTL: 10 * time.Second, Metrics: metrics.New(), Now: clk.now}
	if mod != nil {
		mod(&o)
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func activeUntil(exp int64) func(string) (string, error) {
	return func(string) (string, error) {
		return fmt.Sprintf(`{"active":true,"sub":"u","aud":"https://r","exp":%d}`, exp), nil
	}
}

func lookup(t *testing.T, c *Cache, tok string) (*tokeninfo.Result, Tier) {
	t.Helper()
	r, tier, err := c.Lookup(t.Context(), tok)
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	return r, tier
}

func TestTTLNeverPastExp(t *testing.T) {
	t.Parallel()
	var clk clock
	clk.t.Store(time.Unix(1_800_000_000, 0).UnixNano())
	f := &fakeFetcher{reply: activeUntil(1_800_000_010)} // exp in 10s, CACHE_TTL 60s
	c := newCache(t, f, &clk, nil)
	if _, tier := lookup(t, c, "t"); tier != TierOrigin {
		t.Fatalf("first lookup tier %v", tier)
	}
	clk.add(9 * time.Second)
	if _, tier := lookup(t, c, "t"); tier != TierL1 {
		t.Fatalf("lookup before exp: tier %v, want L1", tier)
	}
	clk.add(2 * time.Second)
	if _, tier := lookup(t, c, "t"); tier != TierOrigin {
		t.Fatalf("lookup after exp: tier %v, want a new introspection", tier)
	}
}

func TestTTLBoundedByCacheTTL(t *testing.T) {
	t.Parallel()
	var clk clock
	clk.t.Store(time.Unix(1_800_000_000, 0).UnixNano())
	f := &fakeFetcher{reply: activeUntil(1_800_086_400)}
	c := newCache(t, f, &clk, nil)
	lookup(t, c, "t")
	clk.add(59 * time.Second)
	lookup(t, c, "t")
	clk.add(2 * time.Second)
	lookup(t, c, "t")
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("introspections = %d, want 2 (CACHE_TTL bounds reuse)", n)
	}
}

// TestUntil: every tier answers with the same end of the cached result's life,
// CACHE_TTL after the introspection or the token's exp if sooner, and a
// result that was not cached has none.
func TestUntil(t *testing.T) {
	t.Parallel()
	rd := testenv.StartRedis(t)
	store := newStore(t, rd)
	clk := &clock{}
	start := time.Now().Truncate(time.Millisecond) // L2 keeps milliseconds
	clk.t.Store(start.UnixNano())
	f := &fakeFetcher{reply: func(tok string) (string, error) {
		if tok == "short" {
			return fmt.Sprintf(`{"active":true,"sub":"u","exp":%d}`, start.Add(10*time.Second).Unix()), nil
		}
		return fmt.Sprintf(`{"active":true,"sub":"u","exp":%d}`, start.Add(time.Hour).Unix()), nil
	}}
	a := newCache(t, f, clk, func(o *Options) { o.Store = store })
	b := newCache(t, f, clk, func(o *Options) { o.Store = store }) // another replica
	check := func(c *Cache, tok string, tier Tier, until time.Time) {
		t.Helper()
		got, err := c.LookupKeyed(t.Context(), c.Key(tok), tok)
		if err != nil {
			t.Fatal(err)
		}
		if got.Tier != tier || !got.Until.Equal(until) {
			t.Fatalf("%s: tier %v, until %v; want %v, %v", tok, got.Tier, got.Until, tier, until)
		}
	}
	check(a, "long", TierOrigin, start.Add(time.Minute))
	check(a, "short", TierOrigin, time.Unix(start.Add(10*time.Second).Unix(), 0))
	clk.add(5 * time.Second)
	check(a, "long", TierL1, start.Add(time.Minute))
	check(b, "long", TierL2, start.Add(time.Minute))
	check(b, "long", TierL1, start.Add(time.Minute))
	check(b, "short", TierL2, time.Unix(start.Add(10*time.Second).Unix(), 0))

	// Invalidated while being introspected: answered, not cached, no Until.
	g := &fakeFetcher{reply: f.reply, gate: make(chan struct{})}
	c := newCache(t, g, clk, nil)
	done := make(chan Found, 1)
	go func() {
		got, _ := c.LookupKeyed(context.Background(), c.Key("t"), "t")
		done <- got
	}()
	for g.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := c.Invalidate(t.Context(), "t"); err != nil {
		t.Fatal(err)
	}
	g.gate <- struct{}{}
	if got := <-done; got.Result == nil || !got.Until.IsZero() {
		t.Fatalf("lookup across an invalidation: result %v, until %v; want a result and no Until", got.Result != nil, got.Until)
	}
}

func TestNegativeCaching(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		reply       string
		negativeTTL time.Duration
		wantCalls   int64
	}{
		{"inactive cached", `{"active":false}`, 10 * time.Second, 1},
		{"expired at introspection cached", `{"active":true,"exp":1000}`, 10 * time.Second, 1},
		{"negative caching off", `{"active":false}`, 0, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var clk clock
			clk.t.Store(time.Unix(1_800_000_000, 0).UnixNano())
			f := &fakeFetcher{reply: func(string) (string, error) { return tt.reply, nil }}
			c := newCache(t, f, &clk, func(o *Options) { o.NegativeTTL = tt.negativeTTL })
			for range 3 {
				lookup(t, c, "t")
				clk.add(time.Second)
			}
			if n := f.calls.Load(); n != tt.wantCalls {
				t.Errorf("introspections = %d, want %d", n, tt.wantCalls)
			}
			clk.add(tt.negativeTTL + time.Second)
			lookup(t, c, "t")
			if n := f.calls.Load(); n != tt.wantCalls+1 {
				t.Errorf("after NEGATIVE_CACHE_TTL: introspections = %d, want %d", n, tt.wantCalls+1)
			}
		})
	}
}

// TestPastExpWithinSkew: an active result whose exp has just passed is still
// allowed by the decision (CLOCK_SKEW) but is not cached, so the authorization
// server's next answer (inactive) counts at once instead of NEGATIVE_CACHE_TTL
// later; past the skew the result is final (expired) and cached.
func TestPastExpWithinSkew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		expAgo    int64
		wantCalls int64
	}{
		{"within the skew: not cached", 1, 3},
		{"beyond the skew: cached", 60, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var clk clock
			clk.t.Store(time.Unix(1_800_000_000, 0).UnixNano())
			f := &fakeFetcher{reply: activeUntil(1_800_000_000 - tt.expAgo)}
			c := newCache(t, f, &clk, func(o *Options) { o.ClockSkew = 30 * time.Second })
			for range 3 {
				if r, _ := lookup(t, c, "t"); !r.Active {
					t.Fatal("result not active")
				}
				clk.add(100 * time.Millisecond)
			}
			if n := f.calls.Load(); n != tt.wantCalls {
				t.Errorf("introspections = %d, want %d", n, tt.wantCalls)
			}
		})
	}
}

func TestErrorsAreNotCached(t *testing.T) {
	t.Parallel()
	var clk clock
	fail := atomic.Bool{}
	fail.Store(true)
	f := &fakeFetcher{reply: func(string) (string, error) {
		if fail.Load() {
			return "", &introspect.Error{Kind: introspect.KindStatus5xx, Err: errors.New("boom")}
		}
		return `{"active":true}`, nil
	}}
	c := newCache(t, f, &clk, nil)
	if _, _, err := c.Lookup(t.Context(), "t"); !errors.Is(err, introspect.ErrUnavailable) {
		t.Fatalf("Lookup error = %v, want ErrUnavailable", err)
	}
	fail.Store(false)
	if _, tier := lookup(t, c, "t"); tier != TierOrigin {
		t.Fatalf("tier %v after a failure, want a new introspection", tier)
	}
}

// TestInvalidationDuringFetch: a fetch that started before InvalidateToken must not
// put its (possibly revoked) result in the cache.
func TestInvalidationDuringFetch(t *testing.T) {
	t.Parallel()
	var clk clock
	f := &fakeFetcher{reply: activeUntil(time.Now().Add(time.Hour).Unix()), gate: make(chan struct{})}
	c := newCache(t, f, &clk, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _, _ = c.Lookup(context.Background(), "t")
	}()
	for f.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := c.Invalidate(t.Context(), "t"); err != nil {
		t.Fatal(err)
	}
	f.gate <- struct{}{}
	<-done
	go func() { f.gate <- struct{}{} }()
	if _, tier := lookup(t, c, "t"); tier != TierOrigin {
		t.Fatalf("tier %v: the result fetched across an invalidation was cached", tier)
	}
}

// TestWaiterGivesUp: a caller whose context ends gets its error at once, and the
// fetch still completes for the others.
func TestWaiterGivesUp(t *testing.T) {
	t.Parallel()
	var clk clock
	f := &fakeFetcher{reply: activeUntil(time.Now().Add(time.Hour).Unix()), gate: make(chan struct{})}
	c := newCache(t, f, &clk, nil)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.Lookup(ctx, "t")
		errc <- err
	}()
	for f.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Lookup error = %v, want context.Canceled", err)
	}
	f.gate <- struct{}{}
	eventually(t, func() bool { return c.L1Len() == 1 })
	if _, tier := lookup(t, c, "t"); tier != TierL1 {
		t.Fatalf("tier %v, want the abandoned fetch's result in L1", tier)
	}
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, 2*time.Second, "the condition", cond)
}

func TestL2(t *testing.T) {
	t.Parallel()
	rd := testenv.StartRedis(t)
	store := newStore(t, rd)
	clk := &clock{}
	clk.t.Store(time.Now().UnixNano())
	exp := time.Now().Add(time.Hour).Unix()
	f := &fakeFetcher{reply: activeUntil(exp)}
	// Without L1 every lookup reads Redis.
	a := newCache(t, f, clk, func(o *Options) { o.Store, o.L1Max = store, 0 })
	lookup(t, a, "t")
	for range 3 {
		if _, tier := lookup(t, a, "t"); tier != TierL2 {
			t.Fatalf("tier %v, want L2", tier)
		}
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("introspections = %d, want 1", n)
	}
	ttl, err := rd.Do(t.Context(), "TTL", DefaultKeyPrefix+hex.EncodeToString(func() []byte { k := a.Key("t"); return k[:] }()))
	if err != nil || ttl != ":60" && ttl != ":59" {
		t.Errorf("Redis TTL = %q, %v; want CACHE_TTL (60s)", ttl, err)
	}
	// An undecodable entry is a miss, not an error.
	k := a.Key("garbled")
	if _, err := rd.Do(t.Context(), "SET", DefaultKeyPrefix+hex.EncodeToString(k[:]), "not-a-cache-entry"); err != nil {
		t.Fatal(err)
	}
	if _, tier := lookup(t, a, "garbled"); tier != TierOrigin {
		t.Errorf("garbled L2 entry: tier %v, want introspection", tier)
	}
}

// TestL1BytesPerToken measures the in-process memory of cached tokens: 100,000
// realistic PropelAuth introspection results through the real insertion path. The
// target is under 1 KiB per token.
func TestL1BytesPerToken(t *testing.T) {
	if testing.Short() {
		t.Skip("fills the cache with 100,000 tokens: go test without -short runs it")
	}
	perToken := measureL1(t, 100_000)
	t.Logf("L1: %.0f bytes per cached token", perToken)
	if perToken >= 1024 {
		t.Errorf("L1 uses %.0f bytes per cached token, want < 1024", perToken)
	}
}

func BenchmarkL1BytesPerToken(b *testing.B) {
	var perToken float64
	for range b.N {
		perToken = measureL1(b, 100_000)
	}
	b.ReportMetric(perToken, "bytes/token")
}

func measureL1(tb testing.TB, n int) float64 {
	tb.Helper()
	exp := time.Now().Add(time.Hour).Unix()
	f := &fakeFetcher{reply: func(tok string) (string, error) {
		// A devauth/PropelAuth-shaped reply with a distinct subject and client per
		// token, as real traffic has.
		return fmt.Sprintf(`{"active":true,"sub":"%s","client_id":"%s","scope":"read:user_data read:org_data","exp":%d,"iat":%d,"aud":"http://127.0.0.1:8000/mcp","iss":"http://localhost:9000/oauth/2.1"}`,
			uuidLike(tok[:16]), tok[16:48], exp, exp-3600), nil
	}}
	clk := &clock{}
	clk.t.Store(time.Now().UnixNano())
	tokens := make([]string, n)
	for i := range tokens {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		tokens[i] = hex.EncodeToString(b)
	}
	// Headroom: shards fill unevenly, and evictions would hide entries.
	c := newCache(tb, f, clk, func(o *Options) { o.L1Max = n * 5 / 4 })
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ctx := context.Background()
	for _, tok := range tokens {
		if _, _, err := c.Lookup(ctx, tok); err != nil {
			tb.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if c.L1Len() != n {
		tb.Fatalf("L1 holds %d entries, want %d", c.L1Len(), n)
	}
	runtime.KeepAlive(c)
	runtime.KeepAlive(tokens)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

func uuidLike(s string) string {
	h := hex.EncodeToString([]byte(s))
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func TestConcurrentLookupsOneFetch(t *testing.T) {
	t.Parallel()
	clk := &clock{}
	clk.t.Store(time.Now().UnixNano())
	f := &fakeFetcher{reply: activeUntil(time.Now().Add(time.Hour).Unix()), gate: make(chan struct{})}
	c := newCache(t, f, clk, nil)
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() { lookup(t, c, "t") })
	}
	eventually(t, func() bool { return f.calls.Load() == 1 })
	time.Sleep(20 * time.Millisecond)
	close(f.gate)
	wg.Wait()
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("introspections = %d, want 1", n)
	}
}

// TestLogsNameTokensByTokenRef: a log line about a token names it as every
// service does (tokenref), by the start of the token_ref an AuthorizeResponse
// carries, so an operator can join it with the caller's logs; the token itself
// never appears.
func TestLogsNameTokensByTokenRef(t *testing.T) {
	t.Parallel()
	var clk clock
	f := &fakeFetcher{reply: func(string) (string, error) {
		return "", &introspect.Error{Kind: introspect.KindStatus5xx, Err: errors.New("boom")}
	}}
	var logs testenv.LogBuffer
	c := newCache(t, f, &clk, func(o *Options) {
		o.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	})
	const tok = "tok-logged-by-ref"
	if _, _, err := c.Lookup(t.Context(), tok); !errors.Is(err, introspect.ErrUnavailable) {
		t.Fatalf("Lookup error = %v, want ErrUnavailable", err)
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(logs.String()), &line); err != nil {
		t.Fatalf("log %q: %v", logs.String(), err)
	}
	if got, want := line[tokenref.Key], tokenref.Short(FullRef(c.Key(tok))); got != want {
		t.Errorf("%s = %v, want %q (the start of the token_ref)", tokenref.Key, got, want)
	}
	if strings.Contains(logs.String(), tok) {
		t.Errorf("the log holds the token: %s", logs.String())
	}
}
