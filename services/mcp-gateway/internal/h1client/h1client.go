// Package h1client is an HTTP/1.1 client transport for plain-HTTP upstreams
// that does each exchange's I/O on the caller's goroutine.
//
// net/http's Transport gives every connection a read loop and a write loop
// goroutine, so one request hands off between three goroutines: the caller,
// the write loop that sends it and the read loop that reads the answer and
// then waits for its body to be read. On a busy machine each hand-off is a
// thread woken by the scheduler. Here the caller writes the request and
// reads the answer itself; an idle connection is owned by nobody.
//
// What the read loop also did, this package does differently:
//   - a connection the server closed while idle is found before it is used
//     again, by a non-blocking peek (one system call), and dropped;
//   - cancelling the request's context closes its connection at once, while
//     the request is written, while the answer is awaited and while its body
//     is read;
//   - a connection goes back to the pool when its answer's body was read
//     to the end or closed, the server did not ask to close it, and the
//     context did not end. What is left of a body closed early (an event
//     stream's closing chunk, typically: it follows the last event) is
//     read when the connection is next needed, from what has arrived, with
//     no goroutine waiting for it. Idle connections are taken oldest
//     first, so that it has had the longest to arrive; one whose rest has
//     not begun to arrive stays in the pool (for up to a second) and
//     another is used; one whose rest has not all arrived is closed;
//   - idle connections are checked every 5 s, and those the server closed
//     or idle past IdleTimeout are closed here too, so none lingers
//     half-closed.
//
// A request whose reused connection failed before any of it went out is
// sent once more on a new connection, as net/http does. Connections are
// not limited in number: the caller bounds its calls in flight (the
// upstream package's MaxConcurrent). Each holds 8 KiB of buffers.
//
// The wire format is net/http's own: requests are written with
// (*http.Request).Write and answers parsed with http.ReadResponse. It speaks
// http:// only, with no proxy; Applies says when it may be used.
package h1client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"syscall"
	"time"
)

// Options configure a Transport. Zero values take the defaults in brackets.
type Options struct {
	// Dial opens connections (a net.Dialer with a 10 s timeout and 30 s
	// keep-alive).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// MaxIdle is how many idle connections are kept (64).
	MaxIdle int
	// IdleTimeout is how long an idle connection is kept (90 s).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds an answer's status line and headers (64 KiB).
	MaxHeaderBytes int64
}

// Transport is an http.RoundTripper for http:// URLs. It is safe for
// concurrent use; each connection carries one exchange at a time.
type Transport struct {
	opts Options

	mu    sync.Mutex
	idle  []*conn     // oldest first
	sweep *time.Timer // runs while idle is not empty
}

// sweepEvery is how often idle connections are checked: those the server
// closed, or idle past IdleTimeout, are closed on this side too, so that
// none lingers half-closed.
const sweepEvery = 5 * time.Second

// New returns a Transport.
func New(o Options) *Transport {
	if o.Dial == nil {
		o.Dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	if o.MaxIdle <= 0 {
		o.MaxIdle = 64
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 90 * time.Second
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = 64 << 10
	}
	return &Transport{opts: o}
}

// Applies reports whether a Transport may carry requests to u: plain HTTP
// that proxy (http.ProxyFromEnvironment, say; nil for none) does not send
// through a proxy.
func Applies(u *url.URL, proxy func(*http.Request) (*url.URL, error)) bool {
	if u.Scheme != "http" || u.Host == "" {
		return false
	}
	if proxy == nil {
		return true
	}
	p, err := proxy(&http.Request{URL: u, Header: http.Header{}})
	return err == nil && p == nil
}

var (
	errNotHTTP   = errors.New("h1client: only http:// URLs are supported")
	errNoAnswer  = errors.New("h1client: connection closed before an answer")
	errHeaderBig = errors.New("h1client: answer headers too large")
)

// conn is one connection and its buffers.
type conn struct {
	nc      net.Conn
	lr      limitReader
	br      *bufio.Reader
	cw      countWriter
	bw      *bufio.Writer // writes to cw
	idleAt  time.Time
	reused  bool
	addrKey string
	// rest is the unread end of the last answer's body, closed early: it
	// is read, without waiting, before the connection is used again.
	rest io.Reader
}

// limitReader reads nc, failing past n bytes while n >= 0: it bounds the
// answer's header. With now set, it reads only what has arrived.
type limitReader struct {
	r   net.Conn
	n   int64
	now bool
}

var errWouldWait = errors.New("h1client: nothing more has arrived")

// countWriter counts the bytes written to the connection: a request none
// of which went out may be sent again.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.now {
		return readNow(l.r, p)
	}
	if l.n < 0 {
		return l.r.Read(p)
	}
	if l.n == 0 {
		return 0, errHeaderBig
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// RoundTrip sends req and returns its answer. The answer's body must be
// read to the end or closed.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil || req.URL.Scheme != "http" || req.URL.Host == "" {
		closeBody(req)
		return nil, errNotHTTP
	}
	ctx := req.Context()
	addr := canonicalAddr(req.URL)
	for attempt := 0; ; attempt++ {
		c, err := t.get(ctx, addr)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, retry, err := t.exchange(ctx, c, req)
		if err == nil {
			return resp, nil
		}
		// A connection taken from the pool may have been closed by the
		// server just before it was used: when none of the request went
		// out, it is sent once more on a new connection.
		if retry && attempt == 0 && req.GetBody != nil && ctx.Err() == nil {
			body, gerr := req.GetBody()
			if gerr == nil {
				r2 := *req
				r2.Body = body
				req = &r2
				continue
			}
		}
		closeBody(req)
		return nil, err
	}
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// exchange writes req on c and reads the answer's header. retry says that
// writing failed on a reused connection before any byte of req went out.
func (t *Transport) exchange(ctx context.Context, c *conn, req *http.Request) (*http.Response, bool, error) {
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(aLongTimeAgo) })
	fail := func(err error) error {
		stop()
		c.nc.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	written := c.cw.n
	err := req.Write(c.bw)
	if err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		return nil, c.reused && c.cw.n == written, fail(err)
	}
	c.lr.n = t.opts.MaxHeaderBytes
	var resp *http.Response
	for {
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("%w: %w", errNoAnswer, err)
			}
			return nil, false, fail(err)
		}
		// 1xx answers (other than 101, which this client never asks for)
		// come before the real one.
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		break
	}
	c.lr.n = -1
	resp.Body = &body{t: t, c: c, ctx: ctx, rc: resp.Body, stop: stop, keep: !resp.Close && !req.Close, left: resp.ContentLength}
	return resp, false, nil
}

var aLongTimeAgo = time.Unix(1, 0)

// body is an answer's body: at its end it gives the connection back.
type body struct {
	t    *Transport
	c    *conn
	ctx  context.Context
	rc   io.ReadCloser
	stop func() bool
	keep bool
	left int64 // bytes still to come when the length is known, else -1
	done bool
	err  error
}

func (b *body) Read(p []byte) (int, error) {
	if b.done {
		if b.err != nil {
			return 0, b.err
		}
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if b.left > 0 {
		b.left -= int64(n)
	}
	if err == io.EOF {
		b.finish(true)
		return n, io.EOF
	}
	if err != nil {
		b.finish(false)
		if b.ctx.Err() != nil {
			// The read failed because cancelling closed the connection.
			err = b.ctx.Err()
		}
		b.err = err
		return n, err
	}
	return n, nil
}

// Close ends the exchange. The rest of a body not read to its end is
// discarded when the connection is next needed, without waiting for it: an
// event stream's closing chunk, which comes just after its last event, does
// not cost the connection, and nobody waits for it. A rest that has not all
// arrived by then costs the connection.
func (b *body) Close() error {
	if b.done {
		return nil
	}
	if b.left != 0 {
		b.c.rest = b.rc
	}
	b.finish(true)
	return nil
}

func (b *body) finish(complete bool) {
	b.done = true
	if !b.stop() || !complete || !b.keep {
		b.c.nc.Close()
		return
	}
	b.t.put(b.c)
}

// ClosesLazily reports whether closing body before its end is all a caller
// needs to do to keep its connection: true for this package's bodies.
func ClosesLazily(rc io.ReadCloser) bool {
	_, ok := rc.(*body)
	return ok
}

// restMax bounds what is discarded of a body closed before its end.
const restMax = 64 << 10

// discardRest reads the rest of c's last body from what has arrived,
// reporting whether it ended there.
func discardRest(c *conn) bool {
	if c.rest == nil {
		return true
	}
	c.lr.now = true
	defer func() { c.lr.now = false }()
	var buf [512]byte
	for total := 0; total <= restMax; {
		n, err := c.rest.Read(buf[:])
		total += n
		if err == io.EOF {
			c.rest = nil
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}

// readNow reads what has arrived on nc, failing with errWouldWait when
// nothing has.
func readNow(nc net.Conn, p []byte) (int, error) {
	n, err := recvNow(nc, p, 0)
	switch {
	case errors.Is(err, errNotSocket), err == syscall.EAGAIN, err == syscall.EWOULDBLOCK:
		return 0, errWouldWait
	case err != nil:
		return 0, err
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

var errNotSocket = errors.New("h1client: not a socket")

// recvNow is one recv(2) on nc with flags and MSG_DONTWAIT: it never waits.
func recvNow(nc net.Conn, p []byte, flags int) (int, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return 0, errNotSocket
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		n    int
		rerr error
	)
	if err := rc.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), p, flags|syscall.MSG_DONTWAIT)
		return true
	}); err != nil {
		return 0, err
	}
	return n, rerr
}

// get returns an idle connection to addr that is still open, or a new one.
// Idle connections are taken oldest first: the rest of a body closed early
// has then had the longest to arrive.
func (t *Transport) get(ctx context.Context, addr string) (*conn, error) {
	now := time.Now()
	var waiting []*conn // their rest has not arrived yet: back to the pool
	defer func() { t.putBack(waiting) }()
	for {
		c := t.takeIdle(addr)
		if c == nil {
			break
		}
		switch t.check(c, now) {
		case usable:
			c.reused = true
			return c, nil
		case restComing:
			waiting = append(waiting, c)
		default:
			c.nc.Close()
		}
	}
	nc, err := t.opts.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &conn{nc: nc, addrKey: addr}
	c.lr = limitReader{r: nc, n: -1}
	c.br = bufio.NewReaderSize(&c.lr, 4<<10)
	c.cw = countWriter{w: nc}
	c.bw = bufio.NewWriterSize(&c.cw, 4<<10)
	return c, nil
}

// takeIdle removes and returns the oldest idle connection to addr.
func (t *Transport) takeIdle(addr string) *conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, c := range t.idle {
		if c.addrKey == addr {
			t.idle = slices.Delete(t.idle, i, i+1)
			return c
		}
	}
	return nil
}

// putBack returns connections taken from the pool unused, as they were.
func (t *Transport) putBack(cs []*conn) {
	if len(cs) == 0 {
		return
	}
	var extra []*conn
	t.mu.Lock()
	for _, c := range cs {
		if len(t.idle) < t.opts.MaxIdle {
			t.idle = append(t.idle, c)
		} else {
			extra = append(extra, c)
		}
	}
	t.mu.Unlock()
	for _, c := range extra {
		c.nc.Close()
	}
}

// An idle connection's state, as check finds it.
type state int

const (
	unusable   state = iota // closed by the server, idle too long, or with bytes nobody asked for
	usable                  // open, with nothing to read
	restComing              // the rest of its last body has not begun to arrive
)

// restWait is how long the rest of a body closed early may take to arrive.
const restWait = time.Second

// check reads the rest of c's last body if it has arrived, and says whether
// c can carry a request.
func (t *Transport) check(c *conn, now time.Time) state {
	idle := now.Sub(c.idleAt)
	if idle >= t.opts.IdleTimeout {
		return unusable
	}
	if c.rest != nil {
		if c.br.Buffered() == 0 && peek(c) == nothing {
			if idle < restWait {
				return restComing
			}
			return unusable
		}
		if !discardRest(c) {
			return unusable
		}
	}
	if c.br.Buffered() == 0 && peek(c) == nothing {
		return usable
	}
	return unusable
}

// What a non-blocking peek at a connection finds.
type peeked int

const (
	nothing peeked = iota // open, nothing to read
	bytesIn               // something to read
	gone                  // closed by the server, or failed
)

// peek looks, without reading or waiting, at what has arrived on c. A
// connection that is no socket (a pipe, in tests) always has nothing.
func peek(c *conn) peeked {
	var buf [1]byte
	n, err := recvNow(c.nc, buf[:], syscall.MSG_PEEK)
	switch {
	case errors.Is(err, errNotSocket), err == syscall.EAGAIN, err == syscall.EWOULDBLOCK:
		return nothing
	case err != nil || n == 0:
		return gone
	}
	return bytesIn
}

func (t *Transport) put(c *conn) {
	c.idleAt = time.Now()
	t.mu.Lock()
	if len(t.idle) >= t.opts.MaxIdle {
		t.mu.Unlock()
		c.nc.Close()
		return
	}
	t.idle = append(t.idle, c)
	if t.sweep == nil {
		t.sweep = time.AfterFunc(sweepEvery, t.sweepIdle)
	}
	t.mu.Unlock()
}

// sweepIdle closes the idle connections that are stale or closed by the
// server, and runs again later while any stay idle.
func (t *Transport) sweepIdle() {
	now := time.Now()
	var drop []*conn
	t.mu.Lock()
	keep := t.idle[:0]
	for _, c := range t.idle {
		if t.check(c, now) == unusable {
			drop = append(drop, c)
			continue
		}
		keep = append(keep, c)
	}
	clear(t.idle[len(keep):])
	t.idle = keep
	if len(t.idle) > 0 {
		t.sweep.Reset(sweepEvery)
	} else {
		t.sweep = nil
	}
	t.mu.Unlock()
	for _, c := range drop {
		c.nc.Close()
	}
}

// CloseIdleConnections closes the connections no exchange is using.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, c := range idle {
		c.nc.Close()
	}
}

func canonicalAddr(u *url.URL) string {
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "80"
	}
	return net.JoinHostPort(host, port)
}
