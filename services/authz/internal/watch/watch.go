// Package watch fans token invalidations out to the callers that watch them
// (WatchInvalidations streams), without ever letting a slow watcher hold up the
// invalidation path.
//
// # Events
//
// A watcher sees two kinds of [Event]: a token reference (the token was
// invalidated) and a reset (drop everything: invalidations may have been missed).
// Every watcher's first event is a reset, because it cannot know what happened
// before it subscribed. A watcher whose buffer is full when an event arrives does
// not block the publisher: its pending references are dropped and replaced by a
// single reset, which tells it everything the dropped references would have.
package watch

import (
	"context"
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultBuffer is the number of token references a watcher may have pending.
const DefaultBuffer = 1024

// ErrClosed is returned by [Watcher.Next] once the hub or the watcher is closed.
var ErrClosed = errors.New("watch closed")

// Event is one thing a watcher is told: a token reference to forget or, with
// Reset, everything.
type Event struct {
	// TokenRef is the invalidated token's reference; empty when Reset is set.
	TokenRef string
	// Reset means drop everything kept so far.
	Reset bool
}

// Options configures a [Hub]. Every field is optional.
type Options struct {
	// Buffer bounds each watcher's pending references; default DefaultBuffer.
	Buffer int
	// Watchers, if set, tracks the number of open watchers.
	Watchers prometheus.Gauge
	// Overflows, if set, counts resets caused by a full buffer.
	Overflows prometheus.Counter
}

// Hub delivers every published event to every watcher. It is safe for concurrent
// use; the zero value is not usable, call [New].
type Hub struct {
	buffer    int
	gauge     prometheus.Gauge
	overflows prometheus.Counter

	mu       sync.RWMutex
	closed   bool
	watchers map[*Watcher]struct{}
}

// New returns a hub with no watchers.
func New(o Options) *Hub {
	if o.Buffer <= 0 {
		o.Buffer = DefaultBuffer
	}
	return &Hub{buffer: o.Buffer, gauge: o.Watchers, overflows: o.Overflows, watchers: map[*Watcher]struct{}{}}
}

// Subscribe returns a new watcher whose first event is a reset. On a closed hub
// the watcher is closed already: its Next returns ErrClosed at once. The caller
// must Close the watcher when done with it.
func (h *Hub) Subscribe() *Watcher {
	w := &Watcher{hub: h, reset: true, notify: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		w.closed = true
		return w
	}
	h.watchers[w] = struct{}{}
	if h.gauge != nil {
		h.gauge.Inc()
	}
	return w
}

// Publish tells every watcher that the token with reference ref was
// invalidated. It never blocks on a watcher.
func (h *Hub) Publish(ref string) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for w := range h.watchers {
		if w.push(ref, h.buffer) && h.overflows != nil {
			h.overflows.Inc()
		}
	}
}

// Reset tells every watcher to drop everything it keeps. It never blocks on a
// watcher.
func (h *Hub) Reset() {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for w := range h.watchers {
		w.push("", 0)
	}
}

// Close ends every watcher (their Next returns ErrClosed) and makes later
// watchers closed from the start. It is idempotent.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	for w := range h.watchers {
		w.close()
		delete(h.watchers, w)
		if h.gauge != nil {
			h.gauge.Dec()
		}
	}
}

// Len returns the number of open watchers.
func (h *Hub) Len() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.watchers)
}

// Watcher receives a hub's events in order. Its methods are safe for concurrent
// use, though one reader calling Next is the intended use.
type Watcher struct {
	hub    *Hub
	notify chan struct{} // capacity 1: "something changed since you last looked"

	mu      sync.Mutex
	reset   bool     // a reset is due before anything in pending
	pending []string // refs published after the due reset, if any
	head    int      // pending[head:] are not yet delivered
	closed  bool
}

// push queues ref, or a reset when ref is empty. When the buffer (limit) is full
// the pending refs become a reset; push reports whether that happened.
func (w *Watcher) push(ref string, limit int) (overflowed bool) {
	w.mu.Lock()
	switch {
	case w.closed:
		w.mu.Unlock()
		return false
	case ref == "":
		w.dropPending()
		w.reset = true
	case len(w.pending)-w.head >= limit:
		w.dropPending()
		w.reset = true
		overflowed = true
	default:
		if w.head > 0 && len(w.pending) == cap(w.pending) {
			// Reuse the delivered prefix rather than grow: the slice stays
			// within about twice the limit however the reader keeps pace.
			n := copy(w.pending, w.pending[w.head:])
			clear(w.pending[n:])
			w.pending, w.head = w.pending[:n], 0
		}
		w.pending = append(w.pending, ref)
	}
	w.mu.Unlock()
	w.wake()
	return overflowed
}

// dropPending forgets undelivered refs; w.mu must be held. A due reset covers
// them, since it reaches the reader after they happened.
func (w *Watcher) dropPending() {
	clear(w.pending)
	w.pending, w.head = w.pending[:0], 0
}

func (w *Watcher) wake() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *Watcher) close() {
	w.mu.Lock()
	w.closed = true
	w.dropPending()
	w.mu.Unlock()
	w.wake()
}

// Next returns the next event, waiting for one if none is pending.
//
// Errors: ErrClosed once the watcher or its hub is closed (pending events are not
// delivered then: the reader must drop everything anyway), or ctx's error if ctx
// ends first.
func (w *Watcher) Next(ctx context.Context) (Event, error) {
	for {
		w.mu.Lock()
		switch {
		case w.closed:
			w.mu.Unlock()
			return Event{}, ErrClosed
		case w.reset:
			w.reset = false
			w.mu.Unlock()
			return Event{Reset: true}, nil
		case w.head < len(w.pending):
			ref := w.pending[w.head]
			w.pending[w.head] = ""
			w.head++
			if w.head == len(w.pending) {
				w.pending, w.head = w.pending[:0], 0
			}
			w.mu.Unlock()
			return Event{TokenRef: ref}, nil
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return Event{}, ctx.Err()
		case <-w.notify:
		}
	}
}

// Close stops the watcher and removes it from its hub. It is idempotent.
func (w *Watcher) Close() {
	h := w.hub
	h.mu.Lock()
	if _, ok := h.watchers[w]; ok {
		delete(h.watchers, w)
		if h.gauge != nil {
			h.gauge.Dec()
		}
	}
	h.mu.Unlock()
	w.close()
}
