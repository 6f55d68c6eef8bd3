package throttle

import (
	"fmt"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	l := New(3, time.Minute, 100, func() time.Time { return now })
	for i := range 3 {
		if _, blocked := l.Blocked("k"); blocked {
			t.Fatalf("blocked after %d failures, limit 3", i)
		}
		l.Fail("k")
		now = now.Add(time.Second)
	}
	wait, blocked := l.Blocked("k")
	if !blocked || wait != 57*time.Second {
		t.Errorf("after 3 failures: blocked %v for %v, want 57s (window opened at the first failure)", blocked, wait)
	}
	if _, blocked := l.Blocked("other"); blocked {
		t.Error("another key is blocked")
	}
	now = now.Add(57 * time.Second)
	if _, blocked := l.Blocked("k"); blocked {
		t.Error("still blocked after the window")
	}
	l.Fail("k")
	l.Fail("k")
	l.Reset("k")
	l.Fail("k")
	l.Fail("k")
	if _, blocked := l.Blocked("k"); blocked {
		t.Error("Reset did not forget the failures")
	}
}

// TestLimiterBoundedMemory: at most max keys are tracked; the oldest window
// is forgotten first.
func TestLimiterBoundedMemory(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	l := New(1, time.Hour, 10, func() time.Time { return now })
	for i := range 1000 {
		l.Fail(fmt.Sprint(i))
		now = now.Add(time.Millisecond)
	}
	if n := l.Len(); n != 10 {
		t.Errorf("tracking %d keys, want 10", n)
	}
	if _, blocked := l.Blocked("999"); !blocked {
		t.Error("the newest key was forgotten")
	}
	if _, blocked := l.Blocked("989"); blocked {
		t.Error("the oldest keys were kept")
	}
}
