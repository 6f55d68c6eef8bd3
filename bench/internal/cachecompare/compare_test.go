//go:build unix

package cachecompare

import (
	"crypto/sha256"
	"encoding/binary"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/mcpauthz/mcpauthz/internal/clockcache"
)

// BenchmarkCompare measures internal/clockcache against
// github.com/maypok86/otter/v2, the well-kept library it could be replaced
// with, on authz's L1 workload:
// 32-byte digest keys, a pointer value, an absolute expiry per entry. otter is
// set up as a replacement would be (its clock the wall clock, so that an
// entry's deadline is its expiry; evictions counted in OnAtomicDeletion).
//
//	hit            a hit on one of 256 warm keys in a cache of 100,000
//	hit-parallel   the same from GOMAXPROCS goroutines
//	miss-set       a lookup that misses and stores, in a full cache (it evicts)
//	bytes          heap per entry, 100,000 entries sharing one value
//	scan           a hot set of 8,000 in a cache of 10,000, each hot read
//	               followed by a key never seen again: hit% of the hot reads
//	burst          a hot set of 5,000 read five times, then 100,000 new keys
//	               stored back to back (a flood of new tokens): kept% of the hot set
//
// Besides ns/op it reports cpu-ns/op, the process's CPU time (every thread)
// per operation: otter does part of its work on goroutines of its own, and on
// a shared machine CPU time varies far less than wall time.
func BenchmarkCompare(b *testing.B) {
	impls := []struct {
		name string
		new  func(capacity int) comparable32
	}{
		{"clockcache", newClockImpl},
		{"otter", newOtterImpl},
	}
	const n = 100_000
	keys := make([]digest, n)
	for i := range keys {
		keys[i] = benchKey(uint64(i))
	}
	v := new([600]byte)
	far := time.Now().Add(time.Hour)
	for _, im := range impls {
		b.Run("hit/"+im.name, func(b *testing.B) {
			c := im.new(n * 5 / 4)
			for _, k := range keys {
				c.Set(k, v, far)
			}
			cpu := startCPU()
			i := 0
			for b.Loop() {
				if _, ok := c.Get(keys[i&255]); !ok {
					b.Fatal("miss")
				}
				i++
			}
			cpu.report(b)
		})
		b.Run("hit-parallel/"+im.name, func(b *testing.B) {
			c := im.new(n * 5 / 4)
			for _, k := range keys {
				c.Set(k, v, far)
			}
			var w atomic.Int64
			cpu := startCPU()
			b.RunParallel(func(pb *testing.PB) {
				i := int(w.Add(1)) * 64
				for pb.Next() {
					if _, ok := c.Get(keys[i&255]); !ok {
						b.Error("miss")
						return
					}
					i++
				}
			})
			cpu.report(b)
		})
		b.Run("miss-set/"+im.name, func(b *testing.B) {
			c := im.new(n)
			for _, k := range keys {
				c.Set(k, v, far)
			}
			fresh := make([]digest, 1<<18)
			for i := range fresh {
				fresh[i] = benchKey(uint64(n + i))
			}
			b.ReportAllocs()
			cpu := startCPU()
			i := 0
			for b.Loop() {
				k := fresh[i&(1<<18-1)]
				if _, ok := c.Get(k); !ok {
					c.Set(k, v, far)
				}
				i++
			}
			cpu.report(b)
		})
		b.Run("bytes/"+im.name, func(b *testing.B) {
			var per float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				c := im.new(n * 5 / 4)
				for _, k := range keys {
					c.Set(k, v, far)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				runtime.KeepAlive(c)
				per = float64(after.HeapAlloc-before.HeapAlloc) / n
			}
			b.ReportMetric(per, "bytes/entry")
		})
		b.Run("scan/"+im.name, func(b *testing.B) {
			const capacity, hot = 10_000, 8_000
			var ratio float64
			for b.Loop() {
				c := im.new(capacity)
				for range 3 {
					for i := range hot {
						if _, ok := c.Get(keys[i]); !ok {
							c.Set(keys[i], v, far)
						}
					}
				}
				hits, x := 0, uint64(1)
				for j := range uint64(200_000) {
					x = x*6364136223846793005 + 1442695040888963407
					k := keys[(x>>33)%hot]
					if _, ok := c.Get(k); ok {
						hits++
					} else {
						c.Set(k, v, far)
					}
					c.Set(benchKey(1<<40+j), v, far)
				}
				ratio = 100 * float64(hits) / 200_000
			}
			b.ReportMetric(ratio, "hit%")
		})
		b.Run("burst/"+im.name, func(b *testing.B) {
			const capacity, hot = 10_000, 5_000
			var ratio float64
			for b.Loop() {
				c := im.new(capacity)
				for _, k := range keys[:hot] {
					c.Set(k, v, far)
				}
				for range 5 {
					for _, k := range keys[:hot] {
						c.Get(k)
					}
				}
				for j := range uint64(100_000) {
					c.Set(benchKey(1<<40+j), v, far)
				}
				kept := 0
				for _, k := range keys[:hot] {
					if _, ok := c.Get(k); ok {
						kept++
					}
				}
				ratio = 100 * float64(kept) / hot
			}
			b.ReportMetric(ratio, "kept%")
		})
	}
}

type digest = [32]byte

func benchKey(i uint64) digest {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], i)
	return sha256.Sum256(b[:])
}

type comparable32 interface {
	Get(k digest) (*[600]byte, bool)
	Set(k digest, v *[600]byte, exp time.Time) bool
}

func newClockImpl(capacity int) comparable32 {
	return clockcache.New(clockcache.Options[digest, *[600]byte]{MaxEntries: capacity, Hash: clockcache.DigestHash})
}

type otterImpl struct {
	c         *otter.Cache[digest, otterItem]
	evictions atomic.Uint64
}

type otterItem struct {
	v   *[600]byte
	exp int64
}

type wallClock struct{}

func (wallClock) NowNano() int64                      { return time.Now().UnixNano() }
func (wallClock) Tick(time.Duration) <-chan time.Time { return nil }

func newOtterImpl(capacity int) comparable32 {
	o := &otterImpl{}
	o.c = otter.Must(&otter.Options[digest, otterItem]{
		MaximumSize: capacity,
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[digest, otterItem]) time.Duration {
			// otter takes a non-positive lifetime for "no change": forever,
			// for a new entry.
			return max(time.Duration(e.Value.exp-time.Now().UnixNano()), 1)
		}),
		OnAtomicDeletion: func(e otter.DeletionEvent[digest, otterItem]) {
			if e.Cause == otter.CauseOverflow {
				o.evictions.Add(1)
			}
		},
		Clock: wallClock{},
	})
	return o
}

func (o *otterImpl) Get(k digest) (*[600]byte, bool) {
	it, ok := o.c.GetIfPresent(k)
	return it.v, ok
}

func (o *otterImpl) Set(k digest, v *[600]byte, exp time.Time) bool {
	if e := exp.UnixNano(); e > time.Now().UnixNano() {
		o.c.Set(k, otterItem{v, e})
		return true
	}
	o.c.Invalidate(k)
	return false
}

// cpuClock measures the process's CPU time over a benchmark's loop.
type cpuClock struct{ start time.Duration }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuClock { return cpuClock{cpuTime()} }

func (c cpuClock) report(b *testing.B) {
	b.ReportMetric(float64(cpuTime()-c.start)/float64(b.N), "cpu-ns/op")
}
