package upstream

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// TestSessionsBoundedLRU: beyond MaxSessions, the least recently used
// caller's session is ended (DELETE) and made again when that caller comes
// back.
func TestSessionsBoundedLRU(t *testing.T) {
	t.Parallel()
	u := startGoUpstream(t, false, false)
	m := &metricsRecorder{}
	c, _ := newTestConn(t, Options{URL: u.URL, MaxSessions: 2, Metrics: m})
	call := func(key string) {
		t.Helper()
		if _, err := callTool(t.Context(), c, Caller{Key: key}, "add", `{"a":1,"b":1}`, nil); err != nil {
			t.Fatal(err)
		}
	}
	call("a")
	call("b")
	call("a") // b is now the least recently used
	if got := u.deletes.Load(); got != 0 {
		t.Fatalf("%d sessions ended within the bound", got)
	}
	call("c")
	waitFor(t, "b's session to end", func() bool { return u.deletes.Load() == 1 && u.sessions() == 2 })
	pool := c.t.(*httpTransport).pool
	pool.mu.Lock()
	_, hasB := pool.byKey["b"]
	pool.mu.Unlock()
	if hasB || pool.len() != 2 {
		t.Errorf("pool holds b: %v, %d sessions", hasB, pool.len())
	}
	call("b")
	waitFor(t, "a's session to end", func() bool { return u.deletes.Load() == 2 })
	if got := u.count("initialize"); got != 4 {
		t.Errorf("%d sessions made, want 4 (a, b, c, b again)", got)
	}
	m.mu.Lock()
	sessions := m.sessions
	m.mu.Unlock()
	if sessions != 2 {
		t.Errorf("sessions metric %d, want 2", sessions)
	}
}

// TestSessionsIdle: a session unused for SessionIdle is ended; the gateway's
// own session is kept.
func TestSessionsIdle(t *testing.T) {
	t.Parallel()
	u := startGoUpstream(t, false, false)
	c, _ := newTestConn(t, Options{URL: u.URL, SessionIdle: 100 * time.Millisecond})
	if _, err := c.Catalog(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := callTool(t.Context(), c, Caller{Key: "a"}, "add", `{}`, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the idle session to end", func() bool { return u.deletes.Load() == 1 })
	pool := c.t.(*httpTransport).pool
	pool.mu.Lock()
	_, own := pool.byKey[""]
	pool.mu.Unlock()
	if !own || pool.len() != 1 {
		t.Errorf("after the idle time: own session kept %v, %d sessions", own, pool.len())
	}
}

// TestSessionsSingleflight: concurrent first calls of one caller make one
// session.
func TestSessionsSingleflight(t *testing.T) {
	t.Parallel()
	u := startGoUpstream(t, false, false)
	c, _ := newTestConn(t, Options{URL: u.URL})
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := callTool(t.Context(), c, Caller{Key: "z"}, "add", `{}`, nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := u.count("initialize"); got != 1 {
		t.Errorf("%d sessions made for one caller, want 1", got)
	}
}

// TestCloseEndsSessions: Close ends every session upstream, and later calls
// fail with ErrClosed.
func TestCloseEndsSessions(t *testing.T) {
	t.Parallel()
	u := startGoUpstream(t, false, false)
	c, _ := newTestConn(t, Options{URL: u.URL})
	for _, k := range []string{"", "a", "b"} {
		if _, err := callTool(t.Context(), c, Caller{Key: k}, "add", `{}`, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := u.deletes.Load(); got != 3 {
		t.Errorf("%d sessions ended, want 3", got)
	}
	if _, err := callTool(t.Context(), c, Caller{Key: "a"}, "add", `{}`, nil); !isClosed(err) {
		t.Errorf("call after Close: %v", err)
	}
}

func isClosed(err error) bool { return errors.Is(err, ErrClosed) && errors.Is(err, ErrUnavailable) }
