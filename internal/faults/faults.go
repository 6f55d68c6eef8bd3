// Package faults injects failures into HTTP endpoints, so that the services can
// be tested against an authorization server that errors, talks nonsense,
// hangs, drops connections or is slow. The fake PropelAuth backend
// (propelauthfake) applies an [Injector] to its introspection and user API
// endpoints, in devauth (set through its test API, POST /dev/faults) and in
// authz's tests alike.
package faults

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// Mode selects how a faulted endpoint answers.
type Mode string

// The supported modes.
const (
	// OK answers normally (after the configured latency).
	OK Mode = "ok"
	// Error500 answers 500 Internal Server Error.
	Error500 Mode = "error500"
	// Garbage answers 200 with a body that is not JSON.
	Garbage Mode = "garbage"
	// Hang never answers; it waits until the client gives up.
	Hang Mode = "hang"
	// Down closes the connection without answering.
	Down Mode = "down"
)

// ParseMode returns the Mode named s; "" means [OK]. It returns an error for
// any other name.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case "":
		return OK, nil
	case OK, Error500, Garbage, Hang, Down:
		return m, nil
	}
	return "", fmt.Errorf("unknown fault mode %q (want ok, error500, garbage, hang or down)", s)
}

// MaxLatency bounds injected latency so a typo cannot wedge a test run.
const MaxLatency = 60 * time.Second

// GarbageBody is what [Garbage] answers with.
const GarbageBody = "<html>this is not JSON {\"active\":"

// Injector holds the current fault setting; safe for concurrent use.
type Injector struct {
	mu      sync.RWMutex
	mode    Mode
	latency time.Duration

	closeOnce sync.Once
	closed    chan struct{}
}

// New returns an injector in mode [OK] with no latency.
func New() *Injector { return &Injector{mode: OK, closed: make(chan struct{})} }

// Set changes the mode and latency for subsequent requests. It returns an
// error if latency is negative or above [MaxLatency].
func (in *Injector) Set(m Mode, latency time.Duration) error {
	if latency < 0 || latency > MaxLatency {
		return fmt.Errorf("latency %v out of range [0, %v]", latency, MaxLatency)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.mode, in.latency = m, latency
	return nil
}

// Current returns the mode and latency in force.
func (in *Injector) Current() (Mode, time.Duration) {
	in.mu.RLock()
	defer in.mu.RUnlock()
	return in.mode, in.latency
}

// Close releases every request held by [Hang] or latency, so graceful
// shutdown does not wait for clients to give up.
func (in *Injector) Close() { in.closeOnce.Do(func() { close(in.closed) }) }

// Wrap applies the current fault to each request before (or instead of)
// calling next.
func (in *Injector) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mode, latency := in.Current()
		if latency > 0 || mode == Hang {
			readBody(w, r)
		}
		if latency > 0 {
			t := time.NewTimer(latency)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			case <-in.closed:
				t.Stop()
			}
		}
		switch mode {
		case Error500:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"error":"server_error","error_description":"injected fault"}` + "\n"))
		case Garbage:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte(GarbageBody))
		case Hang:
			select {
			case <-r.Context().Done():
			case <-in.closed:
				// Shutting down: drop the connection rather than answer, as a
				// server that dies mid-request would.
				hijackAndClose(w)
			}
		case Down:
			hijackAndClose(w)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// maxBufferedBody bounds what readBody holds; the wrapped endpoints take
// small forms.
const maxBufferedBody = 64 << 10

// readBody reads the request body before a fault makes the request wait, and
// hands the handler a copy. The server's read deadline covers reading the
// request, so a body read only after an injected delay longer than that
// deadline would fail; and once the body is read, the server notices a client
// that hangs up, which ends a Hang for that request. A body that cannot be
// read reaches the handler as a read error.
func readBody(w http.ResponseWriter, r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody {
		return
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBufferedBody))
	if err != nil {
		r.Body = io.NopCloser(errReader{err})
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func hijackAndClose(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// HTTP/2 cannot be hijacked; abort the stream instead, which the client
		// also sees as a broken connection.
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}
