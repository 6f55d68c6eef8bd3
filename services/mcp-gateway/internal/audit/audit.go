// Package audit writes the gateway's audit log (AUDIT_LOG): one JSON line per
// MCP request that reached a decision, saying who (subject, client, token
// reference) asked for what (method, tool, prompt or resource, upstream), what
// the gateway decided and why, how long the request took and under which
// trace. It is separate from the operational log, which goes to stderr.
//
// # What reaches a decision
//
// A request reaches a decision when the gateway decides whether its
// credentials allow it: allowed (whatever the MCP answer then is), denied
// before authz was asked (no token: 401; a malformed token: 401; a token in
// the URL or several Authorization headers: 400), denied by authz (401, or 403
// insufficient_scope), over its rate limit (429), or refused because authz
// could not decide (503, fail closed; 500 when authz refused the gateway's own
// question). Requests answered before any of that (CORS preflights, a refused
// Origin or Host, a method other than POST, MCP_MAX_IN_FLIGHT load shedding, a
// body that is too large, too slow or not JSON-RPC) and requests whose client
// went away while authz was asked are not audited: they carry no decision
// about a caller. The operational log and the metrics cover them.
//
// # Secrets
//
// An event never holds the bearer token: the token is named by the first
// twelve hex digits of authz's token_ref (package tokenref), as in the
// operational log. Tool and prompt arguments appear only as the SHA-256 of
// their canonical JSON (RFC 8785) unless the operator opts in with
// AUDIT_LOG_ARGUMENTS.
//
// # Bounded
//
// [Logger.Log] never waits for the disk: events go through a buffer bounded
// in events and in bytes to one writer goroutine. When the buffer is full (the disk or the pipe behind
// stdout is slower than the requests), the event is dropped, counted in
// mcp_gateway_audit_events_dropped_total, and a WARN line in the operational
// log says so, at most once per [dropLogEvery] with the count left out.
// Events that name no caller (neither subject nor client: requests without a
// token or with one authz refused, which anyone can send) may fill only half
// the buffer, so that a flood of them cannot crowd out the events of
// identified callers.
//
// # Rotation
//
// A file is opened append-only with mode 0600 (when it is created). On
// SIGHUP the gateway reopens it ([Logger.Reopen]), so logrotate can move it
// away and signal; copytruncate works too, since every write appends at the
// file's current end.
package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/ratelog"
)

// Decisions, the values of [Event.Decision].
const (
	Allow = "allow"
	Deny  = "deny"
)

// Event is one audit record, one JSON line. Fields with omitempty are left
// out when they do not apply or are unknown (docs/audit.md lists when).
type Event struct {
	// Time is when the request arrived, UTC, RFC 3339 with nanoseconds.
	Time time.Time `json:"time"`
	// Subject is the token's subject (the user ID), when authz named one.
	Subject string `json:"subject,omitempty"`
	// ClientID is the OAuth client the token was issued to.
	ClientID string `json:"client_id,omitempty"`
	// TokenRef is the short token_ref authz returned for the token (package
	// tokenref), never the token.
	TokenRef string `json:"token_ref,omitempty"`
	// ClientIP is the peer address of the connection.
	ClientIP string `json:"client_ip,omitempty"`
	// Method is the JSON-RPC method; empty when the request was refused
	// before its body was read.
	Method string `json:"method,omitempty"`
	// Tool is params.name of a tools/call.
	Tool string `json:"tool,omitempty"`
	// Prompt is params.name of a prompts/get.
	Prompt string `json:"prompt,omitempty"`
	// Resource is params.uri of a resources/read.
	Resource string `json:"resource,omitempty"`
	// Upstream names the upstream MCP server the request was routed to, when
	// it was (set through [Record.SetUpstream]).
	Upstream string `json:"upstream,omitempty"`
	// Decision is [Allow] or [Deny].
	Decision string `json:"decision"`
	// Reason says why a request was denied ("no_token", "insufficient_scope",
	// "rate_limited", "authz_unavailable", ...); empty when allowed.
	Reason string `json:"reason,omitempty"`
	// Status is the HTTP status of the answer (499: the client went away).
	Status int `json:"status"`
	// DurationMS is the time from the request's arrival to the end of its
	// answer, in milliseconds.
	DurationMS float64 `json:"duration_ms"`
	// TraceID is the W3C trace ID the request ran under, when known.
	TraceID string `json:"trace_id,omitempty"`
	// ArgumentsSHA256 is the lowercase hex SHA-256 of the canonical JSON of
	// params.arguments (tools/call, prompts/get), when present.
	ArgumentsSHA256 string `json:"arguments_sha256,omitempty"`
	// Arguments is params.arguments as canonical JSON, only with
	// AUDIT_LOG_ARGUMENTS=true.
	Arguments json.RawMessage `json:"arguments,omitempty"`
}

// DefaultBuffer is how many events may wait for the writer before new ones
// are dropped: about a second of a busy gateway's requests, a few hundred KiB.
const DefaultBuffer = 4096

// DefaultBufferBytes bounds the bytes of the events waiting for the writer,
// whatever their count: with AUDIT_LOG_ARGUMENTS an event holds arguments of
// up to the body bound (1 MiB).
const DefaultBufferBytes = 8 << 20

// dropLogEvery is the least time between two WARN lines about dropped events.
const dropLogEvery = 10 * time.Second

// Options configures [New] and [Open].
type Options struct {
	// Buffer bounds the events waiting for the writer; [DefaultBuffer] when
	// zero or less.
	Buffer int
	// BufferBytes bounds the bytes of the events waiting for the writer;
	// [DefaultBufferBytes] when zero or less.
	BufferBytes int64
	// Logger is the operational log, for dropped events and write errors;
	// discarded when nil.
	Logger *slog.Logger
	// Dropped, when set, is called once per event dropped (a full buffer, or
	// a failed write), for mcp_gateway_audit_events_dropped_total.
	Dropped func()
}

// Logger writes events as JSON lines. Create it with [New] or [Open]; it is
// safe for concurrent use. The nil *Logger is valid and writes nothing, so a
// gateway without AUDIT_LOG need not check.
type Logger struct {
	events  chan []byte
	reopen  chan chan error
	stop    chan struct{}
	stopped chan struct{}
	once    sync.Once

	log     *slog.Logger
	dropped func()
	dropLog ratelog.Limiter
	// lost counts events dropped since the last WARN line, for that line.
	lost atomic.Int64
	// queued is the bytes of the events in the buffer, at most maxQueued.
	queued    atomic.Int64
	maxQueued int64

	// Owned by the writer goroutine once started.
	w    io.Writer
	path string   // "" for a writer that is not a file of ours
	file *os.File // nil for a writer that is not a file of ours
}

// New returns a Logger writing to w (os.Stdout, say), which it does not close.
func New(w io.Writer, opts Options) *Logger {
	l := newLogger(opts)
	l.w = w
	go l.run()
	return l
}

// Open returns a Logger appending to the file at path, creating it with mode
// 0600 if it does not exist. An existing file keeps its mode. It returns an
// error if the file cannot be opened for appending.
func Open(path string, opts Options) (*Logger, error) {
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	l := newLogger(opts)
	l.w, l.path, l.file = f, path, f
	go l.run()
	return l, nil
}

func openFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening audit log: %w", err)
	}
	return f, nil
}

func newLogger(opts Options) *Logger {
	if opts.Buffer <= 0 {
		opts.Buffer = DefaultBuffer
	}
	if opts.BufferBytes <= 0 {
		opts.BufferBytes = DefaultBufferBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Dropped == nil {
		opts.Dropped = func() {}
	}
	return &Logger{
		events:  make(chan []byte, opts.Buffer),
		reopen:  make(chan chan error),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
		log:     opts.Logger,
		dropped: opts.Dropped,
		dropLog: ratelog.Limiter{Every: dropLogEvery},

		maxQueued: opts.BufferBytes,
	}
}

// Log queues e to be written. It never blocks: when the buffer is full, e is
// dropped and counted. Events logged after [Logger.Close] are dropped too.
func (l *Logger) Log(e *Event) {
	if l == nil {
		return
	}
	b, err := json.Marshal(e)
	if err != nil && e.Arguments != nil {
		// Only Arguments can fail (it is sent as is when it cannot be
		// canonicalized): keep the event, with the hash alone, rather than
		// let a client's arguments keep its call out of the audit log.
		c := *e
		c.Arguments = nil
		b, err = json.Marshal(&c)
	}
	if err != nil {
		l.drop("encoding", err)
		return
	}
	b = append(b, '\n')
	select {
	case <-l.stop:
		l.drop("closed", nil)
		return
	default:
	}
	n := int64(len(b))
	if e.Subject == "" && e.ClientID == "" && len(l.events) >= cap(l.events)/2 {
		l.drop("buffer half full: anonymous event", nil)
		return
	}
	if l.queued.Add(n) > l.maxQueued {
		l.queued.Add(-n)
		l.drop("buffer full", nil)
		return
	}
	select {
	case l.events <- b:
	default:
		l.queued.Add(-n)
		l.drop("buffer full", nil)
	}
}

// drop counts a dropped event and says so in the operational log, at most
// once per dropLogEvery.
func (l *Logger) drop(why string, err error) {
	l.dropped()
	l.lost.Add(1)
	if ok, _ := l.dropLog.Allow(); !ok {
		return
	}
	attrs := []slog.Attr{slog.String("cause", why), slog.Int64("dropped_since_last", l.lost.Swap(0))}
	if err != nil {
		attrs = append(attrs, slog.Any("error", err))
	}
	l.log.LogAttrs(context.Background(), slog.LevelWarn, "audit events dropped; see mcp_gateway_audit_events_dropped_total", attrs...)
}

// Reopen closes the file and opens path again, for log rotation (SIGHUP):
// events after it go to the new file. It waits for the events already
// logged before it to be written to the old one. It returns an error if the file
// cannot be opened again; events then keep going to the old file. For a
// Logger from [New] it does nothing.
func (l *Logger) Reopen() error {
	if l == nil || l.path == "" {
		return nil
	}
	done := make(chan error, 1)
	select {
	case l.reopen <- done:
		return <-done
	case <-l.stopped:
		return errors.New("audit log closed")
	}
}

// Close writes the events still buffered, closes the file (not a writer
// passed to [New]) and stops the writer. Events logged afterwards are
// dropped. It returns the error of closing the file.
func (l *Logger) Close() error {
	if l == nil {
		return nil
	}
	l.once.Do(func() { close(l.stop) })
	<-l.stopped
	if l.file != nil {
		return l.file.Close()
	}
	return nil
}

// run is the writer goroutine: it writes events through a buffer, flushing
// whenever no more are waiting, so that a burst costs few writes and a quiet
// gateway's events reach the file at once.
func (l *Logger) run() {
	defer close(l.stopped)
	bw := bufio.NewWriterSize(l.w, 64<<10)
	write := func(b []byte) {
		l.queued.Add(-int64(len(b)))
		if _, err := bw.Write(b); err != nil {
			l.drop("write failed", err)
		}
	}
	flush := func() {
		if err := bw.Flush(); err != nil {
			l.drop("write failed", err)
			// bufio keeps a failed buffer and fails every later write:
			// start over, so that the log recovers with the disk.
			bw.Reset(l.w)
		}
	}
	for {
		select {
		case b := <-l.events:
			write(b)
			for n := len(l.events); n > 0; n-- {
				write(<-l.events)
			}
			flush()
		case done := <-l.reopen:
			// Events logged before Reopen was called belong to the old file.
			for n := len(l.events); n > 0; n-- {
				write(<-l.events)
			}
			flush()
			done <- l.reopenFile(bw)
		case <-l.stop:
			for n := len(l.events); n > 0; n-- {
				write(<-l.events)
			}
			flush()
			return
		}
	}
}

// reopenFile swaps the file for a new one at the same path.
func (l *Logger) reopenFile(bw *bufio.Writer) error {
	f, err := openFile(l.path)
	if err != nil {
		return err
	}
	old := l.file
	l.w, l.file = f, f
	bw.Reset(f)
	if err := old.Close(); err != nil {
		return fmt.Errorf("closing the rotated audit log: %w", err)
	}
	return nil
}
