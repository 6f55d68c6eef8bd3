// Package ratelog limits how often a recurring condition is logged, so an outage
// or a burst produces one log line per period instead of one per event, and the
// line that is logged says how many were left out.
//
// Every service limits its logs with it, so they all do so the same way.
package ratelog

import (
	"sync/atomic"
	"time"
)

// Limiter allows one event per period. The zero value allows every event; it is
// safe for concurrent use.
type Limiter struct {
	// Every is the period.
	Every time.Duration

	last       atomic.Int64
	suppressed atomic.Int64
}

// Allow reports whether an event happening now may be logged and, if so, how
// many were suppressed since the last one that was.
func (l *Limiter) Allow() (ok bool, suppressed int64) {
	return l.AllowAt(time.Now())
}

// AllowAt is [Limiter.Allow] for an event at now, for callers with a clock of
// their own (a test clock, say). Times must not go backwards by more than the
// period between calls.
func (l *Limiter) AllowAt(now time.Time) (ok bool, suppressed int64) {
	n := now.UnixNano()
	last := l.last.Load()
	if (last == 0 || n-last >= int64(l.Every)) && l.last.CompareAndSwap(last, n) {
		return true, l.suppressed.Swap(0)
	}
	l.suppressed.Add(1)
	return false, 0
}
