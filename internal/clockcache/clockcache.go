// Package clockcache is the one in-process cache of the services: a map of at
// most a fixed number of entries, each with an absolute expiry. authz keeps its
// L1 of introspection results and users in it, the gateway its decisions, its
// in-process rate limiter's state and the identity assertions it signs.
//
// # Expiry
//
// Every entry is stored with the wall-clock time it expires at (a token's exp,
// say) and is never returned at or after it: reads compare it with
// [Options.Now]. An expiry that has already passed stores nothing. Expired
// entries leave memory when [Cache.Sweep] runs (the services run it
// periodically) or when their slot is needed.
//
// # Eviction
//
// A full cache evicts with the CLOCK algorithm, an approximation of LRU in
// which a hit only sets a flag: a new entry takes the slot of an expired entry
// if the clock hand finds one, else of one not read since the hand last passed.
// So lookups take a read lock and never move list nodes, and concurrent hits do
// not serialise. The cache is sharded by key ([Options.Hash]) to spread writes;
// each shard holds at most its share of the capacity. An entry is one small
// allocation (key, expiry, flag, slot, value) plus its map slot; there are no
// list elements or interface boxes.
//
// CLOCK does not resist scans: a stream of new keys, each read once, displaces
// entries in steady use. github.com/maypok86/otter/v2 (W-TinyLFU) mostly
// does, at about half as much CPU again per hit; bench/internal/cachecompare
// measures both.
//
// # Callbacks
//
// [Options.OnRemove] and the function given to [Cache.Compute] run under the
// lock of the key's shard, synchronously, on the goroutine that called the
// cache: a caller that guards its own structures (an index of the keys, say)
// with its own lock, held around its calls of the cache, may update them there.
package clockcache

import (
	"encoding/binary"
	"hash/maphash"
	"iter"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures [New].
type Options[K comparable, V any] struct {
	// MaxEntries bounds the number of entries (rounded up to a multiple of the
	// shard count). New returns nil, a cache that stores nothing, when it is
	// not positive.
	MaxEntries int
	// Now is the clock that expiry times are compared with; time.Now when nil.
	Now func() time.Time
	// Hash spreads keys over the shards. The default, hash/maphash.Comparable,
	// costs about 20 ns for a 32-byte key; keys that are already uniformly
	// random (SHA-256 digests) may pass [DigestHash].
	Hash func(K) uint64
	// OnRemove, if set, is told of every entry that leaves the cache other than
	// by [Cache.Clear]: deleted, replaced by a newer value, evicted to make room
	// (evicted is true) or swept after it expired. It must be quick and must
	// not call the cache (see the package documentation).
	OnRemove func(key K, value V, evicted bool)
}

// DigestHash is an [Options.Hash] for keys that are SHA-256 digests: their
// first 8 bytes.
func DigestHash(k [32]byte) uint64 { return binary.LittleEndian.Uint64(k[:8]) }

// Cache is a bounded map whose entries expire. It is safe for concurrent use.
// A nil *Cache is valid: it stores nothing and is always empty.
type Cache[K comparable, V any] struct {
	shards    []shard[K, V]
	mask      uint64
	hash      func(K) uint64
	now       func() int64
	onRemove  func(K, V, bool)
	len       atomic.Int64
	evictions atomic.Uint64
}

type entry[K comparable, V any] struct {
	key  K
	exp  int64 // unix nanoseconds
	slot int32
	ref  atomic.Bool
	val  V
}

type shard[K comparable, V any] struct {
	mu   sync.RWMutex
	m    map[K]*entry[K, V]
	ring []*entry[K, V]
	free []int32
	hand int
	cap  int
	// Keep neighbouring shards' locks off one cache line.
	_ [64]byte
}

// New returns a cache holding at most o.MaxEntries entries, rounded up to a
// multiple of the shard count, or nil when o.MaxEntries is not positive.
func New[K comparable, V any](o Options[K, V]) *Cache[K, V] {
	if o.MaxEntries <= 0 {
		return nil
	}
	n := 1
	if o.MaxEntries >= 1024 {
		n = 16
	}
	per := (o.MaxEntries + n - 1) / n
	c := &Cache[K, V]{
		shards:   make([]shard[K, V], n),
		mask:     uint64(n - 1),
		hash:     o.Hash,
		now:      func() int64 { return time.Now().UnixNano() },
		onRemove: o.OnRemove,
	}
	if o.Now != nil {
		c.now = func() int64 { return o.Now().UnixNano() }
	}
	if c.hash == nil {
		seed := maphash.MakeSeed()
		c.hash = func(k K) uint64 { return maphash.Comparable(seed, k) }
	}
	if c.onRemove == nil {
		c.onRemove = func(K, V, bool) {}
	}
	for i := range c.shards {
		c.shards[i].cap = per
		c.shards[i].m = make(map[K]*entry[K, V], min(per, 1024))
	}
	return c
}

func (c *Cache[K, V]) shard(k K) *shard[K, V] {
	if c.mask == 0 {
		return &c.shards[0]
	}
	return &c.shards[c.hash(k)&c.mask]
}

// Get returns the value stored under k, unless it is absent or has expired.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	v, _, ok := c.get(k)
	return v, ok
}

// GetUntil is [Cache.Get] that also returns when the value expires: the exp it
// was last stored with.
func (c *Cache[K, V]) GetUntil(k K) (V, time.Time, bool) {
	v, exp, ok := c.get(k)
	if !ok {
		return v, time.Time{}, false
	}
	return v, time.Unix(0, exp), true
}

// get is Get with the entry's expiry in unix nanoseconds.
func (c *Cache[K, V]) get(k K) (V, int64, bool) {
	var zero V
	if c == nil {
		return zero, 0, false
	}
	s := c.shard(k)
	now := c.now()
	s.mu.RLock()
	e := s.m[k]
	if e == nil || e.exp <= now {
		s.mu.RUnlock()
		return zero, 0, false
	}
	if !e.ref.Load() {
		e.ref.Store(true)
	}
	v, exp := e.val, e.exp
	s.mu.RUnlock()
	return v, exp, true
}

// Set stores v under k until exp, replacing any value k had, and evicts an
// entry when k's shard is full. An exp that is not in the future deletes k
// instead: the entry would already have expired. Set reports whether it stored
// v.
func (c *Cache[K, V]) Set(k K, v V, exp time.Time) bool {
	if c == nil {
		return false
	}
	s := c.shard(k)
	now := c.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := exp.UnixNano(); e > now {
		c.store(s, k, v, e, now)
		return true
	}
	c.delete(s, k)
	return false
}

// Compute updates k's entry atomically: f is given the current value, if k has
// one that has not expired, and the time ([Options.Now]) it was judged at, and
// returns the new value with its expiry, or keep=false to leave the entry as
// it was (absent if it was). An expiry that is not after now deletes k. f runs
// under the lock of k's shard: it must be quick and must not call the cache.
// Compute reports the value k holds afterwards, if any.
func (c *Cache[K, V]) Compute(k K, f func(old V, found bool, now time.Time) (v V, exp time.Time, keep bool)) (V, bool) {
	var zero V
	if c == nil {
		f(zero, false, time.Now())
		return zero, false
	}
	s := c.shard(k)
	now := c.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	old, found := zero, false
	e := s.m[k]
	if e != nil && e.exp > now {
		old, found = e.val, true
		// A use, as a hit is, whether f changes the entry or not.
		if !e.ref.Load() {
			e.ref.Store(true)
		}
	}
	v, exp, keep := f(old, found, time.Unix(0, now))
	switch {
	case !keep && found:
		return old, true
	case !keep:
		return zero, false
	case exp.UnixNano() <= now:
		c.delete(s, k)
		return zero, false
	}
	c.store(s, k, v, exp.UnixNano(), now)
	return v, true
}

// store puts v under k in s, whose lock is held.
func (c *Cache[K, V]) store(s *shard[K, V], k K, v V, exp, now int64) {
	if e := s.m[k]; e != nil {
		old := e.val
		e.val, e.exp = v, exp
		e.ref.Store(true)
		c.onRemove(k, old, false)
		return
	}
	e := &entry[K, V]{key: k, exp: exp, val: v}
	switch {
	case len(s.free) > 0:
		e.slot = s.free[len(s.free)-1]
		s.free = s.free[:len(s.free)-1]
		s.ring[e.slot] = e
	case len(s.ring) < s.cap:
		e.slot = int32(len(s.ring))
		s.ring = append(s.ring, e)
	default:
		e.slot = int32(s.victim(now))
		gone := s.ring[e.slot]
		delete(s.m, gone.key)
		s.ring[e.slot] = e
		c.evictions.Add(1)
		c.len.Add(-1)
		c.onRemove(gone.key, gone.val, true)
	}
	s.m[k] = e
	c.len.Add(1)
}

// victim advances the clock hand to an entry that may be evicted and returns its
// slot: preferably an expired one, else one not read since the hand last
// passed. The ring is full (no holes) when it is called.
func (s *shard[K, V]) victim(now int64) int {
	for range 2*len(s.ring) + 1 {
		i := s.hand
		s.hand = (s.hand + 1) % len(s.ring)
		e := s.ring[i]
		if e.exp <= now || !e.ref.Load() {
			return i
		}
		e.ref.Store(false)
	}
	return s.hand
}

// Delete removes k. Deleting a missing key does nothing.
func (c *Cache[K, V]) Delete(k K) {
	if c == nil {
		return
	}
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	c.delete(s, k)
}

// delete removes k from s, whose lock is held.
func (c *Cache[K, V]) delete(s *shard[K, V], k K) {
	e := s.m[k]
	if e == nil {
		return
	}
	delete(s.m, k)
	s.ring[e.slot] = nil
	s.free = append(s.free, e.slot)
	c.len.Add(-1)
	c.onRemove(k, e.val, false)
}

// Sweep removes every expired entry and returns how many it removed. Set
// evicts expired entries only when a shard is full, so without sweeping a cache
// whose keys churn holds dead entries (and their memory) until it reaches
// capacity; callers run Sweep periodically. It locks one shard at a time.
func (c *Cache[K, V]) Sweep() int {
	if c == nil {
		return 0
	}
	now := c.now()
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for slot, e := range s.ring {
			if e != nil && e.exp <= now {
				delete(s.m, e.key)
				s.ring[slot] = nil
				s.free = append(s.free, int32(slot))
				c.len.Add(-1)
				c.onRemove(e.key, e.val, false)
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// Clear removes every entry, without telling Options.OnRemove. It locks one
// shard at a time, so a Set during Clear may survive it; callers that must void
// every write in flight do so themselves (as authz's package flight does).
func (c *Cache[K, V]) Clear() {
	if c == nil {
		return
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		c.len.Add(-int64(len(s.m)))
		clear(s.m)
		clear(s.ring)
		s.ring = s.ring[:0]
		s.free = s.free[:0]
		s.hand = 0
		s.mu.Unlock()
	}
}

// All returns an iterator over every entry, expired ones included until they
// are removed. It copies one shard's entries at a time and yields them without
// holding a lock, so the loop body may call the cache; entries stored or
// removed meanwhile may or may not be seen.
func (c *Cache[K, V]) All() iter.Seq2[K, V] {
	return func(yield func(K, V) bool) {
		if c == nil {
			return
		}
		type kv struct {
			k K
			v V
		}
		var batch []kv
		for i := range c.shards {
			s := &c.shards[i]
			s.mu.RLock()
			batch = batch[:0]
			for k, e := range s.m {
				batch = append(batch, kv{k, e.val})
			}
			s.mu.RUnlock()
			for _, e := range batch {
				if !yield(e.k, e.v) {
					return
				}
			}
		}
	}
}

// Len returns the number of entries, expired ones included until they are
// removed.
func (c *Cache[K, V]) Len() int {
	if c == nil {
		return 0
	}
	return int(c.len.Load())
}

// Evictions returns how many entries were evicted to make room.
func (c *Cache[K, V]) Evictions() uint64 {
	if c == nil {
		return 0
	}
	return c.evictions.Load()
}

// Capacity returns the maximum number of entries, 0 for a nil cache.
func (c *Cache[K, V]) Capacity() int {
	if c == nil {
		return 0
	}
	return c.shards[0].cap * len(c.shards)
}
