package ratelog

import (
	"testing"
	"time"
)

func TestAllow(t *testing.T) {
	t.Parallel()
	l := &Limiter{Every: time.Hour}
	if ok, _ := l.Allow(); !ok {
		t.Fatal("first event suppressed")
	}
	for range 3 {
		if ok, _ := l.Allow(); ok {
			t.Fatal("event within the period allowed")
		}
	}
	l.last.Store(time.Now().Add(-2 * time.Hour).UnixNano())
	if ok, n := l.Allow(); !ok || n != 3 {
		t.Fatalf("Allow after the period = %v, %d; want true, 3", ok, n)
	}
	var zero Limiter
	for range 2 {
		if ok, _ := zero.Allow(); !ok {
			t.Fatal("zero Limiter suppressed an event")
		}
	}
}
