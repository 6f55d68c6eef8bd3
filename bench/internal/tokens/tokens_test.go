package tokens

import (
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func drain(s Source, n int) []string {
	var out []string
	for range n {
		t, ok := s.Next()
		if !ok {
			break
		}
		out = append(out, t)
	}
	return out
}

func TestCycle(t *testing.T) {
	t.Parallel()
	got := drain(NewCycle([]string{"a", "b", "c"}), 7)
	if diff := cmp.Diff([]string{"a", "b", "c", "a", "b", "c", "a"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestOnceHandsOutEachTokenOnceUnderConcurrency(t *testing.T) {
	t.Parallel()
	toks := make([]string, 1000)
	for i := range toks {
		toks[i] = string(rune('A'+i%26)) + string(rune(i))
	}
	o := NewOnce(toks)
	var mu sync.Mutex
	var got []string
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				tok, ok := o.Next()
				if !ok {
					return
				}
				mu.Lock()
				got = append(got, tok)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(got)
	want := slices.Clone(toks)
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if o.Used() != len(toks) {
		t.Errorf("Used() = %d, want %d", o.Used(), len(toks))
	}
}

func TestChurnReplacesOldestFirst(t *testing.T) {
	t.Parallel()
	c := NewChurn([]string{"a", "b", "c", "d"}, []string{"n1", "n2", "n3"})
	if got := c.Rotate(2); got != 2 {
		t.Fatalf("Rotate(2) = %d, want 2", got)
	}
	if diff := cmp.Diff([]string{"n1", "n2", "c", "d"}, drain(c, 4)); diff != "" {
		t.Errorf("after first rotation (-want +got):\n%s", diff)
	}
	if got := c.Rotate(2); got != 1 {
		t.Fatalf("Rotate(2) with one token left = %d, want 1", got)
	}
	if diff := cmp.Diff([]string{"n1", "n2", "n3", "d"}, drain(c, 4)); diff != "" {
		t.Errorf("after second rotation (-want +got):\n%s", diff)
	}
	if c.Rotate(1) != 0 || c.Added() != 3 {
		t.Errorf("empty reserve: Rotate = non-zero or Added() = %d, want 3", c.Added())
	}
}
