package watch

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// drain returns the events pending on w without waiting for more.
func drain(t *testing.T, w *Watcher) []Event {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var got []Event
	for {
		ev, err := w.Next(ctx)
		if errors.Is(err, context.Canceled) {
			return got
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		got = append(got, ev)
	}
}

func refs(names ...string) []Event {
	evs := make([]Event, len(names))
	for i, n := range names {
		if n == "" {
			evs[i] = Event{Reset: true}
		} else {
			evs[i] = Event{TokenRef: n}
		}
	}
	return evs
}

func TestEvents(t *testing.T) {
	t.Parallel()
	// Each step is a publish of a ref, "" for a reset, or "read" to collect
	// what is pending so far.
	tests := []struct {
		name   string
		buffer int
		steps  []string
		want   [][]Event
	}{
		{"first event is a reset", 4, []string{"read"}, [][]Event{refs("")}},
		{"refs in order after the first reset", 4, []string{"a", "b", "c", "read"}, [][]Event{refs("", "a", "b", "c")}},
		{"reset drops pending refs", 4, []string{"read", "a", "b", "", "c", "read"}, [][]Event{refs(""), refs("", "c")}},
		{"resets coalesce", 4, []string{"read", "", "", "read"}, [][]Event{refs(""), refs("")}},
		{"buffer full becomes one reset", 2, []string{"read", "a", "b", "c", "read", "d", "read"}, [][]Event{refs(""), refs(""), refs("d")}},
		{"full buffer just fits", 2, []string{"read", "a", "b", "read"}, [][]Event{refs(""), refs("a", "b")}},
		{"reading frees space", 2, []string{"read", "a", "b", "read", "c", "d", "read"}, [][]Event{refs(""), refs("a", "b"), refs("c", "d")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := New(Options{Buffer: tt.buffer})
			w := h.Subscribe()
			defer w.Close()
			var got [][]Event
			for _, s := range tt.steps {
				switch s {
				case "read":
					got = append(got, drain(t, w))
				case "":
					h.Reset()
				default:
					h.Publish(s)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOverflowCountedAndNeverBlocks(t *testing.T) {
	t.Parallel()
	overflows := prometheus.NewCounter(prometheus.CounterOpts{Name: "o"})
	h := New(Options{Buffer: 8, Overflows: overflows})
	stuck := h.Subscribe() // never read until the end
	defer stuck.Close()
	live := h.Subscribe()
	defer live.Close()
	drain(t, live)
	for i := range 100 {
		h.Publish(strconv.Itoa(i))
		if got := drain(t, live); !cmp.Equal(got, refs(strconv.Itoa(i))) {
			t.Fatalf("live watcher after publish %d: %v", i, got)
		}
	}
	// 100 refs into a buffer of 8, starting with the first reset due: the
	// first 8 fit, the 9th overflows, and so on.
	if got, want := testutil.ToFloat64(overflows), float64(100/9); got != want {
		t.Errorf("overflows = %v, want %v", got, want)
	}
	if got := drain(t, stuck); len(got) == 0 || !got[0].Reset || len(got) > 9 {
		t.Errorf("stuck watcher got %v, want a reset then at most 8 refs", got)
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	h := New(Options{Watchers: gauge})
	a, b := h.Subscribe(), h.Subscribe()
	if n := testutil.ToFloat64(gauge); n != 2 {
		t.Fatalf("gauge = %v, want 2", n)
	}
	b.Close()
	b.Close()
	if n := testutil.ToFloat64(gauge); n != 1 || h.Len() != 1 {
		t.Fatalf("after one Close: gauge = %v, Len = %d, want 1", n, h.Len())
	}
	if _, err := b.Next(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("Next on a closed watcher = %v, want ErrClosed", err)
	}
	drain(t, a)
	errc := make(chan error, 1)
	go func() {
		_, err := a.Next(context.Background()) // blocks: nothing pending
		errc <- err
	}()
	h.Publish("x")
	h.Close()
	h.Close()
	// The goroutine may have read "x" before Close; then its next read ends.
	if err := <-errc; err != nil {
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Next blocked across Close = %v, want ErrClosed", err)
		}
	} else if _, err := a.Next(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close = %v, want ErrClosed", err)
	}
	if n := testutil.ToFloat64(gauge); n != 0 || h.Len() != 0 {
		t.Errorf("after hub Close: gauge = %v, Len = %d, want 0", n, h.Len())
	}
	a.Close()
	late := h.Subscribe()
	defer late.Close()
	if _, err := late.Next(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("Next on a watcher of a closed hub = %v, want ErrClosed", err)
	}
	if n := testutil.ToFloat64(gauge); n != 0 {
		t.Errorf("gauge counts a watcher of a closed hub: %v", n)
	}
}

// TestConcurrent publishes from several goroutines to readers that keep up
// (buffer larger than everything published) and to readers that cannot (tiny
// buffer). Run with -race. A reader that keeps up must see every ref, each
// publisher's in order; one that cannot must see a reset wherever it lost refs.
func TestConcurrent(t *testing.T) {
	t.Parallel()
	const publishers, perPublisher = 4, 500
	for _, buffer := range []int{publishers * perPublisher, 3} {
		t.Run(fmt.Sprint("buffer=", buffer), func(t *testing.T) {
			t.Parallel()
			h := New(Options{Buffer: buffer})
			// Bounds a reader waiting for refs that never come.
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			var readers sync.WaitGroup
			complete := buffer >= publishers*perPublisher
			results := make([][]Event, 3)
			for r := range results {
				w := h.Subscribe()
				readers.Go(func() {
					defer w.Close()
					refs := 0
					// Close drops what is pending, so a reader expected to see
					// everything stops by itself once it has.
					for !complete || refs < publishers*perPublisher {
						ev, err := w.Next(ctx)
						if err != nil {
							return
						}
						results[r] = append(results[r], ev)
						if !ev.Reset {
							refs++
						}
					}
				})
			}
			var pubs sync.WaitGroup
			for p := range publishers {
				pubs.Go(func() {
					for i := range perPublisher {
						h.Publish(fmt.Sprintf("%d-%d", p, i))
						if buffer < 10 && i%50 == 0 {
							h.Reset()
						}
					}
				})
			}
			pubs.Wait()
			if !complete {
				h.Close()
			}
			readers.Wait()
			for r, evs := range results {
				checkOrder(t, r, evs, complete, publishers*perPublisher)
			}
		})
	}
}

// checkOrder verifies that each publisher's refs arrive in increasing order,
// skipping some only where a reset came since that publisher's previous ref;
// with complete, every ref must arrive.
func checkOrder(t *testing.T, reader int, evs []Event, complete bool, total int) {
	t.Helper()
	if len(evs) == 0 || !evs[0].Reset {
		t.Errorf("reader %d: events start with %v, want a reset", reader, evs[:min(1, len(evs))])
		return
	}
	resets := 0
	next := map[string]int{}         // publisher -> the ref number expected next
	resetsAtLast := map[string]int{} // publisher -> resets seen at its previous ref
	seen := 0
	for _, ev := range evs {
		if ev.Reset {
			resets++
			continue
		}
		p, i, _ := strings.Cut(ev.TokenRef, "-")
		n, err := strconv.Atoi(i)
		if err != nil {
			t.Fatalf("reader %d: bad ref %q", reader, ev.TokenRef)
		}
		if n < next[p] || (n > next[p] && resetsAtLast[p] == resets) {
			t.Errorf("reader %d: ref %s when %s-%d was due, without a reset between", reader, ev.TokenRef, p, next[p])
			return
		}
		next[p], resetsAtLast[p] = n+1, resets
		seen++
	}
	if complete && (seen != total || resets != 1) {
		t.Errorf("reader %d: got %d refs and %d resets, want all %d refs and one reset", reader, seen, resets, total)
	}
}
