package ratelimit

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/metrics"
)

func TestParseRate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Limit
		wantErr bool
	}{
		{"", Limit{}, false},
		{"0", Limit{}, false},
		{"off", Limit{}, false},
		{"OFF", Limit{}, false},
		{"0/s", Limit{}, false},
		{"600", Limit{600, time.Minute, 600}, false},
		{"600/m", Limit{600, time.Minute, 600}, false},
		{" 10 / s ", Limit{10, time.Second, 10}, false},
		{"36000/h", Limit{36000, time.Hour, 36000}, false},
		{"1000000000/s", Limit{MaxCount, time.Second, MaxCount}, false},
		{"1000000001/s", Limit{}, true},
		{"-1/m", Limit{}, true},
		{"10/d", Limit{}, true},
		{"10/", Limit{}, true},
		{"ten/m", Limit{}, true},
		{"1.5/s", Limit{}, true},
		{"/m", Limit{}, true},
		{"10/m/s", Limit{}, true},
	}
	for _, tt := range tests {
		got, err := ParseRate(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseRate(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseRate(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"", "600/m", "10/s", "1/h", "x", "9999999999999999999/s", "5/ m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseRate(s)
		if err != nil {
			return
		}
		if l.Enabled() && (l.Count < 1 || l.Count > MaxCount || l.Burst != l.Count || l.Period < time.Second) {
			t.Errorf("ParseRate(%q) = %+v: out of range", s, l)
		}
		if !l.Enabled() && l != (Limit{}) {
			t.Errorf("ParseRate(%q) = %+v: disabled but not zero", s, l)
		}
	})
}

func TestKey(t *testing.T) {
	t.Parallel()
	a, b := Key("sub:alice-id"), Key("sub:bob-id")
	if a == b || a != Key("sub:alice-id") {
		t.Errorf("keys not distinct or not stable: %s %s", a, b)
	}
	if strings.Contains(a, "alice") || len(a) != len("mcp-gateway:")+32 {
		t.Errorf("Key = %q: want mcp-gateway: and 32 hex digits, no identifier", a)
	}
}

// fakeClock is a settable clock for the in-process limiter.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestLocalGCRA(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	m := metrics.New()
	l, err := New(Options{Limit: Limit{Count: 60, Period: time.Minute, Burst: 3}, Now: clock.Now, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := t.Context()
	for i := range 3 {
		if r := l.Allow(ctx, "sub:alice"); !r.Allowed {
			t.Fatalf("request %d of the burst refused: %+v", i+1, r)
		}
	}
	r := l.Allow(ctx, "sub:alice")
	if r.Allowed || r.RetryAfter != time.Second {
		t.Fatalf("4th request = %+v, want refused with RetryAfter 1s (one per second)", r)
	}
	if !l.Allow(ctx, "sub:bob").Allowed {
		t.Error("another principal shares alice's budget")
	}
	clock.Add(400 * time.Millisecond)
	if r := l.Allow(ctx, "sub:alice"); r.Allowed || r.RetryAfter != 600*time.Millisecond {
		t.Errorf("after 400ms: %+v, want refused with RetryAfter 600ms", r)
	}
	clock.Add(600 * time.Millisecond)
	if r := l.Allow(ctx, "sub:alice"); !r.Allowed {
		t.Errorf("after the retry delay: %+v, want allowed", r)
	}
	if r := l.Allow(ctx, "sub:alice"); r.Allowed {
		t.Errorf("right after: %+v, want refused (one per second)", r)
	}
	clock.Add(time.Hour)
	for i := range 3 {
		if r := l.Allow(ctx, "sub:alice"); !r.Allowed {
			t.Fatalf("after an idle hour, request %d of a new burst refused", i+1)
		}
	}
}

func TestLocalMemoryBounded(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	l, err := New(Options{Limit: Limit{Count: 1, Period: time.Hour, Burst: 1}, Now: clock.Now, MaxLocalKeys: 100})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		if !l.Allow(t.Context(), "sub:"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+string(rune(i))).Allowed {
			t.Fatalf("first request of principal %d refused", i)
		}
	}
	if n := l.local.tat.Len(); n > 100 {
		t.Errorf("in-process state holds %d keys, want at most MaxLocalKeys (100)", n)
	}
}

// TestLocalStateSurvivesChurn: a principal over its limit stays limited while
// many other principals pass through a full in-process table: its state is in
// use, and making room evicts state not used lately instead.
func TestLocalStateSurvivesChurn(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	l, err := New(Options{Limit: Limit{Count: 1, Period: time.Hour, Burst: 1}, Now: clock.Now, MaxLocalKeys: 100})
	if err != nil {
		t.Fatal(err)
	}
	if !l.Allow(t.Context(), "sub:busy").Allowed {
		t.Fatal("first request refused")
	}
	for i := range 100 {
		if l.Allow(t.Context(), "sub:busy").Allowed {
			t.Fatalf("a principal over its limit was allowed again after %d other principals", i*10)
		}
		for j := range 10 {
			l.Allow(t.Context(), fmt.Sprint("sub:passing-", i, "-", j))
		}
	}
}

func TestNewRejects(t *testing.T) {
	t.Parallel()
	if _, err := New(Options{}); err == nil {
		t.Error("New with no limit succeeded")
	}
	if _, err := New(Options{Limit: Limit{Count: 1, Period: time.Second, Burst: 1}, RedisURL: "http://x"}); err == nil {
		t.Error("New with a bad REDIS_URL succeeded")
	}
}

// TestRedisShared: two limiters (two replicas) on one Redis share each
// principal's budget; principals are independent; Retry-After is sane; Redis
// holds only hashed keys.
func TestRedisShared(t *testing.T) {
	t.Parallel()
	rd := testenv.StartRedis(t)
	lim := Limit{Count: 6, Period: time.Minute, Burst: 4}
	mk := func() (*Limiter, *metrics.Metrics) {
		m := metrics.New()
		l, err := New(Options{Limit: lim, RedisURL: rd.URL(), Metrics: m})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l, m
	}
	a, ma := mk()
	b, mb := mk()
	ctx := t.Context()
	allowed := 0
	for i := range 8 {
		l := a
		if i%2 == 1 {
			l = b
		}
		r := l.Allow(ctx, "sub:alice")
		if r.Allowed {
			allowed++
			continue
		}
		// One request per 10s; the shared budget of 4 is spent, so the next
		// slot is at most 10s away.
		if r.RetryAfter <= 0 || r.RetryAfter > 10*time.Second {
			t.Errorf("request %d: RetryAfter %v, want in (0, 10s]", i+1, r.RetryAfter)
		}
	}
	if allowed != 4 {
		t.Errorf("%d of 8 requests split over two replicas allowed, want the shared burst of 4", allowed)
	}
	if !b.Allow(ctx, "sub:bob").Allowed {
		t.Error("bob refused: principals are not independent")
	}
	for _, m := range []*metrics.Metrics{ma, mb} {
		if got := decisions(t, m, "limited", "redis"); got < 1 {
			t.Errorf("limited{store=redis} = %v, want >= 1", got)
		}
		if got := decisions(t, m, "allowed", "local"); got != 0 {
			t.Errorf("allowed{store=local} = %v with Redis up, want 0", got)
		}
	}

	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr})
	defer rdb.Close()
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"rate:" + Key("sub:alice"), "rate:" + Key("sub:bob")}
	if diff := cmp.Diff(want, keys, cmpSorted); diff != "" {
		t.Errorf("Redis keys (-want +got):\n%s", diff)
	}
}

// TestRedisDown: with Redis gone, requests are still decided (in process), the
// error is counted and logged once, and Redis is used again once it is back.
func TestRedisDown(t *testing.T) {
	t.Parallel()
	rd := testenv.StartRedis(t)
	m := metrics.New()
	var logs strings.Builder
	var logMu sync.Mutex
	l, err := New(Options{
		Limit:    Limit{Count: 600, Period: time.Minute, Burst: 600},
		RedisURL: rd.URL(),
		Metrics:  m,
		Logger:   newLogger(&logs, &logMu),
		Backoff:  50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := t.Context()
	if !l.Allow(ctx, "sub:alice").Allowed {
		t.Fatal("refused with Redis up")
	}
	rd.Stop()
	for i := range 20 {
		if r := l.Allow(ctx, "sub:alice"); !r.Allowed {
			t.Fatalf("request %d refused with Redis down: %+v", i+1, r)
		}
	}
	errs := redisErrors(t, m)
	if errs < 1 {
		t.Errorf("redis errors = %v, want >= 1", errs)
	}
	if got := decisions(t, m, "allowed", "local"); got < 20 {
		t.Errorf("allowed{store=local} = %v, want >= 20", got)
	}
	logMu.Lock()
	n := strings.Count(logs.String(), "redis unavailable")
	logMu.Unlock()
	if n != 1 {
		t.Errorf("%d outage log lines, want 1 (rate-limited)", n)
	}

	if err := rd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	before := decisions(t, m, "allowed", "redis")
	for decisions(t, m, "allowed", "redis") == before {
		if time.Now().After(deadline) {
			t.Fatal("Redis not used again within 5s of its restart")
		}
		l.Allow(ctx, "sub:alice")
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCanceledRequestDoesNotTripBackoff: a client going away is not a Redis
// failure.
func TestCanceledRequestDoesNotTripBackoff(t *testing.T) {
	t.Parallel()
	rd := testenv.StartRedis(t)
	m := metrics.New()
	l, err := New(Options{Limit: Limit{Count: 10, Period: time.Second, Burst: 10}, RedisURL: rd.URL(), Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	l.Allow(ctx, "sub:alice")
	if got := redisErrors(t, m); got != 0 {
		t.Errorf("redis errors = %v after a canceled request, want 0", got)
	}
}

// cmpSorted compares string slices regardless of order (KEYS has none).
var cmpSorted = cmp.Transformer("sorted", func(in []string) []string {
	out := slices.Clone(in)
	slices.Sort(out)
	return out
})

// lockedWriter serialises writes of concurrent log calls into one builder.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func newLogger(b *strings.Builder, mu *sync.Mutex) *slog.Logger {
	return slog.New(slog.NewJSONHandler(lockedWriter{mu, b}, nil))
}

// counter returns the value of the counter name whose labels include labels.
func counter(t *testing.T, m *metrics.Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, mt := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range mt.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			return mt.GetCounter().GetValue()
		}
	}
	return 0
}

func decisions(t *testing.T, m *metrics.Metrics, decision, store string) float64 {
	t.Helper()
	return counter(t, m, "mcp_gateway_rate_limit_decisions_total", map[string]string{"decision": decision, "store": store})
}

func redisErrors(t *testing.T, m *metrics.Metrics) float64 {
	t.Helper()
	return counter(t, m, "mcp_gateway_rate_limit_redis_errors_total", nil)
}
