package tokencache

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkLookup measures the cache's own cost, without gRPC or HTTP: the fetcher
// answers at once from memory.
//
//	l1-hit  a warm token (256 cycled): the hot path of every cached Authorize
//	miss    a never-seen token: coalescing, the fetch, storing the result in L1
//
// "serial" is one caller; "parallel" is GOMAXPROCS callers.
func BenchmarkLookup(b *testing.B) {
	exp := time.Now().Add(time.Hour).Unix()
	f := &fakeFetcher{reply: activeUntil(exp)}
	clk := &clock{}
	clk.t.Store(time.Now().UnixNano())
	c := newCache(b, f, clk, func(o *Options) { o.L1Max = 100_000 })
	hot := make([]string, 256)
	for i := range hot {
		hot[i] = fmt.Sprintf("bench-hot-%03d-0123456789abcdef0123456789abcdef", i)
		if _, _, err := c.Lookup(context.Background(), hot[i]); err != nil {
			b.Fatal(err)
		}
	}
	var next, seq atomic.Int64
	cases := []struct {
		name string
		tok  func() string
	}{
		{"l1-hit", func() string { return hot[next.Add(1)%int64(len(hot))] }},
		{"miss", func() string { return fmt.Sprintf("bench-miss-%d-0123456789abcdef", seq.Add(1)) }},
	}
	ctx := context.Background()
	for _, mode := range []string{"serial", "parallel"} {
		for _, tc := range cases {
			b.Run(mode+"/"+tc.name, func(b *testing.B) {
				b.ReportAllocs()
				if mode == "serial" {
					for b.Loop() {
						if _, _, err := c.Lookup(ctx, tc.tok()); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, _, err := c.Lookup(ctx, tc.tok()); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}
