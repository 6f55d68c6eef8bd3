package ratelimit

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkLocalAllow is the in-process limiter (no Redis) deciding for 1,000
// principals, from every CPU at once.
func BenchmarkLocalAllow(b *testing.B) {
	l, err := New(Options{Limit: Limit{Count: 1_000_000, Period: time.Second, Burst: 1_000_000}})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	principals := make([]string, 1000)
	for i := range principals {
		principals[i] = fmt.Sprint("sub:user-", i)
	}
	var w atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(w.Add(1)) * 100
		for pb.Next() {
			if !l.Allow(b.Context(), principals[i%len(principals)]).Allowed {
				b.Error("refused within the limit")
				return
			}
			i++
		}
	})
}
