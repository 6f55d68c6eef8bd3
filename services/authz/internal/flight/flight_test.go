package flight

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// step is a fetch the test drives: it reports when it runs, waits for the test
// before and after committing, and records what it could do.
type step struct {
	started   chan struct{}
	proceed   chan struct{} // closed by the test: go on to Commit
	finish    chan struct{} // closed by the test: go on from Commit to Keep
	calls     atomic.Int64
	committed atomic.Bool
	kept      atomic.Bool
	// ended: the fetch saw its context end, while waiting to commit or after.
	ended atomic.Bool
}

func newStep() *step {
	return &step{started: make(chan struct{}, 100), proceed: make(chan struct{}), finish: make(chan struct{})}
}

func (s *step) fetch(c *Call[string, string]) (string, error) {
	s.calls.Add(1)
	s.started <- struct{}{}
	select {
	case <-s.proceed:
	case <-c.Context().Done():
		s.ended.Store(true)
		return "", c.Context().Err()
	}
	if !c.Commit() {
		return "", errors.New("nobody waits")
	}
	s.committed.Store(true)
	<-s.finish
	s.ended.Store(c.Context().Err() != nil)
	s.kept.Store(c.Keep(func() {}))
	return "v", nil
}

func waitStarted(t *testing.T, s *step) {
	t.Helper()
	select {
	case <-s.started:
	case <-time.After(5 * time.Second):
		t.Fatal("fetch did not start")
	}
}

func TestCoalesces(t *testing.T) {
	t.Parallel()
	var g Group[string, string]
	s := newStep()
	var wg sync.WaitGroup
	var joined atomic.Int64
	for range 10 {
		wg.Go(func() {
			v, j, err := g.Do(t.Context(), "k", s.fetch)
			if err != nil || v != "v" {
				t.Errorf("Do = %q, %v", v, err)
			}
			if j {
				joined.Add(1)
			}
		})
	}
	waitStarted(t, s)
	for g.waiters("k") < 10 {
		time.Sleep(time.Millisecond)
	}
	close(s.proceed)
	close(s.finish)
	wg.Wait()
	if n := s.calls.Load(); n != 1 {
		t.Errorf("fetches = %d, want 1", n)
	}
	if n := joined.Load(); n != 9 {
		t.Errorf("joined = %d, want 9", n)
	}
	if !s.kept.Load() {
		t.Error("Keep refused a fetch nobody invalidated")
	}
	if n := g.Len(); n != 0 {
		t.Errorf("Len = %d after the fetch, want 0", n)
	}
}

// waiters returns the number of callers waiting for key's fetch (tests only).
func (g *Group[K, V]) waiters(key K) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.calls[key]; c != nil {
		return c.waiters
	}
	return 0
}

// TestAbandonedBeforeCommit: when every caller has gone before Commit, the
// fetch's context ends, Commit refuses, nothing is kept, and the next caller
// starts a fetch of its own.
func TestAbandonedBeforeCommit(t *testing.T) {
	t.Parallel()
	var g Group[string, string]
	s := newStep()
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 2)
	for range 2 {
		go func() {
			_, _, err := g.Do(ctx, "k", s.fetch)
			errc <- err
		}()
	}
	waitStarted(t, s)
	for g.waiters("k") < 2 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	for range 2 {
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("Do = %v, want context.Canceled", err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for !s.ended.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the abandoned fetch's context did not end")
		}
		time.Sleep(time.Millisecond)
	}
	if s.committed.Load() {
		t.Error("the abandoned fetch committed")
	}
	if n := g.Len(); n != 0 {
		t.Errorf("Len = %d after abandonment, want 0", n)
	}

	// A new caller does not join the abandoned fetch.
	s2 := newStep()
	close(s2.proceed)
	close(s2.finish)
	if v, joined, err := g.Do(t.Context(), "k", s2.fetch); err != nil || joined || v != "v" {
		t.Fatalf("Do after abandonment = %q, joined %v, %v; want a fetch of its own", v, joined, err)
	}
}

// TestCommittedOutlivesCallers: after Commit the fetch runs to the end with a live
// context, and keeps its result, though every caller has gone.
func TestCommittedOutlivesCallers(t *testing.T) {
	t.Parallel()
	var g Group[string, string]
	s := newStep()
	close(s.proceed)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, _, err := g.Do(ctx, "k", s.fetch)
		errc <- err
	}()
	waitStarted(t, s)
	for !s.committed.Load() {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Do = %v, want context.Canceled", err)
	}
	close(s.finish)
	for g.Len() != 0 {
		time.Sleep(time.Millisecond)
	}
	if s.ended.Load() {
		t.Error("the committed fetch's context ended before it returned")
	}
	if !s.kept.Load() {
		t.Error("committed fetch could not keep its result")
	}
}

// TestInvalidate: invalidating a key in flight stops that fetch from keeping its
// result, and runs drop; other keys and later fetches are untouched.
func TestInvalidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		invalidate func(g *Group[string, string], drop func())
		wantKeptA  bool
	}{
		{"same key", func(g *Group[string, string], drop func()) { g.Invalidate("a", drop) }, false},
		{"other key", func(g *Group[string, string], drop func()) { g.Invalidate("b", drop) }, true},
		{"all", func(g *Group[string, string], drop func()) { g.InvalidateAll(drop) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var g Group[string, string]
			s := newStep()
			close(s.proceed)
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _, _ = g.Do(t.Context(), "a", s.fetch)
			}()
			waitStarted(t, s)
			dropped := false
			tt.invalidate(&g, func() { dropped = true })
			if !dropped {
				t.Error("drop did not run")
			}
			close(s.finish)
			<-done
			if got := s.kept.Load(); got != tt.wantKeptA {
				t.Errorf("kept = %v, want %v", got, tt.wantKeptA)
			}
			// A fetch that starts after the invalidation keeps its result.
			s2 := newStep()
			close(s2.proceed)
			close(s2.finish)
			if _, _, err := g.Do(t.Context(), "a", s2.fetch); err != nil || !s2.kept.Load() {
				t.Errorf("later fetch: %v, kept %v; want kept", err, s2.kept.Load())
			}
		})
	}
}

func TestDoWithEndedContext(t *testing.T) {
	t.Parallel()
	var g Group[string, string]
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	ran := false
	if _, _, err := g.Do(ctx, "k", func(*Call[string, string]) (string, error) { ran = true; return "", nil }); !errors.Is(err, context.Canceled) || ran {
		t.Errorf("Do with an ended context = %v, ran %v; want context.Canceled without a fetch", err, ran)
	}
}
