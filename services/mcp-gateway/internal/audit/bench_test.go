package audit_test

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/audit"
)

// syncFile is the alternative design the Logger is measured against: encode
// and write each event to the file under a lock, in the request's goroutine.
type syncFile struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncFile) Log(e *audit.Event) {
	b, _ := json.Marshal(e)
	b = append(b, '\n')
	s.mu.Lock()
	_, _ = s.w.Write(b)
	s.mu.Unlock()
}

// slowWriter is a disk whose every write takes d (a loaded or network disk).
type slowWriter struct {
	w io.Writer
	d time.Duration
}

func (s slowWriter) Write(p []byte) (int, error) {
	time.Sleep(s.d)
	return s.w.Write(p)
}

// BenchmarkLog measures what logging one event costs the request that logs
// it, from parallel goroutines as the gateway's requests are: the Logger
// (buffered, one writer goroutine) against synchronous writes to the same
// file, on this machine's disk and on a disk whose writes take 1ms. The
// Logger's figures on the slow disk include the events it drops; "dropped"
// reports how many per op.
func BenchmarkLog(b *testing.B) {
	e := event("who_am_i")
	e.TokenRef, e.ClientIP, e.TraceID, e.ArgumentsSHA256 = "0123456789ab", "127.0.0.1", "4bf92f3577b34da6a3ce929d0e0e4736", "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
	open := func(b *testing.B) *os.File {
		f, err := os.OpenFile(filepath.Join(b.TempDir(), "audit.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		return f
	}
	for _, disk := range []struct {
		name  string
		delay time.Duration
	}{{"disk", 0}, {"slow-disk-1ms", time.Millisecond}} {
		writer := func(b *testing.B) io.Writer {
			if disk.delay == 0 {
				return open(b)
			}
			return slowWriter{open(b), disk.delay}
		}
		b.Run(disk.name+"/sync", func(b *testing.B) {
			s := &syncFile{w: writer(b)}
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					s.Log(e)
				}
			})
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
		b.Run(disk.name+"/logger", func(b *testing.B) {
			var n int64
			var mu sync.Mutex
			l := audit.New(writer(b), audit.Options{Dropped: func() { mu.Lock(); n++; mu.Unlock() }})
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					l.Log(e)
				}
			})
			b.StopTimer()
			l.Close()
			b.ReportMetric(float64(n)/float64(b.N), "dropped/op")
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the process's user and system CPU time, every thread's.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
