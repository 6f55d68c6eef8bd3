package clockcache

import (
	"crypto/sha256"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

func key(i int) Key { return sha256.Sum256(fmt.Appendf(nil, "k%d", i)) }

type clock struct{ t atomic.Int64 }

func (c *clock) now() int64 { return c.t.Load() }

func TestGetSetExpiry(t *testing.T) {
	t.Parallel()
	var clk clock
	clk.t.Store(1000)
	c := New[string](10, Options{Now: clk.now})
	c.Set(key(1), "a", 2000)
	if v, ok := c.Get(key(1)); !ok || v != "a" {
		t.Fatalf("Get = %q, %v", v, ok)
	}
	if _, exp, ok := c.GetWithExpiry(key(1)); !ok || exp != 2000 {
		t.Fatalf("GetWithExpiry exp = %d, %v", exp, ok)
	}
	if _, ok := c.Get(key(2)); ok {
		t.Fatal("missing key found")
	}
	c.Set(key(1), "b", 3000)
	if v, _ := c.Get(key(1)); v != "b" {
		t.Fatalf("overwrite: got %q", v)
	}
	clk.t.Store(3000)
	if _, ok := c.Get(key(1)); ok {
		t.Fatal("expired entry returned")
	}
	c.Delete(key(1))
	c.Delete(key(1))
	if c.Len() != 0 {
		t.Fatalf("Len = %d after Delete", c.Len())
	}
}

func TestCapacityAndClock(t *testing.T) {
	t.Parallel()
	var clk clock
	c := New[int](4, Options{Now: clk.now})
	for i := range 4 {
		c.Set(key(i), i, 100)
	}
	// Touch 0, 1 and 3: the next insert must evict 2, the only one not read.
	for _, i := range []int{0, 1, 3} {
		if _, ok := c.Get(key(i)); !ok {
			t.Fatalf("key %d missing", i)
		}
	}
	c.Set(key(4), 4, 100)
	if c.Len() != 4 {
		t.Fatalf("Len = %d, want 4", c.Len())
	}
	if _, ok := c.Get(key(2)); ok {
		t.Error("unreferenced key 2 survived eviction")
	}
	for _, i := range []int{0, 1, 3, 4} {
		if _, ok := c.Get(key(i)); !ok {
			t.Errorf("key %d was evicted", i)
		}
	}
	if c.Evictions() != 1 {
		t.Errorf("Evictions = %d, want 1", c.Evictions())
	}
	for i := range 1000 {
		c.Set(key(100+i), i, 100)
	}
	if c.Len() > c.Capacity() {
		t.Errorf("Len %d exceeds capacity %d", c.Len(), c.Capacity())
	}
}

func TestExpiredEvictedFirst(t *testing.T) {
	t.Parallel()
	var clk clock
	clk.t.Store(50)
	c := New[int](3, Options{Now: clk.now})
	c.Set(key(0), 0, 1000)
	c.Set(key(1), 1, 60) // expires soon
	c.Set(key(2), 2, 1000)
	for i := range 3 {
		c.Get(key(i))
	}
	clk.t.Store(70)
	c.Set(key(3), 3, 1000)
	for _, i := range []int{0, 2, 3} {
		if _, ok := c.Get(key(i)); !ok {
			t.Errorf("live key %d evicted instead of the expired one", i)
		}
	}
}

func TestDeleteThenReuseSlot(t *testing.T) {
	t.Parallel()
	c := New[int](2, Options{Now: func() int64 { return 0 }})
	c.Set(key(0), 0, 10)
	c.Set(key(1), 1, 10)
	c.Delete(key(0))
	c.Set(key(2), 2, 10)
	if c.Evictions() != 0 || c.Len() != 2 {
		t.Fatalf("evictions %d len %d; the freed slot should have been reused", c.Evictions(), c.Len())
	}
	c.Clear()
	if c.Len() != 0 {
		t.Fatal("Clear left entries")
	}
	c.Set(key(3), 3, 10)
	if v, ok := c.Get(key(3)); !ok || v != 3 {
		t.Fatal("cache unusable after Clear")
	}
}

// TestSweep: expired entries leave at once (not only when the shard fills), live
// ones stay, and the freed slots are reused without evictions.
func TestSweep(t *testing.T) {
	t.Parallel()
	var clk clock
	c := New[int](2048, Options{Now: clk.now}) // sharded
	for i := range 1000 {
		c.Set(key(i), i, int64(100+i%2*100)) // even keys expire at 100, odd at 200
	}
	clk.t.Store(150)
	if n := c.Sweep(); n != 500 {
		t.Fatalf("Sweep at 150 removed %d, want the 500 expired", n)
	}
	if c.Len() != 500 {
		t.Fatalf("Len after Sweep = %d, want 500", c.Len())
	}
	if _, ok := c.Get(key(1)); !ok {
		t.Fatal("a live entry was swept")
	}
	for i := 1000; i < 1500; i++ {
		c.Set(key(i), i, 1000)
	}
	if c.Evictions() != 0 || c.Len() != 1000 {
		t.Fatalf("evictions %d len %d: the swept slots should have been reused", c.Evictions(), c.Len())
	}
	if n := c.Sweep(); n != 0 {
		t.Fatalf("second Sweep removed %d, want 0", n)
	}
	var none *Cache[int]
	if none.Sweep() != 0 {
		t.Fatal("nil cache swept something")
	}
}

func TestNilCacheStoresNothing(t *testing.T) {
	t.Parallel()
	c := New[int](0, Options{})
	c.Set(key(0), 1, 1<<62)
	if _, ok := c.Get(key(0)); ok || c.Len() != 0 || c.Capacity() != 0 {
		t.Fatal("zero-capacity cache stored something")
	}
	c.Delete(key(0))
	c.Clear()
}

func TestConcurrent(t *testing.T) {
	t.Parallel()
	c := New[int](2048, Options{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				k := key(g*10000 + i%3000)
				c.Set(k, i, 1<<62)
				c.Get(k)
				if i%7 == 0 {
					c.Delete(k)
				}
			}
		})
	}
	wg.Wait()
	if c.Len() > c.Capacity() {
		t.Fatalf("Len %d > capacity %d", c.Len(), c.Capacity())
	}
}

func BenchmarkGetParallel(b *testing.B) {
	c := New[int](100000, Options{})
	keys := make([]Key, 1024)
	for i := range keys {
		keys[i] = key(i)
		c.Set(keys[i], i, 1<<62)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			c.Get(keys[i&1023])
			i++
		}
	})
}
