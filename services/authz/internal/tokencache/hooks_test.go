package tokencache

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/rediscache"
)

// recorder collects what a cache tells its OnInvalidate and OnReset hooks.
type recorder struct {
	mu     sync.Mutex
	refs   []string
	resets int
}

func (r *recorder) hooks(o *Options) {
	o.OnInvalidate = func(ref string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.refs = append(r.refs, ref)
	}
	o.OnReset = func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.resets++
	}
}

func (r *recorder) got() ([]string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.refs), r.resets
}

func TestHooksWithoutRedis(t *testing.T) {
	t.Parallel()
	clk := &clock{}
	f := &fakeFetcher{reply: activeUntil(time.Now().Add(time.Hour).Unix())}
	var rec recorder
	c := newCache(t, f, clk, rec.hooks)
	c.Run(t.Context()) // returns at once without Redis, and resets nobody
	if err := c.Invalidate(t.Context(), "tok"); err != nil {
		t.Fatal(err)
	}
	refs, resets := rec.got()
	k := c.Key("tok")
	if want := []string{FullRef(k)}; !slices.Equal(refs, want) || resets != 0 {
		t.Errorf("hooks heard %v and %d resets, want %v and none", refs, resets, want)
	}
	if len(refs[0]) != 64 {
		t.Errorf("ref %q is not 64 hex digits", refs[0])
	}
}

// TestHooksWithRedis: each replica hears its own and the other's invalidations
// through Redis, a reset on every (re)subscription, and its own invalidation even
// when Redis is down.
func TestHooksWithRedis(t *testing.T) {
	t.Parallel()
	rd := testenv.StartRedis(t)
	f := &fakeFetcher{reply: activeUntil(time.Now().Add(time.Hour).Unix())}
	var recA, recB recorder
	caches := make([]*Cache, 2)
	for i, rec := range []*recorder{&recA, &recB} {
		store, err := rediscache.New(rd.URL(), rediscache.Options{Backoff: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		caches[i] = newCache(t, f, &clock{}, func(o *Options) { o.Store = store; rec.hooks(o) })
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { caches[i].Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	a := caches[0]
	resets := func(rec *recorder) int { _, n := rec.got(); return n }
	eventually(t, func() bool { return resets(&recA) == 1 && resets(&recB) == 1 })

	if err := a.Invalidate(t.Context(), "tok"); err != nil {
		t.Fatal(err)
	}
	ref := FullRef(a.Key("tok"))
	// a hears it once locally and once more as its own echo.
	heard := func(rec *recorder, n int) func() bool {
		return func() bool {
			refs, _ := rec.got()
			return len(refs) == n && !slices.ContainsFunc(refs, func(r string) bool { return r != ref })
		}
	}
	eventually(t, heard(&recB, 1))
	eventually(t, heard(&recA, 2))

	rd.Stop()
	if err := a.Invalidate(t.Context(), "tok"); !errors.Is(err, ErrInvalidationIncomplete) {
		t.Fatalf("Invalidate with Redis down = %v, want ErrInvalidationIncomplete", err)
	}
	eventually(t, heard(&recA, 3))
	if err := rd.Start(); err != nil {
		t.Fatal(err)
	}
	// The resubscription can take a few seconds (go-redis reconnect backoff).
	deadline := time.Now().Add(15 * time.Second)
	for resets(&recA) < 2 || resets(&recB) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("resets after the Redis restart: a %d, b %d; want 2 each", resets(&recA), resets(&recB))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
