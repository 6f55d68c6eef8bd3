package admission

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newLimiter(t *testing.T, o Options) (*Limiter, prometheus.Gauge, prometheus.Counter) {
	t.Helper()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "in_flight"})
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "rejected"})
	o.InFlight, o.Rejected = g, c
	l, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return l, g, c
}

func TestLimiter(t *testing.T) {
	t.Parallel()
	l, inFlight, rejected := newLimiter(t, Options{Max: 2, Wait: 20 * time.Millisecond})
	ctx := t.Context()
	r1, err := l.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := l.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(inFlight); n != 2 {
		t.Errorf("in flight = %v, want 2", n)
	}
	if _, err := l.Acquire(ctx); !errors.Is(err, ErrBusy) {
		t.Fatalf("third Acquire = %v, want ErrBusy", err)
	}
	if n := testutil.ToFloat64(rejected); n != 1 {
		t.Errorf("rejected = %v, want 1", n)
	}

	// A caller that goes away while waiting gets its own error, not counted.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := l.Acquire(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire with a canceled context = %v, want context.Canceled", err)
	}
	if n := testutil.ToFloat64(rejected); n != 1 {
		t.Errorf("rejected = %v after a canceled wait, want still 1", n)
	}

	// A slot freed during the wait is taken.
	wl, _, _ := newLimiter(t, Options{Max: 1, Wait: time.Minute})
	hold, err := wl.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(10 * time.Millisecond); hold() }()
	if _, err := wl.Acquire(ctx); err != nil {
		t.Errorf("Acquire while a slot frees = %v, want a slot", err)
	}

	r1()
	r2()
	if n := testutil.ToFloat64(inFlight); n != 0 {
		t.Errorf("in flight = %v after release, want 0", n)
	}
	if _, err := l.Acquire(ctx); err != nil {
		t.Errorf("Acquire after release = %v", err)
	}
}

func TestNoWait(t *testing.T) {
	t.Parallel()
	l, _, _ := newLimiter(t, Options{Max: 1, Wait: -1})
	if _, err := l.Acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(t.Context()); !errors.Is(err, ErrBusy) {
		t.Fatalf("Acquire beyond Max without a wait = %v, want ErrBusy", err)
	}
}

func TestNilLimiterAdmitsAll(t *testing.T) {
	t.Parallel()
	var l *Limiter
	for range 3 {
		release, err := l.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		release()
	}
	if _, err := New(Options{}); err == nil {
		t.Error("New accepted Max 0")
	}
}
