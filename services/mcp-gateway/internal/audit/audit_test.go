package audit_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/audit"
)

// readEvents decodes the JSON lines of the file at path, strictly.
func readEvents(t *testing.T, path string) []audit.Event {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return decodeEvents(t, b)
}

func decodeEvents(t *testing.T, b []byte) []audit.Event {
	t.Helper()
	var out []audit.Event
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		var e audit.Event
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

var t0 = time.Date(2026, 12, 7, 6, 0, 0, 123456789, time.UTC)

func event(tool string) *audit.Event {
	return &audit.Event{Time: t0, Subject: "user-1", ClientID: "client-1", Method: "tools/call", Tool: tool, Decision: audit.Allow, Status: 200, DurationMS: 1.5}
}

// TestFileAppendMode: a new file is created 0600 and appended to, across
// Loggers (a restart), never truncated; every event is one JSON line.
func TestFileAppendMode(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "audit.log")
	for _, tool := range []string{"first", "second"} {
		l, err := audit.Open(path, audit.Options{})
		if err != nil {
			t.Fatal(err)
		}
		l.Log(event(tool))
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("mode %v, want 0600", got)
	}
	want := []audit.Event{*event("first"), *event("second")}
	if diff := cmp.Diff(want, readEvents(t, path)); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

// TestFileExistingKeepsContentAndMode: an existing file is appended to and
// its mode, the operator's choice, is kept.
func TestFileExistingKeepsContentAndMode(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(path, []byte("{\"decision\":\"deny\",\"status\":401,\"time\":\"2026-01-01T00:00:00Z\",\"duration_ms\":0}\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l.Log(event("x"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readEvents(t, path); len(got) != 2 || got[0].Status != 401 || got[1].Tool != "x" {
		t.Errorf("events %+v, want the old one then the new one", got)
	}
	fi, _ := os.Stat(path)
	if got := fi.Mode().Perm(); got != 0o640 {
		t.Errorf("mode %v, want the existing 0640", got)
	}
}

// TestOpenError: a file that cannot be opened fails Open, not the first
// request.
func TestOpenError(t *testing.T) {
	t.Parallel()
	if _, err := audit.Open(filepath.Join(t.TempDir(), "no", "such", "dir", "audit.log"), audit.Options{}); err == nil {
		t.Fatal("Open in a missing directory: no error")
	}
}

// TestReopen: after the file is moved away (logrotate), Reopen starts a new
// file at the path; events before it are in the moved file.
func TestReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	l, err := audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Log(event("before"))
	rotated := filepath.Join(dir, "audit.log.1")
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.Log(event("after"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readEvents(t, rotated); len(got) != 1 || got[0].Tool != "before" {
		t.Errorf("rotated file: %+v, want the event before Reopen", got)
	}
	if got := readEvents(t, path); len(got) != 1 || got[0].Tool != "after" {
		t.Errorf("new file: %+v, want the event after Reopen", got)
	}
	fi, _ := os.Stat(path)
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("reopened file mode %v, want 0600", got)
	}
}

// TestCopyTruncate: truncating the file in place (logrotate's copytruncate)
// leaves no hole: the next event is written at the new end.
func TestCopyTruncate(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for range 10 {
		l.Log(event("before"))
	}
	line, _ := json.Marshal(event("before"))
	waitSize(t, path, func(n int64) bool { return n == 10*int64(len(line)+1) })
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	l.Log(event("after"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if bytes.IndexByte(b, 0) >= 0 {
		t.Fatalf("file has NUL bytes after truncation (written at the old offset): %q", b)
	}
	if got := decodeEvents(t, b); len(got) != 1 || got[0].Tool != "after" {
		t.Errorf("after truncation: %+v, want the one event", got)
	}
}

// waitSize waits until the file's size satisfies ok: the writer is
// asynchronous.
func waitSize(t *testing.T, path string, ok func(int64) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Stat(path); err == nil && ok(fi.Size()) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the audit file never reached the expected size")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// blockingWriter is a disk that stops answering until released.
type blockingWriter struct {
	release chan struct{}
	// entered, when set, is sent to (without blocking) on each Write.
	entered chan struct{}
	buf     bytes.Buffer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	if w.entered != nil {
		select {
		case w.entered <- struct{}{}:
		default:
		}
	}
	<-w.release
	return w.buf.Write(p)
}

// TestBoundedWhenWriterBlocks: with the writer stuck (a hung disk), Log
// returns at once, events beyond the buffer are dropped and counted, and the
// operational log says so once per period, not once per event.
func TestBoundedWhenWriterBlocks(t *testing.T) {
	t.Parallel()
	w := &blockingWriter{release: make(chan struct{})}
	var dropped atomic.Int64
	logs := &testenv.LogBuffer{}
	l := audit.New(w, audit.Options{Buffer: 8, Dropped: func() { dropped.Add(1) }, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	const n = 100
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			l.Log(event(strings.Repeat("t", i%5+1)))
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Log blocked behind a stuck writer")
	}
	// At most the buffer and the batch the writer is stuck on (one event,
	// or what it drained from a full buffer) get through.
	if got := dropped.Load(); got < n-2*8-1 {
		t.Errorf("dropped %d of %d with a buffer of 8, want at least %d", got, n, n-2*8-1)
	}
	if got := strings.Count(logs.String(), "audit events dropped"); got != 1 {
		t.Errorf("%d WARN lines about dropped events, want 1 (rate-limited):\n%s", got, logs.String())
	}
	close(w.release)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	written := len(decodeEvents(t, w.buf.Bytes()))
	if int64(written)+dropped.Load() != n {
		t.Errorf("written %d + dropped %d != %d logged", written, dropped.Load(), n)
	}
}

// failingWriter fails every write, as a full disk does.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, io.ErrShortWrite }

// TestWriteErrorsCounted: events lost to failed writes are counted as
// dropped, and Log keeps working.
func TestWriteErrorsCounted(t *testing.T) {
	t.Parallel()
	var dropped atomic.Int64
	l := audit.New(failingWriter{}, audit.Options{Dropped: func() { dropped.Add(1) }})
	l.Log(event("a"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if dropped.Load() == 0 {
		t.Error("a failed write was not counted as dropped")
	}
}

// TestNilLogger: a gateway without AUDIT_LOG holds a nil *Logger.
func TestNilLogger(t *testing.T) {
	t.Parallel()
	var l *audit.Logger
	l.Log(event("a"))
	if err := l.Reopen(); err != nil {
		t.Error(err)
	}
	if err := l.Close(); err != nil {
		t.Error(err)
	}
}

// TestFieldNames pins the JSON names DESIGN.md promises ("Contract: scale and
// operations") and docs/audit.md documents.
func TestFieldNames(t *testing.T) {
	t.Parallel()
	e := audit.Event{Time: t0, Subject: "s", ClientID: "c", TokenRef: "r", ClientIP: "127.0.0.1", Method: "m", Tool: "t", Prompt: "p", Resource: "u",
		Upstream: "up", Decision: audit.Deny, Reason: "why", Status: 403, DurationMS: 2.25, TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
		ArgumentsSHA256: "ab", Arguments: json.RawMessage(`{"a":1}`)}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"time": "2026-12-07T06:00:00.123456789Z", "subject": "s", "client_id": "c", "token_ref": "r", "client_ip": "127.0.0.1",
		"method": "m", "tool": "t", "prompt": "p", "resource": "u", "upstream": "up", "decision": "deny", "reason": "why",
		"status": float64(403), "duration_ms": 2.25, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
		"arguments_sha256": "ab", "arguments": map[string]any{"a": float64(1)},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("JSON (-want +got):\n%s", diff)
	}
}

// TestUnencodableArgumentsKeepEvent: arguments that are not valid JSON to
// encoding/json are left out, but the event is written.
func TestUnencodableArgumentsKeepEvent(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := audit.New(&buf, audit.Options{})
	e := event("x")
	e.ArgumentsSHA256, e.Arguments = "ab", json.RawMessage(`{"a":`)
	l.Log(e)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got := decodeEvents(t, buf.Bytes())
	if len(got) != 1 || got[0].Arguments != nil || got[0].ArgumentsSHA256 != "ab" {
		t.Errorf("events %+v, want one with the hash and no arguments", got)
	}
}

// TestBoundedInBytes: large events (arguments opted in) are bounded by the
// bytes waiting, not only by their count.
func TestBoundedInBytes(t *testing.T) {
	t.Parallel()
	w := &blockingWriter{release: make(chan struct{})}
	var dropped atomic.Int64
	l := audit.New(w, audit.Options{Buffer: 1000, BufferBytes: 64 << 10, Dropped: func() { dropped.Add(1) }})
	big := event("big")
	big.Arguments = json.RawMessage(`"` + strings.Repeat("a", 16<<10) + `"`)
	const n = 50
	for range n {
		l.Log(big)
	}
	// 64 KiB holds three 16 KiB events; the writer may hold the batch it
	// took before it blocked (at most as many).
	if got := dropped.Load(); got < n-2*4 {
		t.Errorf("dropped %d of %d 16 KiB events with 64 KiB of buffer, want at least %d", got, n, n-2*4)
	}
	close(w.release)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestAnonymousEventsFillHalf: with the writer stuck, events naming no caller
// (which anyone can cause, with no token or a made-up one) stop at half the
// buffer; events of identified callers still get the other half.
func TestAnonymousEventsFillHalf(t *testing.T) {
	t.Parallel()
	w := &blockingWriter{release: make(chan struct{}), entered: make(chan struct{}, 1)}
	l := audit.New(w, audit.Options{Buffer: 16})
	// The writer takes the first event and blocks writing it: from then on
	// the buffer's count is exact.
	l.Log(event("first"))
	<-w.entered
	for range 100 {
		l.Log(&audit.Event{Time: t0, ClientIP: "192.0.2.1", Decision: audit.Deny, Reason: "no_token", Status: 401})
		// A made-up token: authz named it, but no caller.
		l.Log(&audit.Event{Time: t0, TokenRef: "fedcba987654", Decision: audit.Deny, Reason: "token_inactive", Status: 401})
	}
	for range 100 {
		l.Log(event("with-token"))
	}
	close(w.release)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var anon, withToken int
	for _, e := range decodeEvents(t, w.buf.Bytes()) {
		switch e.Tool {
		case "":
			anon++
		case "with-token":
			withToken++
		}
	}
	if anon != 8 || withToken != 8 {
		t.Errorf("%d anonymous and %d events with a token written from a buffer of 16, want 8 and 8", anon, withToken)
	}
}
