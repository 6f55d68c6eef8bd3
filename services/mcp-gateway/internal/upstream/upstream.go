package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"golang.org/x/net/http/httpguts"
)

// Caller says on whose behalf a request is made.
type Caller struct {
	// Key keys per-caller sessions: the same for every request of one subject
	// and client (a hash; never a token). Empty for the gateway's own requests
	// (the catalog).
	Key string
	// Identity is the signed identity assertion for this upstream, or "".
	// HTTP: sent as the X-Mcpauthz-Identity header; stdio:
	// params._meta["io.mcpauthz/identity"].
	Identity string
}

// Message is one raw JSON-RPC message (a notification) from the upstream.
type Message = jsontext.Value

// Conn talks to one upstream. It is safe for concurrent use.
type Conn interface {
	// Call sends one request (method, raw params without an id) and returns
	// the raw result, or a *[RPCError] the upstream answered, or an *[Error]
	// of the transport (wrapping [ErrUnavailable], [ErrTimeout],
	// [ErrTooLarge] or [ErrProtocol]). Notifications the upstream sends for
	// this request (notifications/progress and notifications/message) are
	// passed to notify, in order, before Call returns; notify must not block
	// long and may be nil. Cancelling ctx cancels the call upstream (the
	// response stream is closed and, where the protocol has one,
	// notifications/cancelled is sent); Call then returns an error wrapping
	// ctx.Err(). params that are not a JSON object (or empty) give an error
	// wrapping [ErrInvalidParams], and nothing is sent.
	Call(ctx context.Context, c Caller, method string, params jsontext.Value, notify func(Message)) (jsontext.Value, error)
	// Catalog lists everything the upstream offers, every page, through the
	// gateway's own connection (Caller{}). Errors are those of Call.
	Catalog(ctx context.Context) (*Catalog, error)
	// Changed is signalled (non-blocking, coalesced) when the upstream says a
	// list changed, and when the connection that would have said so was lost
	// and is back (a change may have been missed). Catalog starts the watch.
	Changed() <-chan struct{}
	// Close ends sessions (DELETE) and stops a child process. Calls after
	// Close fail with an error wrapping [ErrUnavailable] and [ErrClosed].
	Close() error
}

// The kinds of transport errors. An *[Error] wraps exactly one of them.
var (
	// ErrUnavailable: the upstream could not be reached, refused the
	// connection, ended the stream before answering, answered an HTTP error
	// without a JSON-RPC error in it, or its process is down.
	ErrUnavailable = errors.New("upstream unavailable")
	// ErrTimeout: no answer within Options.Timeout.
	ErrTimeout = errors.New("upstream timed out")
	// ErrTooLarge: the answer (or one event of it) exceeds
	// Options.MaxResponseBytes.
	ErrTooLarge = errors.New("upstream answer too large")
	// ErrProtocol: the upstream answered something that is not the JSON-RPC
	// response the protocol calls for.
	ErrProtocol = errors.New("upstream answered garbage")
)

// ErrClosed is wrapped (beside [ErrUnavailable]) by the errors of calls made
// after [Conn.Close].
var ErrClosed = errors.New("connection closed")

// ErrInvalidParams is wrapped by the error Call returns for params that are
// not a JSON object: the caller's fault, not the upstream's.
var ErrInvalidParams = errors.New("params must be a JSON object")

// Error is a transport failure talking to one upstream. Its message is the
// one the gateway shows clients, e.g. `upstream "docs" is unavailable:
// connection refused`: the Reason never carries addresses or upstream
// bodies; Err (for logs) may.
type Error struct {
	// Upstream is Options.Name.
	Upstream string
	// Kind is ErrUnavailable, ErrTimeout, ErrTooLarge or ErrProtocol.
	Kind error
	// Reason is a short, client-safe explanation.
	Reason string
	// Timeout is the per-call timeout, for ErrTimeout.
	Timeout time.Duration
	// Err is the underlying cause, or nil.
	Err error
}

func (e *Error) Error() string {
	switch e.Kind {
	case ErrTimeout:
		return fmt.Sprintf("upstream %q did not answer within %v", e.Upstream, e.Timeout)
	case ErrTooLarge:
		return fmt.Sprintf("upstream %q answered more than the size limit: %s", e.Upstream, e.Reason)
	case ErrProtocol:
		return fmt.Sprintf("upstream %q answered garbage: %s", e.Upstream, e.Reason)
	default:
		return fmt.Sprintf("upstream %q is unavailable: %s", e.Upstream, e.Reason)
	}
}

// Unwrap returns the kind and the cause, so errors.Is works with both.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// RPCError is a JSON-RPC error the upstream answered. The gateway passes it to
// its client unchanged.
type RPCError struct {
	Code    int64
	Message string
	// Data is the error's data member as the upstream sent it, or nil.
	Data jsontext.Value
	// Raw is the whole error object as the upstream sent it.
	Raw jsontext.Value
}

func (e *RPCError) Error() string {
	return fmt.Sprintf("upstream answered JSON-RPC error %d: %s", e.Code, e.Message)
}

// SessionMode says how an HTTP upstream that keeps sessions is shared.
type SessionMode int

const (
	// SessionsPerCaller keeps one upstream session per Caller.Key (the
	// default): what the upstream keeps per session is never visible to
	// another caller.
	SessionsPerCaller SessionMode = iota
	// SessionsShared uses one session for every caller, for upstreams known to
	// keep no per-caller state.
	SessionsShared
)

// Defaults of [Options].
const (
	DefaultTimeout          = 30 * time.Second
	DefaultMaxResponseBytes = 4 << 20
	DefaultMaxSessions      = 1000
	DefaultSessionIdle      = 10 * time.Minute
	DefaultMaxConcurrent    = 64
	DefaultMaxQueued        = 256
	DefaultRestartDelay     = time.Second
	DefaultMaxRestartDelay  = 30 * time.Second
)

// IdentityHeader carries the caller's identity assertion to HTTP upstreams.
const IdentityHeader = "X-Mcpauthz-Identity"

// IdentityMetaKey carries the caller's identity assertion to stdio upstreams,
// in params._meta.
const IdentityMetaKey = "io.mcpauthz/identity"

// Options configure a [Conn]. Exactly one of URL and Command is set.
type Options struct {
	// Name names the upstream in errors, logs and metrics.
	Name string
	// URL is the streamable HTTP endpoint (http or https).
	URL string
	// Command is the argv of a stdio server.
	Command []string
	// Env is the stdio child's environment ("KEY=value"), added to PATH and
	// HOME: the gateway's own environment (which holds its secrets) is never
	// passed on.
	Env []string
	// Dir is the stdio child's working directory; empty: the gateway's.
	Dir string
	// Headers are static headers sent with every HTTP request. They may not
	// name headers the transport sets itself (Content-Type, Accept,
	// Mcp-Session-Id, Mcp-Protocol-Version, Mcp-Method, Mcp-Name, the
	// identity header) nor hop-by-hop ones.
	Headers http.Header
	// Timeout bounds a whole call, from sending to the final answer. Zero:
	// DefaultTimeout.
	Timeout time.Duration
	// MaxResponseBytes bounds an answer: a JSON body, each SSE event, each
	// stdio line. Zero: DefaultMaxResponseBytes.
	MaxResponseBytes int64
	// Sessions says how sessions of an HTTP upstream that keeps them are
	// shared.
	Sessions SessionMode
	// MaxSessions bounds the per-caller sessions kept (least recently used
	// first out). Zero: DefaultMaxSessions.
	MaxSessions int
	// SessionIdle is how long a per-caller session is kept unused. Zero:
	// DefaultSessionIdle.
	SessionIdle time.Duration
	// MaxConcurrent bounds the calls in flight; MaxQueued bounds those
	// waiting for a slot, beyond which a call fails at once with
	// ErrUnavailable. Zero: the defaults.
	MaxConcurrent, MaxQueued int
	// RestartDelay and MaxRestartDelay bound the exponential backoff between
	// restarts of a stdio child. Zero: the defaults.
	RestartDelay, MaxRestartDelay time.Duration
	// HTTPClient replaces the default client (keep-alive, no redirects). Its
	// CheckRedirect should refuse redirects: they would carry the identity
	// header elsewhere.
	HTTPClient *http.Client
	// ClientName and ClientVersion are the clientInfo sent upstream.
	// Defaults: "mcpauthz-gateway" and "dev".
	ClientName, ClientVersion string
	// Logger receives the transport's log lines (each with upstream=Name).
	// Nil: slog.Default().
	Logger *slog.Logger
	// Metrics, if set, is told about calls, sessions and restarts.
	Metrics Metrics
	// GatewayIdentity, if set, returns an identity assertion naming the
	// gateway itself, sent to an HTTP upstream with the requests the
	// gateway makes of its own (server/discover, the catalog, initialize,
	// the GET stream, DELETE), so that an upstream that verifies every
	// request serves them. Requests made for a caller carry the caller's
	// identity instead. "" sends none.
	GatewayIdentity func() string
}

// Metrics receives what a Conn measures. Implementations must be safe for
// concurrent use and fast.
type Metrics interface {
	// CallDone is called once per Call, with the method, the outcome ("ok",
	// "rpc_error", "unavailable", "timeout", "too_large", "protocol",
	// "canceled", "invalid") and how long it took.
	CallDone(method, outcome string, d time.Duration)
	// Up reports whether the upstream is reachable (stdio: the child runs and
	// is initialized; HTTP: the last exchange worked).
	Up(up bool)
	// Sessions reports the number of upstream sessions held.
	Sessions(n int)
	// Restarted is called each time a stdio child is started again.
	Restarted()
}

var nameRE = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

// New returns a Conn to the upstream opts describe. It checks the options
// (a clear error naming the field) and, for stdio, starts the child in the
// background; it does not contact an HTTP upstream (the first Call or
// Catalog does).
func New(opts Options) (Conn, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	opts.setDefaults()
	c := newConn(opts)
	var err error
	if opts.URL != "" {
		c.t, err = newHTTPTransport(c)
	} else {
		c.t, err = newStdioTransport(c)
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (o *Options) check() error {
	if !nameRE.MatchString(o.Name) {
		return fmt.Errorf("upstream name %q: want 1 to 32 of [a-z0-9-]", o.Name)
	}
	switch {
	case o.URL != "" && len(o.Command) > 0:
		return fmt.Errorf("upstream %q: set url or command, not both", o.Name)
	case o.URL == "" && len(o.Command) == 0:
		return fmt.Errorf("upstream %q: set url or command", o.Name)
	}
	if o.Timeout < 0 || o.MaxResponseBytes < 0 || o.MaxSessions < 0 || o.SessionIdle < 0 ||
		o.MaxConcurrent < 0 || o.MaxQueued < 0 || o.RestartDelay < 0 || o.MaxRestartDelay < 0 {
		return fmt.Errorf("upstream %q: negative limit", o.Name)
	}
	if o.Sessions != SessionsPerCaller && o.Sessions != SessionsShared {
		return fmt.Errorf("upstream %q: unknown session mode %d", o.Name, o.Sessions)
	}
	for k, vs := range o.Headers {
		for _, v := range vs {
			if err := CheckHeader(k, v); err != nil {
				return fmt.Errorf("upstream %q: %w", o.Name, err)
			}
		}
	}
	return nil
}

// CheckHeader returns an error unless name: value may be one of
// [Options.Headers]: name is an HTTP token that names neither a hop-by-hop
// header nor one the transport sets itself, and value has no control
// characters.
func CheckHeader(name, value string) error {
	switch {
	case !isToken(name):
		return fmt.Errorf("%q is not a valid header name", name)
	case reservedHeader(name):
		return fmt.Errorf("header %q is set by the gateway and may not be configured", name)
	case !httpguts.ValidHeaderFieldValue(value):
		return fmt.Errorf("header %q has an invalid value (control characters)", name)
	}
	return nil
}

func (o *Options) setDefaults() {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.Timeout, DefaultTimeout)
	def(&o.SessionIdle, DefaultSessionIdle)
	def(&o.RestartDelay, DefaultRestartDelay)
	def(&o.MaxRestartDelay, DefaultMaxRestartDelay)
	if o.MaxRestartDelay < o.RestartDelay {
		o.MaxRestartDelay = o.RestartDelay
	}
	if o.MaxResponseBytes == 0 {
		o.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if o.MaxSessions == 0 {
		o.MaxSessions = DefaultMaxSessions
	}
	if o.MaxConcurrent == 0 {
		o.MaxConcurrent = DefaultMaxConcurrent
	}
	if o.MaxQueued == 0 {
		o.MaxQueued = DefaultMaxQueued
	}
	if o.ClientName == "" {
		o.ClientName = "mcpauthz-gateway"
	}
	if o.ClientVersion == "" {
		o.ClientVersion = "dev"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Logger = o.Logger.With("upstream", o.Name)
	if o.Metrics == nil {
		o.Metrics = noMetrics{}
	}
}

type noMetrics struct{}

func (noMetrics) CallDone(string, string, time.Duration) {}
func (noMetrics) Up(bool)                                {}
func (noMetrics) Sessions(int)                           {}
func (noMetrics) Restarted()                             {}
