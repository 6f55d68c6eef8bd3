package upstream

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

type event struct{ Name, Data string }

func readEvents(r io.Reader, max int) ([]event, *sseReader, error) {
	s := newSSEReader(r, max)
	var out []event
	for {
		ev, err := s.next()
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return out, s, err
		}
		out = append(out, event{string(ev.Name), string(ev.Data)})
	}
}

func TestSSEReader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		in     string
		want   []event
		lastID string
		retry  int64
	}{
		{"one event", "data: {}\n\n", []event{{"", "{}"}}, "", -1},
		{"named event with id", "event: message\nid: 7\ndata: a\n\n", []event{{"message", "a"}}, "7", -1},
		{"multi-line data joined with LF", "data: a\ndata: b\n\n", []event{{"", "a\nb"}}, "", -1},
		{"CRLF line ends", "data: a\r\ndata: b\r\n\r\n", []event{{"", "a\nb"}}, "", -1},
		{"CR line ends", "data: a\rdata: b\r\r", []event{{"", "a\nb"}}, "", -1},
		{"only one space removed", "data:  a\n\n", []event{{"", " a"}}, "", -1},
		{"no space", "data:a\n\n", []event{{"", "a"}}, "", -1},
		{"comments ignored", ": keep-alive\n:\ndata: a\n\n", []event{{"", "a"}}, "", -1},
		{"priming event with empty data", "id: p1\ndata: \n\n", []event{{"", ""}}, "p1", -1},
		{"priming event without data line", "id: p1\n\ndata: x\n\n", []event{{"", "x"}}, "p1", -1},
		{"field without colon", "data\n\n", []event{{"", ""}}, "", -1},
		{"unknown fields ignored", "foo: bar\ndata: a\n\n", []event{{"", "a"}}, "", -1},
		{"retry", "retry: 1500\ndata: a\n\n", []event{{"", "a"}}, "", 1500},
		{"bad retry ignored", "retry: 15x\ndata: a\n\n", []event{{"", "a"}}, "", -1},
		{"id with NUL ignored", "id: a\x00b\ndata: a\n\n", []event{{"", "a"}}, "", -1},
		{"event name reset after dispatch", "event: x\ndata: a\n\ndata: b\n\n", []event{{"x", "a"}, {"", "b"}}, "", -1},
		{"last event without blank line", "data: a\n\ndata: b", []event{{"", "a"}, {"", "b"}}, "", -1},
		{"empty stream", "", nil, "", -1},
		{"blank lines only", "\n\n\r\n", nil, "", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// One byte at a time as well as whole: line ends split across
			// reads (CR, then LF) must not make extra lines.
			for _, r := range []io.Reader{strings.NewReader(tt.in), iotest.OneByteReader(strings.NewReader(tt.in))} {
				got, s, err := readEvents(r, 1<<10)
				if err != nil {
					t.Fatal(err)
				}
				// The standard drops an event whose data is empty, unless a
				// data line was seen; keep what the reader returned.
				want := tt.want
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("events (-want +got):\n%s", diff)
				}
				if string(s.lastID) != tt.lastID || s.retry != tt.retry {
					t.Errorf("lastID %q retry %d, want %q %d", s.lastID, s.retry, tt.lastID, tt.retry)
				}
			}
		})
	}
}

func TestSSEReaderBounds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
	}{
		{"one long data line", "data: " + strings.Repeat("x", 200) + "\n\n"},
		{"many data lines", strings.Repeat("data: "+strings.Repeat("x", 30)+"\n", 10) + "\n"},
		{"one long comment", ":" + strings.Repeat("x", 300) + "\n"},
		{"endless line", strings.Repeat("y", 10000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := readEvents(strings.NewReader(tt.in), 100)
			if !errors.Is(err, errEventTooLarge) {
				t.Fatalf("err = %v, want errEventTooLarge", err)
			}
		})
	}
	// At the bound exactly is fine.
	got, _, err := readEvents(strings.NewReader("data: "+strings.Repeat("x", 100)+"\n\n"), 100)
	if err != nil || len(got) != 1 || len(got[0].Data) != 100 {
		t.Fatalf("event at the bound: %v, %v", got, err)
	}
}

// FuzzSSEReader: any input ends in events, EOF or the size error, never a
// panic; no event's data exceeds the bound; and the reader sees the same
// events whatever the read sizes.
func FuzzSSEReader(f *testing.F) {
	for _, s := range []string{
		"data: {}\n\n", "event: message\r\nid: 1\r\ndata: a\r\ndata: b\r\n\r\n", "data: a\rdata: b\r\r",
		": c\nretry: 10\ndata\n\n", "id: x\ndata:\n\ndata: tail",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		const max = 64
		whole, _, err1 := readEvents(bytes.NewReader(in), max)
		bytewise, _, err2 := readEvents(iotest.OneByteReader(bytes.NewReader(in)), max)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("errors differ: %v vs %v", err1, err2)
		}
		if err1 != nil && !errors.Is(err1, errEventTooLarge) {
			t.Fatalf("unexpected error %v", err1)
		}
		if diff := cmp.Diff(whole, bytewise); diff != "" {
			t.Fatalf("events differ by read size (-whole +bytewise):\n%s", diff)
		}
		for _, ev := range whole {
			if len(ev.Data) > max {
				t.Fatalf("event data of %d bytes beyond the bound %d", len(ev.Data), max)
			}
		}
	})
}
