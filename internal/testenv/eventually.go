package testenv

import (
	"testing"
	"time"
)

// Eventually polls cond until it holds and returns how long that took; if
// timeout passes first it fails tb, saying it was waiting for what. It polls
// often at first (a millisecond apart) and less often as the wait grows (up
// to 20ms apart), so a condition about to hold is seen at once and a long
// wait costs little.
func Eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	tb.Helper()
	start := time.Now()
	pause := time.Millisecond
	for !cond() {
		if time.Since(start) > timeout {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 20*time.Millisecond)
	}
	return time.Since(start)
}
