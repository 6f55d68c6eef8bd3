package upstream

import (
	"container/list"
	"context"
	"sync"
	"time"

	"github.com/go-json-experiment/json/jsontext"
)

// session is one upstream session (protocol versions before 2026-07-28): what
// initialize returned. Its fields are set before ready is closed and not
// changed after.
type session struct {
	key     string
	id      string // Mcp-Session-Id; "" when the server keeps no session
	version string
	caps    jsontext.Value

	ready chan struct{}
	err   error

	// Guarded by the pool's mutex.
	elem     *list.Element // in the LRU list; nil for the gateway's own session
	lastUsed time.Time
	inflight int
	dead     bool // no longer in the pool
	gone     bool // the upstream forgot it: no DELETE needed
}

func (s *session) created() bool {
	select {
	case <-s.ready:
		return s.err == nil
	default:
		return false
	}
}

// sessionPool keeps the sessions of one HTTP upstream, one per key: Caller.Key
// in per-caller mode, "" (the gateway's own session, also the catalog's) in
// shared mode and for the gateway's own requests. Per-caller sessions are
// bounded in number (least recently used out first) and in idle time; the
// gateway's own session is kept until Close. A session is created once for
// concurrent first calls of a key (the others wait for it), and ended with
// DELETE when it leaves the pool, unless the upstream already forgot it.
type sessionPool struct {
	max  int
	idle time.Duration
	// create runs initialize for a new session; end sends DELETE.
	create  func(ctx context.Context, caller Caller) (*session, error)
	end     func(*session)
	timeout time.Duration
	metrics Metrics

	mu     sync.Mutex
	byKey  map[string]*session
	lru    list.List // front: most recently used
	closed bool

	stop chan struct{}
	done chan struct{}
}

func newSessionPool(max int, idle, timeout time.Duration, metrics Metrics,
	create func(context.Context, Caller) (*session, error), end func(*session)) *sessionPool {
	p := &sessionPool{
		max: max, idle: idle, timeout: timeout, metrics: metrics,
		create: create, end: end,
		byKey: map[string]*session{},
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go p.sweep()
	return p
}

// acquire returns the session of key, creating it if needed, and counts a
// use; the caller must release it. It returns the creation's error (the same
// one to every caller waiting for it) or an error of ctx.
func (p *sessionPool) acquire(ctx context.Context, key string, caller Caller) (*session, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errPoolClosed
	}
	s := p.byKey[key]
	if s == nil {
		s = &session{key: key, ready: make(chan struct{})}
		p.byKey[key] = s
		if key != "" {
			s.elem = p.lru.PushFront(s)
		}
		// Creation outlives the first caller's context, since others may
		// be waiting for it; it has the call timeout of its own.
		go p.run(s, context.WithoutCancel(ctx), caller)
	} else if s.elem != nil {
		p.lru.MoveToFront(s.elem)
	}
	s.inflight++
	s.lastUsed = time.Now()
	p.evictLocked()
	p.mu.Unlock()

	select {
	case <-s.ready:
	case <-ctx.Done():
		p.release(s)
		return nil, ctx.Err()
	}
	if s.err != nil {
		p.release(s)
		return nil, s.err
	}
	return s, nil
}

func (p *sessionPool) run(s *session, ctx context.Context, caller Caller) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	created, err := p.create(ctx, caller)
	p.mu.Lock()
	if err != nil {
		s.err = err
		p.removeLocked(s)
	} else {
		s.id, s.version, s.caps = created.id, created.version, created.caps
		if p.closed {
			// Close came first: the session is nobody's.
			s.dead = true
			defer p.end(s)
		}
	}
	close(s.ready)
	p.metrics.Sessions(p.countLocked())
	p.mu.Unlock()
}

// release ends one use of s.
func (p *sessionPool) release(s *session) {
	p.mu.Lock()
	s.inflight--
	s.lastUsed = time.Now()
	end := s.dead && s.inflight == 0 && !s.gone && s.created()
	if end {
		s.gone = true // ended once
	}
	p.mu.Unlock()
	if end {
		p.end(s)
	}
}

// drop removes s because the upstream no longer knows it (HTTP 404).
func (p *sessionPool) drop(s *session) {
	p.mu.Lock()
	s.gone = true
	p.removeLocked(s)
	p.metrics.Sessions(p.countLocked())
	p.mu.Unlock()
}

func (p *sessionPool) removeLocked(s *session) {
	if p.byKey[s.key] == s {
		delete(p.byKey, s.key)
	}
	if s.elem != nil {
		p.lru.Remove(s.elem)
		s.elem = nil
	}
	s.dead = true
}

// evictLocked removes the least recently used sessions beyond max, skipping
// those in use (in-flight calls are bounded, so the excess is too).
func (p *sessionPool) evictLocked() {
	for e := p.lru.Back(); e != nil && p.lru.Len() > p.max; {
		s := e.Value.(*session)
		prev := e.Prev()
		if s.inflight == 0 && s.created() {
			p.retireLocked(s)
		}
		e = prev
	}
}

// retireLocked removes an unused session and ends it upstream.
func (p *sessionPool) retireLocked(s *session) {
	p.removeLocked(s)
	if !s.gone {
		s.gone = true
		go p.end(s)
	}
	p.metrics.Sessions(p.countLocked())
}

func (p *sessionPool) countLocked() int {
	n := 0
	for _, s := range p.byKey {
		if s.created() {
			n++
		}
	}
	return n
}

// sweep retires sessions idle for longer than p.idle.
func (p *sessionPool) sweep() {
	defer close(p.done)
	every := min(max(p.idle/4, 5*time.Millisecond), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			p.mu.Lock()
			for e := p.lru.Back(); e != nil; {
				s := e.Value.(*session)
				prev := e.Prev()
				if s.inflight == 0 && s.created() && now.Sub(s.lastUsed) > p.idle {
					p.retireLocked(s)
				}
				e = prev
			}
			p.mu.Unlock()
		}
	}
}

// close empties the pool and returns the sessions to end upstream.
func (p *sessionPool) close() []*session {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.stop)
	var out []*session
	for _, s := range p.byKey {
		ok := s.created() && !s.gone
		p.removeLocked(s)
		if ok {
			s.gone = true
			out = append(out, s)
		}
	}
	p.metrics.Sessions(0)
	p.mu.Unlock()
	<-p.done
	return out
}

// len returns the number of sessions held (created or being created).
func (p *sessionPool) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.byKey)
}
