package ratelog

import (
	"sync"
	"testing"
	"time"
)

func TestAllowAt(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	l := &Limiter{Every: time.Minute}
	if ok, n := l.AllowAt(t0); !ok || n != 0 {
		t.Fatalf("first event: %v, %d; want true, 0", ok, n)
	}
	for i := range 3 {
		if ok, _ := l.AllowAt(t0.Add(time.Duration(i+1) * time.Second)); ok {
			t.Fatal("event within the period allowed")
		}
	}
	if ok, n := l.AllowAt(t0.Add(time.Minute)); !ok || n != 3 {
		t.Fatalf("event one period later: %v, %d; want true, 3", ok, n)
	}
	if ok, _ := l.AllowAt(t0.Add(time.Minute + time.Second)); ok {
		t.Fatal("event within the second period allowed")
	}
}

// TestAllowAtZeroTime: a clock that starts at the Unix epoch (a test clock)
// still gets its first event logged.
func TestAllowAtZeroTime(t *testing.T) {
	t.Parallel()
	l := &Limiter{Every: time.Hour}
	if ok, _ := l.AllowAt(time.Unix(0, 1)); !ok {
		t.Fatal("first event suppressed")
	}
}

func TestAllow(t *testing.T) {
	t.Parallel()
	l := &Limiter{Every: time.Hour}
	if ok, _ := l.Allow(); !ok {
		t.Fatal("first event suppressed")
	}
	if ok, _ := l.Allow(); ok {
		t.Fatal("second event within the hour allowed")
	}
	var zero Limiter
	for range 2 {
		if ok, _ := zero.Allow(); !ok {
			t.Fatal("zero Limiter suppressed an event")
		}
	}
}

// TestConcurrent: of events from many goroutines within one period exactly
// one is allowed, and the next allowed one counts all the others (go test
// -race).
func TestConcurrent(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	l := &Limiter{Every: time.Minute}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		allowed int
	)
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if ok, _ := l.AllowAt(t0); ok {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if allowed != 1 {
		t.Errorf("%d events allowed in one period, want 1", allowed)
	}
	if ok, n := l.AllowAt(t0.Add(time.Minute)); !ok || n != 799 {
		t.Errorf("next period: %v, %d; want true, 799", ok, n)
	}
}
