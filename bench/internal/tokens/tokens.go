// Package tokens hands bearer tokens to load workers: cycling over a fixed set
// (warm caches), each token once (cold caches), or a set whose members are
// replaced over time (churn).
//
// Every source is safe for concurrent use and takes no lock per request.
package tokens

import (
	"sync"
	"sync/atomic"
)

// Source gives the token for a worker's next request, or false when it has no
// more tokens to give.
type Source interface {
	Next() (string, bool)
}

// Cycle hands out a fixed set of tokens in turn, forever.
type Cycle struct {
	toks []string
	i    atomic.Uint64
}

// NewCycle returns a [Cycle] over toks, which must not be empty.
func NewCycle(toks []string) *Cycle {
	if len(toks) == 0 {
		panic("tokens.NewCycle: no tokens")
	}
	return &Cycle{toks: toks}
}

// Next returns the next token of the cycle; it never runs out.
func (c *Cycle) Next() (string, bool) {
	return c.toks[(c.i.Add(1)-1)%uint64(len(c.toks))], true
}

// Once hands out each of its tokens exactly once.
type Once struct {
	toks []string
	i    atomic.Int64
}

// NewOnce returns a [Once] over toks.
func NewOnce(toks []string) *Once { return &Once{toks: toks} }

// Next returns a token never handed out before, or false when all are used.
func (o *Once) Next() (string, bool) {
	i := o.i.Add(1) - 1
	if i >= int64(len(o.toks)) {
		return "", false
	}
	return o.toks[i], true
}

// Used returns how many tokens were handed out.
func (o *Once) Used() int { return int(min(o.i.Load(), int64(len(o.toks)))) }

// Churn cycles over an active set of tokens whose oldest members [Churn.Rotate]
// replaces with new ones from a reserve, as real traffic does when clients
// refresh tokens and new users arrive.
type Churn struct {
	active atomic.Pointer[[]string]
	i      atomic.Uint64

	mu      sync.Mutex // serialises Rotate
	reserve []string
	oldest  int
	added   int
}

// NewChurn returns a [Churn] that starts with active (not empty) and draws new
// tokens from reserve.
func NewChurn(active, reserve []string) *Churn {
	if len(active) == 0 {
		panic("tokens.NewChurn: no active tokens")
	}
	c := &Churn{reserve: reserve}
	a := append([]string(nil), active...)
	c.active.Store(&a)
	return c
}

// Next returns the next token of the active set; it never runs out.
func (c *Churn) Next() (string, bool) {
	a := *c.active.Load()
	return a[(c.i.Add(1)-1)%uint64(len(a))], true
}

// Rotate replaces the k oldest active tokens with new tokens from the reserve
// and returns how many it replaced (fewer than k once the reserve runs low).
func (c *Churn) Rotate(k int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	k = min(k, len(c.reserve))
	if k <= 0 {
		return 0
	}
	a := append([]string(nil), *c.active.Load()...)
	for j := range k {
		a[(c.oldest+j)%len(a)] = c.reserve[j]
	}
	c.oldest = (c.oldest + k) % len(a)
	c.reserve = c.reserve[k:]
	c.added += k
	c.active.Store(&a)
	return k
}

// Added returns how many new tokens Rotate has brought in.
func (c *Churn) Added() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.added
}
