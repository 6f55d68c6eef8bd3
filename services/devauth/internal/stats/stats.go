// Package stats counts the requests the test API reports through /dev/stats,
// so tests can prove that caching in authz actually spares the authorization
// server.
package stats

import (
	"sync/atomic"

	"github.com/mcpauthz/mcpauthz/internal/propelauthfake"
)

// Counters are safe for concurrent use; the zero value is ready. The PropelAuth
// backend counts introspections and user fetches (every request, faulted or
// not) into the embedded counters.
type Counters struct {
	propelauthfake.Counters
	TokensIssued atomic.Int64
}

// Snapshot is the JSON body of GET /dev/stats.
type Snapshot struct {
	Introspections int64 `json:"introspections"`
	UserFetches    int64 `json:"user_fetches"`
	TokensIssued   int64 `json:"tokens_issued"`
}

// Snapshot reads all counters.
func (c *Counters) Snapshot() Snapshot {
	return Snapshot{c.Introspections.Load(), c.UserFetches.Load(), c.TokensIssued.Load()}
}

// Reset sets all counters to zero.
func (c *Counters) Reset() {
	c.Introspections.Store(0)
	c.UserFetches.Store(0)
	c.TokensIssued.Store(0)
}
