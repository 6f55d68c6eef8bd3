package tokencache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/admission"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/introspect"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/rediscache"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/tokeninfo"
)

// countingFetcher wraps a fakeFetcher and counts calls per token.
type countingFetcher struct {
	*fakeFetcher
	mu  sync.Mutex
	per map[string]int
}

func (f *countingFetcher) Introspect(ctx context.Context, token string) ([]byte, *tokeninfo.Result, error) {
	f.mu.Lock()
	f.per[token]++
	f.mu.Unlock()
	return f.fakeFetcher.Introspect(ctx, token)
}

func (f *countingFetcher) of(token string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.per[token]
}

func newStore(t *testing.T, rd *testenv.Redis) *rediscache.Store {
	t.Helper()
	s, err := rediscache.New(rd.URL(), rediscache.Options{OpTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// startLookup looks tok up in the background; the returned channel yields its
// error.
func startLookup(ctx context.Context, c *Cache, tok string) <-chan error {
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.Lookup(ctx, tok)
		errc <- err
	}()
	return errc
}

// TestInvalidatingOtherTokensKeepsCaching: InvalidateToken calls for other tokens
// while a token is being introspected do not stop its result from being cached.
// (One global epoch used to make every fetch that overlapped any invalidation
// uncacheable: callers sending random tokens to InvalidateToken turned caching
// off for everyone.)
func TestInvalidatingOtherTokensKeepsCaching(t *testing.T) {
	t.Parallel()
	for _, withRedis := range []bool{false, true} {
		t.Run(fmt.Sprintf("redis=%v", withRedis), func(t *testing.T) {
			t.Parallel()
			clk := &clock{}
			clk.t.Store(time.Now().UnixNano())
			f := &fakeFetcher{reply: activeUntil(time.Now().Add(time.Hour).Unix()), gate: make(chan struct{})}
			var store *rediscache.Store
			if withRedis {
				store = newStore(t, testenv.StartRedis(t))
			}
			c := newCache(t, f, clk, func(o *Options) { o.Store = store })
			done := startLookup(t.Context(), c, "good")
			eventually(t, func() bool { return f.calls.Load() == 1 })
			for i := range 20 {
				if err := c.Invalidate(t.Context(), fmt.Sprintf("random-%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			close(f.gate) // this answer, and any later one
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if _, tier := lookup(t, c, "good"); tier != TierL1 {
				t.Errorf("tier %v, want L1: invalidations of other tokens kept the result out of the cache", tier)
			}
			if store != nil {
				noL1 := newCache(t, f, clk, func(o *Options) { o.Store, o.L1Max = store, 0 })
				if _, tier := lookup(t, noL1, "good"); tier != TierL2 {
					t.Errorf("another replica's tier %v, want L2", tier)
				}
			}
			if n := f.calls.Load(); n != 1 {
				t.Errorf("introspections = %d, want 1", n)
			}
		})
	}
}

// TestResetDuringFetch: a reset (invalidations may have been missed) keeps every
// fetch in flight from storing its result.
func TestResetDuringFetch(t *testing.T) {
	t.Parallel()
	clk := &clock{}
	clk.t.Store(time.Now().UnixNano())
	f := &fakeFetcher{reply: activeUntil(time.Now().Add(time.Hour).Unix()), gate: make(chan struct{})}
	c := newCache(t, f, clk, nil)
	done := startLookup(t.Context(), c, "t")
	eventually(t, func() bool { return f.calls.Load() == 1 })
	c.reset()
	close(f.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, tier := lookup(t, c, "t"); tier != TierOrigin {
		t.Fatalf("tier %v: a result fetched across a reset was cached", tier)
	}
}

// TestInvalidationBeatsLateL2Write: replica b introspects a token just before it
// is revoked; replica a invalidates it; b's result arrives after that (and b has
// not heard of the invalidation yet). b must not put the revoked result in Redis,
// where every other replica would use it until CACHE_TTL.
func TestInvalidationBeatsLateL2Write(t *testing.T) {
	t.Parallel()
	rd := testenv.StartRedis(t)
	clk := &clock{}
	clk.t.Store(time.Now().UnixNano())
	f := &fakeFetcher{reply: activeUntil(time.Now().Add(time.Hour).Unix()), gate: make(chan struct{})}
	a := newCache(t, f, clk, func(o *Options) { o.Store = newStore(t, rd) })
	// b does not Run, so it never hears a's invalidation: the message is late.
	b := newCache(t, f, clk, func(o *Options) { o.Store = newStore(t, rd) })
	other := newCache(t, f, clk, func(o *Options) { o.Store, o.L1Max = newStore(t, rd), 0 })

	done := startLookup(t.Context(), b, "t")
	eventually(t, func() bool { return f.calls.Load() == 1 })
	if err := a.Invalidate(t.Context(), "t"); err != nil {
		t.Fatal(err)
	}
	close(f.gate) // b's answer, from before the revocation, arrives
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, tier := lookup(t, other, "t"); tier != TierOrigin {
		t.Fatalf("another replica answered from tier %v, want a new introspection: the pre-revocation result reached Redis after the invalidation", tier)
	}
}

// TestAbandonedMissDoesNotIntrospect: a miss waiting for an introspection slot
// whose caller goes away never reaches the authorization server, even when a
// slot frees later.
func TestAbandonedMissDoesNotIntrospect(t *testing.T) {
	t.Parallel()
	clk := &clock{}
	clk.t.Store(time.Now().UnixNano())
	f := &countingFetcher{fakeFetcher: &fakeFetcher{reply: activeUntil(time.Now().Add(time.Hour).Unix()), gate: make(chan struct{})}, per: map[string]int{}}
	lim, err := admission.New(admission.Options{Max: 1, Wait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	c := newCache(t, f, clk, func(o *Options) { o.Limiter = lim })

	holder := startLookup(t.Context(), c, "holder") // takes the only slot
	eventually(t, func() bool { return f.of("holder") == 1 })
	ctx, cancel := context.WithCancel(t.Context())
	gone := startLookup(ctx, c, "gone")
	eventually(t, func() bool { return c.flights.Len() == 2 })
	cancel()
	if err := <-gone; !errors.Is(err, context.Canceled) {
		t.Fatalf("Lookup of the abandoned token = %v, want context.Canceled", err)
	}
	f.gate <- struct{}{}
	if err := <-holder; err != nil {
		t.Fatal(err)
	}
	// Were the abandoned fetch still alive, it would now take the free slot and
	// introspect at once.
	time.Sleep(50 * time.Millisecond)
	if n := f.of("gone"); n != 0 {
		t.Fatalf("the abandoned token was introspected %d times, want 0", n)
	}
}

// TestBusy: with every slot taken for longer than the wait, a miss fails fast
// with admission.ErrBusy, which is not a statement about the token, and a cached
// token is still answered.
func TestBusy(t *testing.T) {
	t.Parallel()
	clk := &clock{}
	clk.t.Store(time.Now().UnixNano())
	f := &countingFetcher{fakeFetcher: &fakeFetcher{reply: activeUntil(time.Now().Add(time.Hour).Unix()), gate: make(chan struct{})}, per: map[string]int{}}
	lim, err := admission.New(admission.Options{Max: 1, Wait: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c := newCache(t, f, clk, func(o *Options) { o.Limiter = lim })
	go func() { f.gate <- struct{}{} }()
	lookup(t, c, "cached")

	holder := startLookup(t.Context(), c, "holder")
	eventually(t, func() bool { return f.of("holder") == 1 })
	_, _, err = c.Lookup(t.Context(), "refused")
	if !errors.Is(err, admission.ErrBusy) || errors.Is(err, introspect.ErrUnavailable) {
		t.Fatalf("Lookup with no free slot = %v, want admission.ErrBusy", err)
	}
	if _, tier := lookup(t, c, "cached"); tier != TierL1 {
		t.Errorf("cached token: tier %v, want L1", tier)
	}
	f.gate <- struct{}{}
	if err := <-holder; err != nil {
		t.Fatal(err)
	}
	if n := f.of("refused"); n != 0 {
		t.Errorf("refused token introspected %d times", n)
	}
}
