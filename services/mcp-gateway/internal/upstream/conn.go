package upstream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-json-experiment/json/jsontext"
)

// transport is one way of reaching the upstream: streamable HTTP or stdio. The
// conn around it applies what both share: the call timeout, the concurrency
// bound, metrics, the catalog and the change signal.
type transport interface {
	// call sends one request. ctx carries the call's deadline.
	call(ctx context.Context, c Caller, method string, params jsontext.Value, notify func(Message)) (jsontext.Value, error)
	// server returns what the upstream said about itself, negotiating first
	// if needed.
	server(ctx context.Context) (serverInfo, error)
	// watch starts watching for list changes; calling it again is harmless.
	watch()
	close() error
}

// serverInfo is what negotiation learned.
type serverInfo struct {
	version string         // the protocol version in use
	caps    jsontext.Value // the server's capabilities object
}

func (s serverInfo) modern() bool { return s.version >= versionModern }

// Protocol versions.
const (
	versionModern = "2026-07-28"
	versionLegacy = "2025-11-25" // asked for in initialize
)

// legacyVersions are the initialize-era versions accepted in an initialize
// result.
var legacyVersions = []string{"2025-11-25", "2025-06-18", "2025-03-26"}

// JSON-RPC codes the transport uses or recognizes.
const (
	codeMethodNotFound             = -32601
	codeHeaderMismatch             = -32020
	codeUnsupportedProtocolVersion = -32022
)

// refusedMessage answers server-to-client requests (sampling/createMessage,
// elicitation/create, roots/list): the gateway is stateless toward its
// clients and cannot relay them.
const refusedMessage = "not available through the mcpauthz gateway"

var errCallTimeout = errors.New("call timeout")

type conn struct {
	opts    Options
	t       transport
	sem     chan struct{}
	queued  atomic.Int64
	changed chan struct{}
	closed  atomic.Bool
	nextID  atomic.Int64

	// bindings holds the x-mcp-header annotations of the tools last listed
	// (modern HTTP upstreams only): tool name -> bindings.
	bindings atomic.Pointer[map[string][]paramBinding]

	closeOnce sync.Once
	closeErr  error
}

func newConn(opts Options) *conn {
	return &conn{
		opts:    opts,
		sem:     make(chan struct{}, opts.MaxConcurrent),
		changed: make(chan struct{}, 1),
	}
}

func (c *conn) Changed() <-chan struct{} { return c.changed }

// signal tells Changed's reader, without blocking and coalesced.
func (c *conn) signal() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.closeErr = c.t.close()
	})
	return c.closeErr
}

func (c *conn) Call(ctx context.Context, caller Caller, method string, params jsontext.Value, notify func(Message)) (jsontext.Value, error) {
	start := time.Now()
	res, err := c.call(ctx, caller, method, params, notify)
	c.opts.Metrics.CallDone(method, outcome(err), time.Since(start))
	return res, err
}

func (c *conn) call(ctx context.Context, caller Caller, method string, params jsontext.Value, notify func(Message)) (jsontext.Value, error) {
	if c.closed.Load() {
		return nil, c.closedErr()
	}
	ctx, cancel := context.WithTimeoutCause(ctx, c.opts.Timeout, errCallTimeout)
	defer cancel()
	if err := c.acquire(ctx); err != nil {
		return nil, err
	}
	defer func() { <-c.sem }()
	res, err := c.t.call(ctx, caller, method, params, notify)
	if err != nil && ctx.Err() != nil && !errors.Is(err, ErrInvalidParams) {
		// What the transport saw (a closed stream, say) is the effect; the
		// deadline or the caller's cancellation is the cause.
		return nil, c.ctxErr(ctx)
	}
	return res, err
}

func (c *conn) acquire(ctx context.Context) error {
	select {
	case c.sem <- struct{}{}:
		return nil
	default:
	}
	if c.queued.Add(1) > int64(c.opts.MaxQueued) {
		c.queued.Add(-1)
		return c.unavailable("too many calls in flight", nil)
	}
	defer c.queued.Add(-1)
	select {
	case c.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return c.ctxErr(ctx)
	}
}

// ctxErr is the error of a call whose context ended.
func (c *conn) ctxErr(ctx context.Context) error {
	if context.Cause(ctx) == errCallTimeout {
		return &Error{Upstream: c.opts.Name, Kind: ErrTimeout, Timeout: c.opts.Timeout, Reason: "timeout"}
	}
	return fmt.Errorf("upstream %q: call abandoned: %w", c.opts.Name, ctx.Err())
}

func (c *conn) closedErr() error {
	return &Error{Upstream: c.opts.Name, Kind: ErrUnavailable, Reason: "connection closed", Err: ErrClosed}
}

func (c *conn) unavailable(reason string, err error) error {
	return &Error{Upstream: c.opts.Name, Kind: ErrUnavailable, Reason: reason, Err: err}
}

func (c *conn) protocolErr(reason string, err error) error {
	return &Error{Upstream: c.opts.Name, Kind: ErrProtocol, Reason: reason, Err: err}
}

func (c *conn) tooLarge(what string) error {
	return &Error{Upstream: c.opts.Name, Kind: ErrTooLarge, Reason: fmt.Sprintf("%s exceeds %d bytes", what, c.opts.MaxResponseBytes)}
}

// outcome names an error for metrics.
func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	var rpc *RPCError
	switch {
	case errors.As(err, &rpc):
		return "rpc_error"
	case errors.Is(err, ErrTimeout):
		return "timeout"
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrProtocol):
		return "protocol"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	case errors.Is(err, ErrInvalidParams):
		return "invalid"
	default:
		return "canceled"
	}
}

// resultFrom turns a parsed response into Call's result or *RPCError.
func (c *conn) resultFrom(m *message) (jsontext.Value, error) {
	if m.err != nil {
		rpc, err := parseRPCError(m.err)
		if err != nil {
			return nil, c.protocolErr("malformed JSON-RPC error", err)
		}
		return nil, rpc
	}
	return m.result, nil
}
