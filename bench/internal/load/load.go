// Package load runs a closed-loop load: N workers each issue one request, wait
// for its answer, and issue the next, for a bounded time. It records every
// request's latency in a per-worker [hist.Histogram] and counts outcomes by
// label, so the hot loop takes no lock.
//
// A run has a warm-up phase (requests are made but not recorded: connections
// are opened, pools and caches filled) followed by the measured phase. A run
// always ends by itself: when the measured phase is over, when every worker
// has run out of work, or at a hard deadline that cancels requests in flight.
package load

import (
	"context"
	"sync"
	"time"

	"github.com/mcpauthz/mcpauthz/bench/internal/hist"
)

// OK is the outcome label of a successful request. Any other non-empty label
// names a kind of error (e.g. "http 503", "grpc Unavailable").
const OK = "ok"

// Stop is the label an [Op] returns when it has no more work (e.g. a pool of
// single-use tokens is exhausted). The worker ends; nothing is recorded.
const Stop = ""

// Op performs one request for worker (0 <= worker < concurrency) and returns
// its outcome label. It must honour ctx: the hard deadline cancels it.
type Op func(ctx context.Context, worker int) string

// Options bounds a run.
type Options struct {
	// Concurrency is the number of workers (clients); at least 1.
	Concurrency int
	// Warmup is how long requests are made before recording starts.
	Warmup time.Duration
	// Duration is the length of the measured phase.
	Duration time.Duration
	// Grace is how long requests in flight at the end may take before they are
	// cancelled; [DefaultGrace] when zero.
	Grace time.Duration
	// OnMeasure, if set, is called once as the measured phase starts (e.g. to
	// snapshot the authorization server's counters).
	OnMeasure func()
}

// Result is what a run measured. Only requests started in the measured phase
// count.
type Result struct {
	Concurrency int
	// Requests is the number of requests recorded.
	Requests uint64
	// Outcomes counts requests by label, [OK] included.
	Outcomes map[string]uint64
	// Latency holds the latency of every recorded request, whatever its outcome.
	Latency *hist.Histogram
	// Elapsed is from the start of the measured phase to the end of the last
	// recorded request.
	Elapsed time.Duration
	// Exhausted is set when workers stopped because they ran out of work.
	Exhausted bool
}

// Merge adds o, another run of the same op at the same concurrency, to r:
// counts and latencies add up, as does the measured time, so the merged
// throughput is the total requests over the total measured time.
func (r *Result) Merge(o Result) {
	if r.Outcomes == nil {
		r.Outcomes = map[string]uint64{}
	}
	if r.Latency == nil {
		r.Latency = hist.New()
	}
	r.Concurrency = max(r.Concurrency, o.Concurrency)
	r.Requests += o.Requests
	for k, v := range o.Outcomes {
		r.Outcomes[k] += v
	}
	if o.Latency != nil {
		r.Latency.Merge(o.Latency)
	}
	r.Elapsed += o.Elapsed
	r.Exhausted = r.Exhausted || o.Exhausted
}

// Errors returns the number of recorded requests whose outcome is not [OK].
func (r Result) Errors() uint64 { return r.Requests - r.Outcomes[OK] }

// Throughput returns recorded requests per second.
func (r Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

type worker struct {
	h         *hist.Histogram
	outcomes  map[string]uint64
	last      time.Time
	exhausted bool
}

// DefaultGrace is [Options.Grace] when it is zero.
const DefaultGrace = 5 * time.Second

// Run runs op with opts.Concurrency workers until the measured phase ends and
// returns what was recorded. It returns early, with what it has, if ctx ends.
func Run(ctx context.Context, opts Options, op Op) Result {
	n := max(opts.Concurrency, 1)
	grace := opts.Grace
	if grace <= 0 {
		grace = DefaultGrace
	}
	start := time.Now()
	measureStart := start.Add(opts.Warmup)
	end := measureStart.Add(opts.Duration)
	ctx, cancel := context.WithDeadline(ctx, end.Add(grace))
	defer cancel()

	var measureOnce sync.Once
	onMeasure := func() {
		measureOnce.Do(func() {
			if opts.OnMeasure != nil {
				opts.OnMeasure()
			}
		})
	}
	var timerWG sync.WaitGroup
	if opts.Warmup > 0 {
		timer := time.NewTimer(opts.Warmup)
		timerWG.Go(func() {
			select {
			case <-timer.C:
				onMeasure()
			case <-ctx.Done():
			}
		})
		defer timer.Stop()
	} else {
		onMeasure()
	}

	workers := make([]*worker, n)
	var wg sync.WaitGroup
	for i := range n {
		w := &worker{h: hist.New(), outcomes: map[string]uint64{}}
		workers[i] = w
		wg.Go(func() {
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				label := op(ctx, i)
				t1 := time.Now()
				if label == Stop {
					w.exhausted = true
					return
				}
				if t0.Before(measureStart) {
					continue
				}
				w.h.Record(t1.Sub(t0))
				w.outcomes[label]++
				w.last = t1
			}
		})
	}
	wg.Wait()
	cancel()
	timerWG.Wait()

	res := Result{Concurrency: n, Outcomes: map[string]uint64{}, Latency: hist.New()}
	var last time.Time
	for _, w := range workers {
		res.Latency.Merge(w.h)
		for k, v := range w.outcomes {
			res.Outcomes[k] += v
		}
		if w.last.After(last) {
			last = w.last
		}
		res.Exhausted = res.Exhausted || w.exhausted
	}
	res.Requests = res.Latency.Count()
	if res.Requests > 0 {
		res.Elapsed = last.Sub(measureStart)
	}
	return res
}

// Burst runs n requests at once: n goroutines each run prepare (if set; e.g.
// one request that opens the goroutine's connection), wait until all are
// prepared, then run op exactly once together. Only op is recorded. timeout
// bounds the whole burst.
func Burst(ctx context.Context, n int, timeout time.Duration, prepare, op Op) Result {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var ready, wg sync.WaitGroup
	gate := make(chan struct{})
	type one struct {
		d     time.Duration
		label string
		end   time.Time
	}
	out := make([]one, n)
	ready.Add(n)
	for i := range n {
		wg.Go(func() {
			if prepare != nil {
				prepare(ctx, i)
			}
			ready.Done()
			select {
			case <-gate:
			case <-ctx.Done():
				out[i] = one{label: Stop}
				return
			}
			t0 := time.Now()
			label := op(ctx, i)
			t1 := time.Now()
			out[i] = one{d: t1.Sub(t0), label: label, end: t1}
		})
	}
	ready.Wait()
	start := time.Now()
	close(gate)
	wg.Wait()

	res := Result{Concurrency: n, Outcomes: map[string]uint64{}, Latency: hist.New()}
	var last time.Time
	for _, o := range out {
		if o.label == Stop {
			continue
		}
		res.Latency.Record(o.d)
		res.Outcomes[o.label]++
		if o.end.After(last) {
			last = o.end
		}
	}
	res.Requests = res.Latency.Count()
	if res.Requests > 0 {
		res.Elapsed = last.Sub(start)
	}
	return res
}
