// Package ratelog limits how often a recurring condition is logged, so an outage
// produces one log line per period instead of one per request.
package ratelog

import (
	"sync/atomic"
	"time"
)

// Limiter allows one event per period. The zero value allows every event; it is safe
// for concurrent use.
type Limiter struct {
	// Every is the period.
	Every time.Duration

	last       atomic.Int64
	suppressed atomic.Int64
}

// Allow reports whether this event may be logged and, if so, how many were
// suppressed since the last one that was.
func (l *Limiter) Allow() (ok bool, suppressed int64) {
	now := time.Now().UnixNano()
	last := l.last.Load()
	if now-last >= int64(l.Every) && l.last.CompareAndSwap(last, now) {
		return true, l.suppressed.Swap(0)
	}
	l.suppressed.Add(1)
	return false, 0
}
