// Package flight coalesces concurrent fetches of one key, as
// golang.org/x/sync/singleflight does, and also tracks who still waits for each
// fetch and whether its result may still be cached.
//
// # Callers that go away
//
// The first caller for a key starts the fetch in a goroutine of its own, with a
// context that keeps the caller's values but not its cancellation, so one caller
// giving up does not fail the others. Later callers join it. A caller whose
// context ends leaves at once with its context's error. When the last caller
// leaves before the fetch called [Call.Commit] (before it started its expensive,
// outside call), the fetch's context is canceled and the key forgotten, so the
// work stops and a new caller starts afresh. After Commit the fetch runs to the
// end whoever waits: its result is worth caching, and abandoning a request in
// flight would only throw away a connection and the work done upstream.
//
// # Invalidation
//
// [Group.Invalidate] marks the fetch in flight for a key stale and runs a
// function (dropping the key from a cache) under the group's lock; [Call.Keep]
// runs its store function only if the fetch is not stale, under the same lock.
// So a result fetched across an invalidation of its key is never stored after
// the invalidation dropped the key, and an invalidation of one key costs no
// other key anything. A fetch abandoned before Commit is stale too: it is no
// longer in the group, where Invalidate would find it.
package flight

import (
	"context"
	"sync"
)

// Group coalesces fetches by key. The zero value is ready to use; a Group must
// not be copied after first use.
type Group[K comparable, V any] struct {
	mu    sync.Mutex
	calls map[K]*Call[K, V]
}

// Call is one fetch, shared by every caller that asked for its key while it ran.
type Call[K comparable, V any] struct {
	g      *Group[K, V]
	key    K
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	// Guarded by g.mu.
	waiters   int
	committed bool
	stale     bool

	// Written before done is closed.
	val V
	err error
}

// Do returns the result of fetch for key, starting it unless a fetch for key is
// already in flight, in which case it waits for that one; joined reports the
// latter. It returns ctx's error as soon as ctx ends, without waiting.
func (g *Group[K, V]) Do(ctx context.Context, key K, fetch func(*Call[K, V]) (V, error)) (v V, joined bool, err error) {
	if err := ctx.Err(); err != nil {
		return v, false, err
	}
	g.mu.Lock()
	if g.calls == nil {
		g.calls = make(map[K]*Call[K, V])
	}
	c, joined := g.calls[key]
	if joined {
		c.waiters++
	} else {
		c = &Call[K, V]{g: g, key: key, done: make(chan struct{}), waiters: 1}
		c.ctx, c.cancel = context.WithCancel(context.WithoutCancel(ctx))
		g.calls[key] = c
	}
	g.mu.Unlock()
	if !joined {
		go c.run(fetch)
	}
	select {
	case <-c.done:
		return c.val, joined, c.err
	case <-ctx.Done():
		c.leave()
		return v, joined, ctx.Err()
	}
}

func (c *Call[K, V]) run(fetch func(*Call[K, V]) (V, error)) {
	defer c.cancel()
	v, err := fetch(c)
	c.g.mu.Lock()
	if c.g.calls[c.key] == c {
		delete(c.g.calls, c.key)
	}
	c.val, c.err = v, err
	c.g.mu.Unlock()
	close(c.done)
}

// leave drops one waiter and abandons the fetch when it was the last one and the
// fetch has not committed.
func (c *Call[K, V]) leave() {
	c.g.mu.Lock()
	defer c.g.mu.Unlock()
	c.waiters--
	if c.waiters > 0 || c.committed {
		return
	}
	c.stale = true
	if c.g.calls[c.key] == c {
		delete(c.g.calls, c.key)
	}
	c.cancel()
}

// Context is the fetch's context. It ends when every caller has left before
// [Call.Commit], and when the fetch returns.
func (c *Call[K, V]) Context() context.Context { return c.ctx }

// Commit reports whether any caller still waits and, if so, makes the fetch run
// to the end even if every caller then leaves: its context is not canceled until
// it returns. A fetch calls it just before its expensive step and stops when it
// returns false.
func (c *Call[K, V]) Commit() bool {
	c.g.mu.Lock()
	defer c.g.mu.Unlock()
	if c.ctx.Err() != nil {
		return false
	}
	c.committed = true
	return true
}

// Keep runs store unless the fetch is stale (its key was invalidated while it ran,
// or every caller left before it committed), and reports whether it ran. store
// runs under the group's lock: it must be quick and must not call the group.
func (c *Call[K, V]) Keep(store func()) bool {
	c.g.mu.Lock()
	defer c.g.mu.Unlock()
	if c.stale {
		return false
	}
	store()
	return true
}

// Stale reports whether the fetch's result must not be cached (see [Call.Keep]).
func (c *Call[K, V]) Stale() bool {
	c.g.mu.Lock()
	defer c.g.mu.Unlock()
	return c.stale
}

// Invalidate marks the fetch in flight for key, if any, stale and runs drop
// (which removes key from the caller's cache) under the group's lock, so no
// [Call.Keep] of that fetch can store after drop. drop must be quick and must
// not call the group.
func (g *Group[K, V]) Invalidate(key K, drop func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.calls[key]; c != nil {
		c.stale = true
	}
	drop()
}

// InvalidateAll is [Group.Invalidate] for every fetch in flight: drop should
// clear the whole cache.
func (g *Group[K, V]) InvalidateAll(drop func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.calls {
		c.stale = true
	}
	drop()
}

// Len returns the number of fetches in flight that callers can still join.
func (g *Group[K, V]) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.calls)
}
