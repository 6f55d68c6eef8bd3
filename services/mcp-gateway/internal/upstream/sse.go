package upstream

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"sync"
)

// maxFieldOverhead is what a line may hold beyond the bound on data: the field
// name, colon and space of a "data: " line whose value is at the bound.
const maxFieldOverhead = 64

// errEventTooLarge is returned by sseReader.next for a line or an event's data
// longer than the bound.
var errEventTooLarge = errors.New("SSE event exceeds the size limit")

// sseReader reads server-sent events as the WHATWG HTML standard
// (§9.2.6, "Interpreting an event stream") defines them: lines end with CRLF,
// LF or CR; a line starting with ':' is a comment; "field: value" with one
// optional space after the colon, a line without a colon is a field with an
// empty value; data lines are joined with "\n"; a blank line dispatches the
// event; unknown fields are ignored. Memory is bounded: a line or an event's
// data longer than max bytes is an error, not a larger buffer.
//
// One deviation: at the end of the stream, an event whose data is complete
// but was not followed by a blank line is still dispatched (the standard
// drops it), as the go-sdk and the TypeScript SDK do, since some servers end
// the stream right after their last "data:" line.
type sseReader struct {
	r   *bufio.Reader
	max int

	line      []byte
	data      []byte
	hasData   bool
	name      []byte
	pendingCR bool // the last line ended with CR: a following LF belongs to it

	// lastID is the last event ID seen (it persists across events, as in the
	// standard); retry the last reconnection time in milliseconds, or -1.
	lastID []byte
	retry  int64
}

func newSSEReader(r io.Reader, max int) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, 4096), max: max, retry: -1}
}

var sseReaders sync.Pool

// getSSEReader is newSSEReader from a pool; putSSEReader returns it, unless
// it grew large buffers (a big event) that should not be kept.
func getSSEReader(r io.Reader, max int) *sseReader {
	s, _ := sseReaders.Get().(*sseReader)
	if s == nil {
		return newSSEReader(r, max)
	}
	s.resume(r)
	s.max, s.lastID, s.retry = max, s.lastID[:0], -1
	return s
}

func putSSEReader(s *sseReader) {
	if cap(s.data) > pooledBufferMax || cap(s.line) > pooledBufferMax {
		return
	}
	s.r.Reset(nil)
	sseReaders.Put(s)
}

const pooledBufferMax = 64 << 10

// resume continues with r, the stream resumed after a disconnection: the
// event ID and retry time are kept, a partial event and line are dropped.
func (s *sseReader) resume(r io.Reader) {
	s.r.Reset(r)
	s.data, s.name, s.line = s.data[:0], s.name[:0], s.line[:0]
	s.hasData, s.pendingCR = false, false
}

// sseEvent is one dispatched event. Its slices are valid until the next call
// of next.
type sseEvent struct {
	// Name is the event type; empty means "message".
	Name []byte
	Data []byte
}

// next returns the next event with data. It returns io.EOF at the end of the
// stream, errEventTooLarge past the bound, or the reader's error.
func (s *sseReader) next() (sseEvent, error) {
	for {
		line, err := s.readLine()
		if err == io.EOF {
			if s.hasData {
				return s.dispatch(), nil
			}
			return sseEvent{}, io.EOF
		}
		if err != nil {
			return sseEvent{}, err
		}
		if len(line) == 0 {
			if s.hasData {
				return s.dispatch(), nil
			}
			s.name = s.name[:0]
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "data":
			if s.hasData {
				s.data = append(s.data, '\n')
			}
			if len(s.data)+len(value) > s.max {
				return sseEvent{}, errEventTooLarge
			}
			s.data = append(s.data, value...)
			s.hasData = true
		case "event":
			s.name = append(s.name[:0], value...)
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				s.lastID = append(s.lastID[:0], value...)
			}
		case "retry":
			if n, err := strconv.ParseInt(string(value), 10, 64); err == nil && n >= 0 && isDigits(value) {
				s.retry = n
			}
		}
	}
}

func (s *sseReader) dispatch() sseEvent {
	ev := sseEvent{Name: s.name, Data: s.data}
	// The returned slices stay valid until the next call: the buffers are
	// only truncated here, and appended to by the next call.
	s.data = s.data[:0]
	s.name = s.name[:0]
	s.hasData = false
	return ev
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

// readLine returns the next line without its terminator, valid until the next
// call. A line longer than max is errEventTooLarge.
func (s *sseReader) readLine() ([]byte, error) {
	s.line = s.line[:0]
	for {
		buf, err := s.r.Peek(1)
		if len(buf) == 0 {
			if err == io.EOF && len(s.line) > 0 {
				return s.line, nil
			}
			return nil, err
		}
		if s.pendingCR {
			s.pendingCR = false
			if buf[0] == '\n' {
				_, _ = s.r.Discard(1)
				continue
			}
		}
		buf, _ = s.r.Peek(s.r.Buffered())
		i := bytes.IndexAny(buf, "\r\n")
		n := i
		if i < 0 {
			n = len(buf)
		}
		if len(s.line)+n > s.max+maxFieldOverhead {
			return nil, errEventTooLarge
		}
		s.line = append(s.line, buf[:n]...)
		if i < 0 {
			_, _ = s.r.Discard(n)
			continue
		}
		s.pendingCR = buf[i] == '\r'
		_, _ = s.r.Discard(i + 1)
		return s.line, nil
	}
}
