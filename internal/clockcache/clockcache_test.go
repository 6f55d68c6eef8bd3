package clockcache

import (
	"crypto/sha256"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type digest = [32]byte

func key(i int) digest { return sha256.Sum256(fmt.Appendf(nil, "k%d", i)) }

// clock is a settable test clock.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) now() time.Time                  { return time.Unix(0, c.ns.Load()) }
func (c *clock) after(d time.Duration) time.Time { return c.now().Add(d) }
func (c *clock) advance(d time.Duration)         { c.ns.Add(int64(d)) }

func newCache[V any](tb testing.TB, max int, clk *clock) *Cache[digest, V] {
	tb.Helper()
	c := New(Options[digest, V]{MaxEntries: max, Now: clk.now, Hash: DigestHash})
	if c == nil {
		tb.Fatal("New returned nil")
	}
	return c
}

func TestGetSetExpiry(t *testing.T) {
	t.Parallel()
	clk := newClock()
	c := newCache[string](t, 10, clk)
	c.Set(key(1), "a", clk.after(time.Second))
	if v, ok := c.Get(key(1)); !ok || v != "a" {
		t.Fatalf("Get = %q, %v; want a, true", v, ok)
	}
	if _, ok := c.Get(key(2)); ok {
		t.Fatal("a missing key was found")
	}
	c.Set(key(1), "b", clk.after(2*time.Second))
	if v, _ := c.Get(key(1)); v != "b" {
		t.Fatalf("after overwrite Get = %q, want b", v)
	}
	if v, until, ok := c.GetUntil(key(1)); !ok || v != "b" || !until.Equal(clk.after(2*time.Second)) {
		t.Fatalf("GetUntil = %q, %v, %v; want b, %v, true", v, until, ok, clk.after(2*time.Second))
	}
	if _, until, ok := c.GetUntil(key(2)); ok || !until.IsZero() {
		t.Fatalf("GetUntil of a missing key = %v, %v; want the zero time, false", until, ok)
	}
	clk.advance(2*time.Second - 1)
	if _, ok := c.Get(key(1)); !ok {
		t.Fatal("gone a nanosecond before its expiry")
	}
	clk.advance(1)
	if _, ok := c.Get(key(1)); ok {
		t.Fatal("returned at its expiry")
	}
	if _, _, ok := c.GetUntil(key(1)); ok {
		t.Fatal("GetUntil returned it at its expiry")
	}
	c.Delete(key(1))
	c.Delete(key(1))
	if n := c.Len(); n != 0 {
		t.Fatalf("Len = %d after Delete, want 0", n)
	}
}

// TestNeverPastExpiry: an expiry that is not ahead stores nothing and deletes
// what the key held; a shortened expiry counts from when it was set.
func TestNeverPastExpiry(t *testing.T) {
	t.Parallel()
	clk := newClock()
	c := newCache[string](t, 10, clk)
	for _, exp := range []time.Time{clk.now(), clk.after(-time.Hour), {}} {
		if !c.Set(key(1), "live", clk.after(time.Hour)) {
			t.Fatal("Set with an expiry ahead reported that it stored nothing")
		}
		if c.Set(key(1), "dead", exp) {
			t.Errorf("Set with expiry %v reported that it stored", exp)
		}
		if v, ok := c.Get(key(1)); ok {
			t.Errorf("Set with expiry %v: Get = %q, want nothing", exp, v)
		}
		if n := c.Len(); n != 0 {
			t.Errorf("Set with expiry %v: Len = %d, want 0", exp, n)
		}
	}
	c.Set(key(2), "long", clk.after(time.Hour))
	c.Set(key(2), "short", clk.after(time.Second))
	clk.advance(time.Second)
	if v, ok := c.Get(key(2)); ok {
		t.Errorf("a value whose shorter expiry passed: Get = %q", v)
	}
}

func TestCompute(t *testing.T) {
	t.Parallel()
	clk := newClock()
	c := newCache[int](t, 10, clk)
	incr := func(old int, found bool, now time.Time) (int, time.Time, bool) {
		if !now.Equal(clk.now()) {
			t.Errorf("Compute gave f %v, want the cache's clock's %v", now, clk.now())
		}
		return old + 1, clk.after(time.Second), true
	}
	for want := 1; want <= 3; want++ {
		if v, ok := c.Compute(key(1), incr); !ok || v != want {
			t.Fatalf("Compute = %d, %v; want %d, true", v, ok, want)
		}
	}
	leave := func(int, bool, time.Time) (int, time.Time, bool) { return 100, clk.after(time.Hour), false }
	if v, ok := c.Compute(key(1), leave); !ok || v != 3 {
		t.Fatalf("Compute that leaves the entry = %d, %v; want 3, true", v, ok)
	}
	if v, ok := c.Compute(key(2), leave); ok || c.Len() != 1 {
		t.Fatalf("Compute that leaves an absent key = %d, %v (Len %d); want nothing stored", v, ok, c.Len())
	}
	clk.advance(time.Second)
	c.Compute(key(1), func(old int, found bool, _ time.Time) (int, time.Time, bool) {
		if found {
			t.Errorf("Compute was given an expired entry (%d)", old)
		}
		return 0, time.Time{}, false
	})
	c.Set(key(3), 3, clk.after(time.Hour))
	if _, ok := c.Compute(key(3), func(_ int, _ bool, now time.Time) (int, time.Time, bool) { return 4, now, true }); ok {
		t.Error("Compute with an expiry not ahead kept the entry")
	}
	if _, ok := c.Get(key(3)); ok {
		t.Error("Compute with an expiry not ahead left the entry readable")
	}
}

// TestComputeIsAUse: an entry Compute was given counts as read, even if f left
// it as it was, so eviction passes it over.
func TestComputeIsAUse(t *testing.T) {
	t.Parallel()
	clk := newClock()
	c := newCache[int](t, 2, clk)
	c.Set(key(0), 0, clk.after(time.Hour))
	c.Set(key(1), 1, clk.after(time.Hour))
	c.Compute(key(0), func(old int, _ bool, _ time.Time) (int, time.Time, bool) { return old, time.Time{}, false })
	c.Set(key(2), 2, clk.after(time.Hour))
	if _, ok := c.Get(key(0)); !ok {
		t.Error("the entry Compute used was evicted")
	}
	if _, ok := c.Get(key(1)); ok {
		t.Error("the unused entry survived")
	}
}

func TestCapacityAndClock(t *testing.T) {
	t.Parallel()
	clk := newClock()
	c := newCache[int](t, 4, clk)
	for i := range 4 {
		c.Set(key(i), i, clk.after(time.Hour))
	}
	// Touch 0, 1 and 3: the next insert must evict 2, the only one not read.
	for _, i := range []int{0, 1, 3} {
		if _, ok := c.Get(key(i)); !ok {
			t.Fatalf("key %d missing", i)
		}
	}
	c.Set(key(4), 4, clk.after(time.Hour))
	if n := c.Len(); n != 4 {
		t.Fatalf("Len = %d, want 4", n)
	}
	if _, ok := c.Get(key(2)); ok {
		t.Error("unreferenced key 2 survived eviction")
	}
	for _, i := range []int{0, 1, 3, 4} {
		if _, ok := c.Get(key(i)); !ok {
			t.Errorf("key %d was evicted", i)
		}
	}
	if n := c.Evictions(); n != 1 {
		t.Errorf("Evictions = %d, want 1", n)
	}
	for i := range 1000 {
		c.Set(key(100+i), i, clk.after(time.Hour))
	}
	if c.Len() > c.Capacity() {
		t.Errorf("Len %d exceeds capacity %d", c.Len(), c.Capacity())
	}
}

func TestExpiredEvictedFirst(t *testing.T) {
	t.Parallel()
	clk := newClock()
	c := newCache[int](t, 3, clk)
	c.Set(key(0), 0, clk.after(time.Hour))
	c.Set(key(1), 1, clk.after(time.Second))
	c.Set(key(2), 2, clk.after(time.Hour))
	for i := range 3 {
		c.Get(key(i))
	}
	clk.advance(time.Second)
	c.Set(key(3), 3, clk.after(time.Hour))
	for _, i := range []int{0, 2, 3} {
		if _, ok := c.Get(key(i)); !ok {
			t.Errorf("live key %d evicted instead of the expired one", i)
		}
	}
}

func TestDeleteThenReuseSlot(t *testing.T) {
	t.Parallel()
	clk := newClock()
	c := newCache[int](t, 2, clk)
	c.Set(key(0), 0, clk.after(time.Hour))
	c.Set(key(1), 1, clk.after(time.Hour))
	c.Delete(key(0))
	c.Set(key(2), 2, clk.after(time.Hour))
	if c.Evictions() != 0 || c.Len() != 2 {
		t.Fatalf("evictions %d len %d; the freed slot should have been reused", c.Evictions(), c.Len())
	}
	c.Clear()
	if n := c.Len(); n != 0 {
		t.Fatalf("Len after Clear = %d", n)
	}
	c.Set(key(3), 3, clk.after(time.Hour))
	if v, ok := c.Get(key(3)); !ok || v != 3 {
		t.Fatal("cache unusable after Clear")
	}
}

// TestSweep: expired entries leave at once (not only when the shard fills), live
// ones stay, and the freed slots are reused without evictions.
func TestSweep(t *testing.T) {
	t.Parallel()
	clk := newClock()
	c := newCache[int](t, 2048, clk) // sharded
	for i := range 1000 {
		c.Set(key(i), i, clk.after(time.Duration(1+i%2)*time.Second)) // even keys expire first
	}
	clk.advance(time.Second)
	if n := c.Sweep(); n != 500 {
		t.Fatalf("Sweep removed %d, want the 500 expired", n)
	}
	if n := c.Len(); n != 500 {
		t.Fatalf("Len after Sweep = %d, want 500", n)
	}
	if _, ok := c.Get(key(1)); !ok {
		t.Fatal("a live entry was swept")
	}
	for i := 1000; i < 1500; i++ {
		c.Set(key(i), i, clk.after(time.Hour))
	}
	if c.Evictions() != 0 || c.Len() != 1000 {
		t.Fatalf("evictions %d len %d: the swept slots should have been reused", c.Evictions(), c.Len())
	}
	if n := c.Sweep(); n != 0 {
		t.Fatalf("second Sweep removed %d, want 0", n)
	}
}

// TestOnRemove: every way out of the cache but Clear is reported, evictions as
// such, synchronously.
func TestOnRemove(t *testing.T) {
	t.Parallel()
	clk := newClock()
	type removal struct {
		V       string
		Evicted bool
	}
	var got []removal
	c := New(Options[digest, string]{MaxEntries: 1, Now: clk.now, OnRemove: func(_ digest, v string, evicted bool) {
		got = append(got, removal{v, evicted})
	}})
	exp := clk.after(time.Second)
	c.Set(key(1), "a", exp)
	c.Set(key(1), "b", exp) // replaced
	c.Delete(key(1))
	c.Set(key(2), "c", exp)
	c.Set(key(3), "d", exp) // evicts c
	c.Compute(key(3), func(string, bool, time.Time) (string, time.Time, bool) { return "e", exp, true })
	clk.advance(time.Second)
	c.Sweep() // e expired
	c.Set(key(4), "f", clk.after(time.Second))
	c.Set(key(4), "g", time.Time{}) // deleted by a past expiry
	c.Set(key(5), "h", clk.after(time.Second))
	c.Clear()
	want := []removal{{"a", false}, {"b", false}, {"c", true}, {"d", false}, {"e", false}, {"f", false}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("removals (-want +got):\n%s", d)
	}
}

func TestAll(t *testing.T) {
	t.Parallel()
	clk := newClock()
	c := newCache[int](t, 2048, clk)
	want := map[digest]int{}
	for i := range 100 {
		c.Set(key(i), i, clk.after(time.Second))
		want[key(i)] = i
	}
	clk.advance(time.Second) // expired entries are listed until removed
	got := map[digest]int{}
	for k, v := range c.All() {
		got[k] = v
		c.Delete(k) // the loop may call the cache
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("All (-want +got):\n%s", d)
	}
	if n := c.Len(); n != 0 {
		t.Errorf("Len after deleting every listed key = %d", n)
	}
}

// TestDefaultHash: keys of any comparable type spread over the shards.
func TestDefaultHash(t *testing.T) {
	t.Parallel()
	type pair struct {
		a string
		b int
	}
	c := New(Options[pair, int]{MaxEntries: 1 << 14})
	exp := time.Now().Add(time.Hour)
	for i := range 1 << 13 {
		c.Set(pair{"k", i}, i, exp)
	}
	for i := range c.shards {
		if n := len(c.shards[i].m); n < 256 {
			t.Errorf("shard %d holds %d of %d keys; want about %d", i, n, 1<<13, (1<<13)/len(c.shards))
		}
	}
	if c.Evictions() != 0 {
		t.Errorf("Evictions = %d in a half-full cache", c.Evictions())
	}
}

func TestNilCacheStoresNothing(t *testing.T) {
	t.Parallel()
	c := New(Options[digest, int]{})
	if c != nil {
		t.Fatal("New with MaxEntries 0 returned a cache")
	}
	if c.Set(key(0), 1, time.Now().Add(time.Hour)) {
		t.Error("a nil cache reported that it stored")
	}
	if _, ok := c.Get(key(0)); ok || c.Len() != 0 || c.Capacity() != 0 || c.Evictions() != 0 || c.Sweep() != 0 {
		t.Fatal("a nil cache stored something")
	}
	called := false
	if _, ok := c.Compute(key(0), func(int, bool, time.Time) (int, time.Time, bool) {
		called = true
		return 1, time.Now().Add(time.Hour), true
	}); ok || !called {
		t.Errorf("nil cache Compute: ok %v, f called %v; want false, true", ok, called)
	}
	for range c.All() {
		t.Error("a nil cache listed an entry")
	}
	c.Delete(key(0))
	c.Clear()
}

func TestConcurrent(t *testing.T) {
	t.Parallel()
	var removed atomic.Int64
	c := New(Options[digest, int]{MaxEntries: 2048, Hash: DigestHash, OnRemove: func(digest, int, bool) { removed.Add(1) }})
	exp := time.Now().Add(time.Hour)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				k := key(g*10000 + i%3000)
				c.Set(k, i, exp)
				c.Get(k)
				c.Compute(k, func(old int, _ bool, _ time.Time) (int, time.Time, bool) { return old + 1, exp, i%2 == 0 })
				if i%7 == 0 {
					c.Delete(k)
				}
				if i%500 == 0 {
					c.Sweep()
				}
			}
		})
	}
	wg.Wait()
	n := 0
	for range c.All() {
		n++
	}
	if n != c.Len() || n > c.Capacity() {
		t.Fatalf("All lists %d entries, Len %d, capacity %d", n, c.Len(), c.Capacity())
	}
}
