// Package admission bounds how many calls to the authorization server run at
// once (INTROSPECTION_MAX_IN_FLIGHT), so that a flood of distinct unknown tokens
// or user IDs costs a bounded number of outbound requests, goroutines and
// connections instead of one of each per request.
//
// # Waiting
//
// A call beyond the bound waits for a slot, first come first served, for at most
// [DefaultWait], then fails with [ErrBusy], which authz answers with UNAVAILABLE
// (the gateway's 503). The short wait absorbs bursts: a healthy authorization
// server frees a slot every latency/bound (under a millisecond at 64 slots and
// 50 ms), so a burst of a few times the bound is still served. A slow or flooded
// one frees none in time, and waiting longer would only hold the caller's
// goroutine and connection: it is told at once to come back later. Waiting
// never outlasts the waiter's context, so a call whose callers went away gives
// its place in the queue up at once.
package admission

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"
)

// ErrBusy is returned by [Limiter.Acquire] when no slot freed within the wait.
var ErrBusy = errors.New("too many calls to the authorization server in flight")

// DefaultWait is how long [Limiter.Acquire] waits for a slot; see the package
// documentation.
const DefaultWait = 250 * time.Millisecond

// Options configures a [Limiter].
type Options struct {
	// Max is the number of calls allowed at once (required, > 0).
	Max int
	// Wait bounds the wait for a slot; default DefaultWait. Negative: no wait.
	Wait time.Duration
	// InFlight, if set, follows the number of slots taken.
	InFlight prometheus.Gauge
	// Rejected, if set, counts ErrBusy answers.
	Rejected prometheus.Counter
}

// Limiter bounds concurrent calls. A nil *Limiter admits everything. It is safe
// for concurrent use.
type Limiter struct {
	sem      *semaphore.Weighted
	wait     time.Duration
	inFlight prometheus.Gauge
	rejected prometheus.Counter
}

// New returns a limiter. It returns an error if o.Max is not positive.
func New(o Options) (*Limiter, error) {
	if o.Max <= 0 {
		return nil, errors.New("admission: Max must be positive")
	}
	if o.Wait == 0 {
		o.Wait = DefaultWait
	}
	return &Limiter{sem: semaphore.NewWeighted(int64(o.Max)), wait: max(o.Wait, 0), inFlight: o.InFlight, rejected: o.Rejected}, nil
}

// Acquire takes a slot and returns the function that gives it back (call it
// exactly once). Errors: ErrBusy when no slot freed within the wait, or ctx's
// error when ctx ended first.
func (l *Limiter) Acquire(ctx context.Context) (release func(), err error) {
	if l == nil {
		return func() {}, nil
	}
	if !l.sem.TryAcquire(1) {
		if err := l.waitForSlot(ctx); err != nil {
			return nil, err
		}
	}
	if l.inFlight != nil {
		l.inFlight.Inc()
	}
	return l.release, nil
}

func (l *Limiter) waitForSlot(ctx context.Context) error {
	if l.wait <= 0 {
		return l.busy(ctx)
	}
	wctx, cancel := context.WithTimeout(ctx, l.wait)
	defer cancel()
	if err := l.sem.Acquire(wctx, 1); err != nil {
		return l.busy(ctx)
	}
	return nil
}

// busy returns ctx's error if ctx ended, else ErrBusy (counted).
func (l *Limiter) busy(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if l.rejected != nil {
		l.rejected.Inc()
	}
	return ErrBusy
}

func (l *Limiter) release() {
	if l.inFlight != nil {
		l.inFlight.Dec()
	}
	l.sem.Release(1)
}
