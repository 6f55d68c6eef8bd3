package load

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestRunCountsOutcomesOfMeasuredPhaseOnly(t *testing.T) {
	t.Parallel()
	var calls, measuredCalls atomic.Int64
	var measuring atomic.Bool
	var onMeasure atomic.Int32
	op := func(ctx context.Context, worker int) string {
		n := calls.Add(1)
		if measuring.Load() {
			measuredCalls.Add(1)
		}
		time.Sleep(200 * time.Microsecond)
		if n%10 == 0 {
			return "http 503"
		}
		return OK
	}
	res := Run(t.Context(), Options{
		Concurrency: 3,
		Warmup:      50 * time.Millisecond,
		Duration:    100 * time.Millisecond,
		OnMeasure: func() {
			onMeasure.Add(1)
			measuring.Store(true)
		},
	}, op)

	if got := onMeasure.Load(); got != 1 {
		t.Errorf("OnMeasure called %d times, want 1", got)
	}
	if res.Requests == 0 {
		t.Fatal("no request recorded")
	}
	if res.Requests >= uint64(calls.Load()) {
		t.Errorf("recorded %d of %d calls: warm-up requests must not be recorded", res.Requests, calls.Load())
	}
	var sum uint64
	for _, v := range res.Outcomes {
		sum += v
	}
	if sum != res.Requests || res.Latency.Count() != res.Requests {
		t.Errorf("outcomes sum %d, histogram count %d, requests %d: must agree", sum, res.Latency.Count(), res.Requests)
	}
	if res.Outcomes["http 503"] == 0 || res.Errors() != res.Outcomes["http 503"] {
		t.Errorf("outcomes %v, Errors() %d: want the 503s counted as errors", res.Outcomes, res.Errors())
	}
	if res.Elapsed <= 0 || res.Throughput() <= 0 {
		t.Errorf("Elapsed %v, Throughput %v: want positive", res.Elapsed, res.Throughput())
	}
	if res.Concurrency != 3 || res.Exhausted {
		t.Errorf("Concurrency %d Exhausted %v, want 3 false", res.Concurrency, res.Exhausted)
	}
}

func TestRunStopsWhenWorkRunsOut(t *testing.T) {
	t.Parallel()
	var left atomic.Int64
	left.Store(100)
	op := func(ctx context.Context, worker int) string {
		if left.Add(-1) < 0 {
			return Stop
		}
		return OK
	}
	// A long duration: the run must end because the work ran out.
	res := Run(t.Context(), Options{Concurrency: 4, Duration: time.Minute}, op)
	if diff := cmp.Diff(map[string]uint64{OK: 100}, res.Outcomes); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if !res.Exhausted {
		t.Error("Exhausted = false, want true")
	}
}

func TestRunHardDeadlineCancelsHungRequests(t *testing.T) {
	t.Parallel()
	op := func(ctx context.Context, worker int) string {
		<-ctx.Done()
		return "canceled"
	}
	done := make(chan Result, 1)
	go func() {
		done <- Run(t.Context(), Options{Concurrency: 2, Duration: 20 * time.Millisecond, Grace: 50 * time.Millisecond}, op)
	}()
	select {
	case res := <-done:
		if got := res.Outcomes["canceled"]; got != 2 {
			t.Errorf("outcomes %v, want 2 canceled", res.Outcomes)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its hard deadline")
	}
}

func TestBurstRunsAllAtOnce(t *testing.T) {
	t.Parallel()
	const n = 50
	var prepared, inside atomic.Int64
	var mu sync.Mutex
	maxInside := int64(0)
	prepare := func(ctx context.Context, worker int) string {
		prepared.Add(1)
		return OK
	}
	op := func(ctx context.Context, worker int) string {
		if prepared.Load() != n {
			return "not prepared"
		}
		cur := inside.Add(1)
		mu.Lock()
		maxInside = max(maxInside, cur)
		mu.Unlock()
		// Wait (bounded) until every op is inside at the same time: only a
		// true burst gets there.
		deadline := time.Now().Add(5 * time.Second)
		for inside.Load() < n && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		return OK
	}
	res := Burst(t.Context(), n, 10*time.Second, prepare, op)
	if diff := cmp.Diff(map[string]uint64{OK: n}, res.Outcomes); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if maxInside != n {
		t.Errorf("at most %d ops ran at once, want %d", maxInside, n)
	}
}

func TestMerge(t *testing.T) {
	t.Parallel()
	op := func(ctx context.Context, worker int) string { return OK }
	a := Run(t.Context(), Options{Concurrency: 2, Duration: 20 * time.Millisecond}, op)
	b := Run(t.Context(), Options{Concurrency: 2, Duration: 20 * time.Millisecond}, op)
	var m Result
	m.Merge(a)
	m.Merge(b)
	if m.Requests != a.Requests+b.Requests || m.Outcomes[OK] != m.Requests || m.Latency.Count() != m.Requests {
		t.Errorf("merged requests %d, ok %d, latencies %d; want %d each", m.Requests, m.Outcomes[OK], m.Latency.Count(), a.Requests+b.Requests)
	}
	if m.Elapsed != a.Elapsed+b.Elapsed || m.Concurrency != 2 {
		t.Errorf("merged elapsed %v concurrency %d, want %v 2", m.Elapsed, m.Concurrency, a.Elapsed+b.Elapsed)
	}
}
