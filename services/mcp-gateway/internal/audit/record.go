package audit

import (
	"context"
	"sync"
)

// Record is the part of a request's event that is learnt after the gateway
// has decided, deeper in the request path: the upstream a federated request is
// routed to. The gateway puts one in every allowed request's context
// ([NewContext]); code that routes the request names the upstream with
// [SetUpstream]. It is safe for concurrent use, since the go-sdk may run a
// handler on a goroutine of its own.
type Record struct {
	mu       sync.Mutex
	upstream string
}

type recordKey struct{}

// NewContext returns ctx carrying r.
func NewContext(ctx context.Context, r *Record) context.Context {
	return context.WithValue(ctx, recordKey{}, r)
}

// FromContext returns the Record of ctx, or nil.
func FromContext(ctx context.Context) *Record {
	r, _ := ctx.Value(recordKey{}).(*Record)
	return r
}

// SetUpstream names the upstream MCP server the request of ctx is routed to,
// for its audit event. It does nothing when ctx carries no Record (the audit
// log is off, or ctx is not a request's).
func SetUpstream(ctx context.Context, name string) {
	FromContext(ctx).SetUpstream(name)
}

// SetUpstream names the upstream the request is routed to; the last name set
// wins. On a nil Record it does nothing.
func (r *Record) SetUpstream(name string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.upstream = name
	r.mu.Unlock()
}

// Upstream returns the name set with [Record.SetUpstream], or "".
func (r *Record) Upstream() string {
	if r == nil {
		return ""
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.upstream
}
