// Package throttle counts failures per key (an account, a client address)
// in fixed windows, in bounded memory, so devauth can refuse sign-in attempts
// after too many failed ones.
//
// A key's window opens at its first failure and lasts [Limiter.Window]; once
// it holds [Limiter.Limit] failures the key is blocked until the window ends.
// At most Max keys are tracked: when full, the key whose window opened first
// is forgotten. That can only help an attacker who controls more keys than
// Max (addresses), who could spread attempts over them anyway.
package throttle

import (
	"container/list"
	"sync"
	"time"
)

// Limiter is safe for concurrent use. The zero value is not usable; call [New].
type Limiter struct {
	limit  int
	window time.Duration
	max    int
	now    func() time.Time

	mu    sync.Mutex
	m     map[string]*entry
	order *list.List // of *entry, by window start, oldest first
}

type entry struct {
	key      string
	failures int
	end      time.Time
	elem     *list.Element
}

// New returns a Limiter blocking a key after limit failures within window,
// tracking at most max keys. now may be nil (time.Now).
func New(limit int, window time.Duration, max int, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{limit: limit, window: window, max: max, now: now, m: map[string]*entry{}, order: list.New()}
}

// Window returns the length of a counting window.
func (l *Limiter) Window() time.Duration { return l.window }

// liveLocked returns key's entry if its window is still open, dropping it
// otherwise.
func (l *Limiter) liveLocked(key string, now time.Time) *entry {
	e := l.m[key]
	if e != nil && !now.Before(e.end) {
		l.removeLocked(e)
		return nil
	}
	return e
}

func (l *Limiter) removeLocked(e *entry) {
	l.order.Remove(e.elem)
	delete(l.m, e.key)
}

// Blocked reports whether key has used up its failures in the current
// window, and if so how long until it may try again.
func (l *Limiter) Blocked(key string) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	e := l.liveLocked(key, now)
	if e == nil || e.failures < l.limit {
		return 0, false
	}
	return e.end.Sub(now), true
}

// Fail records a failure for key.
func (l *Limiter) Fail(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if e := l.liveLocked(key, now); e != nil {
		e.failures++
		return
	}
	for l.order.Len() >= l.max {
		// The oldest window ends first: expired entries go first, then the
		// oldest live one.
		l.removeLocked(l.order.Front().Value.(*entry))
	}
	e := &entry{key: key, failures: 1, end: now.Add(l.window)}
	e.elem = l.order.PushBack(e)
	l.m[key] = e
}

// Reset forgets key's failures.
func (l *Limiter) Reset(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.m[key]; e != nil {
		l.removeLocked(e)
	}
}

// Len returns the number of keys tracked.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.order.Len()
}
