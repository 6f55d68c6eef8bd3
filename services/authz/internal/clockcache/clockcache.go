// Package clockcache is the in-process cache tier (L1): a fixed-capacity map from
// 32-byte keys (SHA-256 digests) to values with an absolute expiry.
//
// Eviction uses the CLOCK algorithm, an approximation of LRU in which a hit only
// sets a flag, so lookups take a read lock and never move list nodes: concurrent
// hits do not serialise. The cache is sharded by key to spread writes. An entry is
// one small allocation (key, expiry, flag, slot, value) plus its map slot; there are
// no list elements or interface boxes.
package clockcache

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"
)

// Key identifies an entry. Callers use a SHA-256 digest, which also spreads keys
// evenly over shards.
type Key = [32]byte

// Cache is a bounded cache. A nil or zero-capacity *Cache is valid and stores
// nothing. It is safe for concurrent use.
type Cache[V any] struct {
	shards    []shard[V]
	mask      uint32
	now       func() int64
	evictions atomic.Uint64
}

type entry[V any] struct {
	key  Key
	exp  int64 // unix nanoseconds
	slot int32
	ref  atomic.Bool
	val  V
}

type shard[V any] struct {
	mu   sync.RWMutex
	m    map[Key]*entry[V]
	ring []*entry[V]
	free []int32
	hand int
	cap  int
	// Keep neighbouring shards' locks off one cache line.
	_ [64]byte
}

// Options tunes a cache.
type Options struct {
	// Now returns the current time in unix nanoseconds; default time.Now.
	Now func() int64
}

// New returns a cache holding at most about capacity entries (capacity is rounded
// up to a multiple of the shard count). capacity <= 0 returns a cache that stores
// nothing.
func New[V any](capacity int, opts Options) *Cache[V] {
	if capacity <= 0 {
		return nil
	}
	n := 1
	if capacity >= 1024 {
		n = 16
	}
	per := (capacity + n - 1) / n
	c := &Cache[V]{shards: make([]shard[V], n), mask: uint32(n - 1), now: opts.Now}
	if c.now == nil {
		c.now = func() int64 { return time.Now().UnixNano() }
	}
	for i := range c.shards {
		c.shards[i].cap = per
		c.shards[i].m = make(map[Key]*entry[V], min(per, 1024))
	}
	return c
}

func (c *Cache[V]) shard(k *Key) *shard[V] {
	return &c.shards[binary.LittleEndian.Uint32(k[:4])&c.mask]
}

// Get returns the value stored under k if it has not expired.
func (c *Cache[V]) Get(k Key) (V, bool) {
	var zero V
	if c == nil {
		return zero, false
	}
	s := c.shard(&k)
	now := c.now()
	s.mu.RLock()
	e := s.m[k]
	if e == nil || e.exp <= now {
		s.mu.RUnlock()
		return zero, false
	}
	if !e.ref.Load() {
		e.ref.Store(true)
	}
	v := e.val
	s.mu.RUnlock()
	return v, true
}

// GetWithExpiry is Get that also returns the entry's expiry (unix nanoseconds).
func (c *Cache[V]) GetWithExpiry(k Key) (V, int64, bool) {
	var zero V
	if c == nil {
		return zero, 0, false
	}
	s := c.shard(&k)
	now := c.now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := s.m[k]
	if e == nil || e.exp <= now {
		return zero, 0, false
	}
	e.ref.Store(true)
	return e.val, e.exp, true
}

// Set stores v under k until exp (unix nanoseconds), evicting an entry when the
// shard is full: preferably an expired one, else one not read since the clock hand
// last passed.
func (c *Cache[V]) Set(k Key, v V, exp int64) {
	if c == nil {
		return
	}
	s := c.shard(&k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[k]; e != nil {
		e.val, e.exp = v, exp
		e.ref.Store(true)
		return
	}
	e := &entry[V]{key: k, exp: exp, val: v}
	switch {
	case len(s.free) > 0:
		e.slot = s.free[len(s.free)-1]
		s.free = s.free[:len(s.free)-1]
		s.ring[e.slot] = e
	case len(s.ring) < s.cap:
		e.slot = int32(len(s.ring))
		s.ring = append(s.ring, e)
	default:
		e.slot = int32(s.victim(c.now()))
		delete(s.m, s.ring[e.slot].key)
		s.ring[e.slot] = e
		c.evictions.Add(1)
	}
	s.m[k] = e
}

// victim advances the clock hand to an entry that may be evicted and returns its
// slot. The ring is full (no holes) when it is called.
func (s *shard[V]) victim(now int64) int {
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
func (c *Cache[V]) Delete(k Key) {
	if c == nil {
		return
	}
	s := c.shard(&k)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[k]
	if e == nil {
		return
	}
	delete(s.m, k)
	s.ring[e.slot] = nil
	s.free = append(s.free, e.slot)
}

// Sweep removes every expired entry and returns how many it removed. Set evicts
// expired entries only when a shard is full, so without sweeping a cache whose
// tokens churn holds dead entries (and their memory) until it reaches capacity;
// callers run Sweep periodically. It locks one shard at a time.
func (c *Cache[V]) Sweep() int {
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
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// Clear removes every entry.
func (c *Cache[V]) Clear() {
	if c == nil {
		return
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		clear(s.m)
		clear(s.ring)
		s.ring = s.ring[:0]
		s.free = s.free[:0]
		s.hand = 0
		s.mu.Unlock()
	}
}

// Len returns the number of entries, expired ones included until they are evicted.
func (c *Cache[V]) Len() int {
	if c == nil {
		return 0
	}
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

// Evictions returns how many entries were evicted to make room.
func (c *Cache[V]) Evictions() uint64 {
	if c == nil {
		return 0
	}
	return c.evictions.Load()
}

// Capacity returns the maximum number of entries.
func (c *Cache[V]) Capacity() int {
	if c == nil {
		return 0
	}
	return c.shards[0].cap * len(c.shards)
}
