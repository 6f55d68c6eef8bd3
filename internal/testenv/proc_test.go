package testenv

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
)

func TestRSS(t *testing.T) {
	t.Parallel()
	n, err := RSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if n < 1<<20 {
		t.Errorf("RSS of this test = %d bytes, implausibly small", n)
	}
	if _, err := RSS(-1); err == nil {
		t.Error("RSS(-1) succeeded")
	}
}

func TestCPUTime(t *testing.T) {
	t.Parallel()
	if _, err := CPUTime(-1); err == nil {
		t.Error("CPUTime(-1) succeeded")
	}
	before, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn some CPU until the tick counter moves (bounded).
	deadline := time.Now().Add(5 * time.Second)
	x := 0
	for time.Now().Before(deadline) {
		for i := range 1_000_000 {
			x += i
		}
		if now, _ := CPUTime(os.Getpid()); now > before {
			return
		}
	}
	t.Errorf("CPU time did not advance after 5s of spinning (x=%d)", x)
}

func TestEventually(t *testing.T) {
	t.Parallel()
	n := 0
	if d := Eventually(t, time.Second, "the third call", func() bool { n++; return n == 3 }); d <= 0 || n != 3 {
		t.Errorf("Eventually: %v, %d calls", d, n)
	}
	ft := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Eventually(ft, 50*time.Millisecond, "never", func() bool { return false })
	}()
	<-done
	if ft.msg != "timed out after 50ms waiting for never" {
		t.Errorf("Eventually of a false condition: %q", ft.msg)
	}
}

// fatalRecorder records Fatalf and ends the goroutine, as testing.T does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
