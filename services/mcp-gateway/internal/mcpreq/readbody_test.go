package mcpreq

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"
)

// trickle is a request body that yields its data in chunks of the given
// sizes (the last one repeated), then ends with err (io.EOF when nil).
type trickle struct {
	data   []byte
	chunks []int
	err    error
}

func (t *trickle) Read(p []byte) (int, error) {
	if len(t.data) == 0 {
		if t.err != nil {
			return 0, t.err
		}
		return 0, io.EOF
	}
	n := len(t.data)
	if len(t.chunks) > 0 {
		n = min(n, max(t.chunks[0], 1))
		if len(t.chunks) > 1 {
			t.chunks = t.chunks[1:]
		}
	}
	n = copy(p, t.data[:n])
	t.data = t.data[n:]
	return n, nil
}

// TestReadBodyAllocatesWhatArrives checks that ReadBody's memory follows the
// bytes received: a request that declares a megabyte and sends one byte
// before its connection fails allocates a few kilobytes, not the megabyte. It
// is not parallel: it reads the process's allocation counter.
func TestReadBodyAllocatesWhatArrives(t *testing.T) {
	const initial = 4 << 10 // the buffer a body starts in (initialBodyBuffer)
	tests := []struct {
		name     string
		declared int64
		sent     int
		err      error
		// maxAlloc bounds the bytes ReadBody may allocate.
		maxAlloc uint64
	}{
		{"declares 1 MiB, sends 1 byte, times out", 1 << 20, 1, os.ErrDeadlineExceeded, 2 * initial},
		{"declares 1 MiB, sends 10 KiB, connection lost", 1 << 20, 10 << 10, io.ErrUnexpectedEOF, 8 * 10 << 10},
		{"chunked, sends 1 byte, times out", -1, 1, os.ErrDeadlineExceeded, 2 * initial},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/mcp", &trickle{data: bytes.Repeat([]byte("a"), tt.sent), err: tt.err})
			r.ContentLength = tt.declared
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := ReadBody(r, DefaultMaxBody)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatal("ReadBody succeeded on a body that failed")
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > tt.maxAlloc {
				t.Errorf("ReadBody allocated %d bytes for %d received, want at most %d", got, tt.sent, tt.maxAlloc)
			}
		})
	}
}

func TestReadBodyErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		declared   int64
		body       io.Reader
		wantStatus int
	}{
		{"deadline", 100, &trickle{data: []byte("{"), err: fmt.Errorf("read tcp: %w", os.ErrDeadlineExceeded)}, http.StatusRequestTimeout},
		{"connection lost", 100, &trickle{data: []byte("{"), err: io.ErrUnexpectedEOF}, http.StatusBadRequest},
		{"declared too large", 2000, strings.NewReader("{}"), http.StatusRequestEntityTooLarge},
		{"chunked too large", -1, strings.NewReader(strings.Repeat("a", 1025)), http.StatusRequestEntityTooLarge},
		{"longer than declared", 10, strings.NewReader(strings.Repeat("a", 1025)), http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodPost, "/mcp", tt.body)
			r.ContentLength = tt.declared
			_, err := ReadBody(r, 1024)
			var perr *Error
			if !errors.As(err, &perr) || perr.Status != tt.wantStatus || perr.Msg == "" {
				t.Fatalf("ReadBody error = %v, want a %d *Error with a message", err, tt.wantStatus)
			}
		})
	}
}

// FuzzReadBody checks ReadBody on any body, declared length, bound and way
// of arriving in pieces: it returns the body exactly when it fits the bound
// and 413 otherwise, the handler after it reads the same bytes, and the buffer
// it keeps never exceeds twice what arrived (or the initial buffer).
func FuzzReadBody(f *testing.F) {
	f.Add([]byte(whoAmIBody), int64(len(whoAmIBody)), int64(DefaultMaxBody), uint16(7), uint16(300))
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"ping"}`), int64(-1), int64(10), uint16(1), uint16(1))
	f.Add(bytes.Repeat([]byte("x"), 10000), int64(10000), int64(9999), uint16(4096), uint16(1))
	f.Add(bytes.Repeat([]byte("y"), 9000), int64(-1), int64(9000), uint16(1000), uint16(3000))
	f.Add([]byte{}, int64(0), int64(1), uint16(0), uint16(0))
	f.Fuzz(func(t *testing.T, body []byte, declared, maxBody int64, chunk1, chunk2 uint16) {
		if maxBody < 1 || maxBody > 1<<20 {
			return
		}
		// The server's body ends where the declared length does.
		sent := body
		if declared >= 0 && declared < int64(len(body)) {
			sent = body[:declared]
		}
		if declared < -1 {
			declared = -1
		}
		r := httptest.NewRequest(http.MethodPost, "/mcp", &trickle{data: bytes.Clone(sent), chunks: []int{int(chunk1), int(chunk2)}})
		r.ContentLength = declared
		got, err := ReadBody(r, maxBody)
		if declared > maxBody || int64(len(sent)) > maxBody {
			var perr *Error
			if !errors.As(err, &perr) || perr.Status != http.StatusRequestEntityTooLarge {
				t.Fatalf("ReadBody of %d bytes (declared %d) with bound %d = %v, want 413", len(sent), declared, maxBody, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("ReadBody: %v", err)
		}
		if !bytes.Equal(got, sent) {
			t.Fatalf("ReadBody = %q, want %q", got, sent)
		}
		// 4 KiB: the buffer a body starts in (initialBodyBuffer).
		if limit := max(2*len(sent)+64, 4<<10+64); cap(got) > limit {
			t.Fatalf("buffer of %d bytes for a %d-byte body, want at most %d", cap(got), len(sent), limit)
		}
		again, err := io.ReadAll(r.Body)
		if err != nil || !bytes.Equal(again, sent) || r.ContentLength != int64(len(sent)) {
			t.Fatalf("body handed on: %q (length %d), %v; want %q", again, r.ContentLength, err, sent)
		}
	})
}

// BenchmarkReadBody compares ReadBody with the version it replaced, which
// sized its buffer from Content-Length, on a who_am_i call and a 64 KiB call,
// with the length declared (as the go-sdk clients send it) and chunked.
func BenchmarkReadBody(b *testing.B) {
	big := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","arguments":{"pad":"` + strings.Repeat("a", 64<<10) + `"}}}`
	for _, body := range []struct{ name, data string }{{"who_am_i", whoAmIBody}, {"64KiB", big}} {
		for _, declared := range []bool{true, false} {
			for _, impl := range []struct {
				name string
				read func(*http.Request, int64) ([]byte, error)
			}{{"old", oldReadBody}, {"new", ReadBody}} {
				name := fmt.Sprintf("%s/declared=%v/%s", body.name, declared, impl.name)
				b.Run(name, func(b *testing.B) {
					rd := strings.NewReader(body.data)
					r := httptest.NewRequest(http.MethodPost, "/mcp", nil)
					b.ReportAllocs()
					b.SetBytes(int64(len(body.data)))
					for b.Loop() {
						rd.Reset(body.data)
						r.Body = io.NopCloser(rd)
						r.ContentLength = -1
						if declared {
							r.ContentLength = int64(len(body.data))
						}
						got, err := impl.read(r, DefaultMaxBody)
						if err != nil || len(got) != len(body.data) {
							b.Fatalf("read %d bytes, %v", len(got), err)
						}
					}
				})
			}
		}
	}
}

// oldReadBody is ReadBody as it was before it stopped trusting Content-Length,
// for BenchmarkReadBody.
func oldReadBody(r *http.Request, maxBody int64) ([]byte, error) {
	tooLarge := &Error{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("request body exceeds %d bytes", maxBody)}
	if r.ContentLength > maxBody {
		return nil, tooLarge
	}
	if r.Body == nil || r.Body == http.NoBody {
		r.Body = http.NoBody
		return nil, nil
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	n, err := buf.ReadFrom(io.LimitReader(r.Body, maxBody+1))
	_ = r.Body.Close()
	if err != nil {
		return nil, &Error{Status: http.StatusBadRequest, Msg: "reading request body: " + err.Error()}
	}
	if n > maxBody {
		return nil, tooLarge
	}
	body := buf.Bytes()
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	return body, nil
}

// TestReadBodyBufferBound runs the fuzz target's buffer bound over a grid of
// body sizes, declared lengths, bounds and arrival patterns. append's growth
// (1.25x steps rounded up to a size class) once broke it: a 3,580-byte body
// kept an 8 KiB buffer.
func TestReadBodyBufferBound(t *testing.T) {
	for n := 1; n <= 12000; n += 7 {
		body := bytes.Repeat([]byte("z"), n)
		for _, declared := range []int64{-1, int64(n), int64(n) + 5000} {
			for _, maxBody := range []int64{int64(n), int64(n) + 1, int64(n)*3/2 + 1, 1 << 20} {
				if declared > maxBody {
					continue
				}
				for _, chunks := range [][]int{{1 << 16}, {1, 1 << 16}, {1000, 333}} {
					r := httptest.NewRequest(http.MethodPost, "/mcp", &trickle{data: bytes.Clone(body), chunks: chunks})
					r.ContentLength = declared
					got, err := ReadBody(r, maxBody)
					if err != nil {
						t.Fatalf("ReadBody(%d bytes, declared %d, bound %d): %v", n, declared, maxBody, err)
					}
					if limit := max(2*n+64, 4<<10+64); cap(got) > limit {
						t.Fatalf("buffer of %d bytes for a %d-byte body (declared %d, bound %d, chunks %v), want at most %d",
							cap(got), n, declared, maxBody, chunks, limit)
					}
				}
			}
		}
	}
}
