package decisioncache

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
)

// BenchmarkGetHit is the hot path: a lookup that finds a kept decision, from
// every CPU at once.
func BenchmarkGetHit(b *testing.B) {
	c, _, _ := newCache(b, 0)
	c.Reset()
	reqs := make([]*authzv1.AuthorizeRequest, 64)
	for i := range reqs {
		tok := fmt.Sprint("token-", i)
		reqs[i] = request(tok, "read:user_data")
		fetch(c, reqs[i], allowed(tok, time.Time{}))
	}
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(n.Add(1))
		for pb.Next() {
			if res, _ := c.Get(reqs[i%len(reqs)]); res == nil {
				b.Error("miss on a kept decision")
				return
			}
			i++
		}
	})
}

// BenchmarkMissPut is a lookup that misses followed by storing authz's
// answer, from every CPU at once.
func BenchmarkMissPut(b *testing.B) {
	c, _, _ := newCache(b, 0)
	c.Reset()
	res := allowed("t", time.Time{})
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := n.Add(1)
		i := 0
		for pb.Next() {
			req := request(fmt.Sprint(w, "-", i), "read:user_data")
			_, ticket := c.Get(req)
			c.Put(ticket, res)
			c.Invalidate("ref-t") // keeps the cache from growing
			i++
		}
	})
}

// BenchmarkStoreDuringInvalidations: one token's misses are answered and
// stored while other tokens are invalidated between each lookup and its
// store, as when an invalidation stream is busy. It reports the fraction of
// answers the cache kept (kept/op): an invalidation of another token must not
// keep one from being stored.
func BenchmarkStoreDuringInvalidations(b *testing.B) {
	c, _, _ := newCache(b, 0)
	c.Reset()
	res := allowed("b", time.Time{})
	req := request("b", "read:user_data")
	kept := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		_, ticket := c.Get(req)
		c.Invalidate(fmt.Sprint("ref-other-", i%1024))
		if c.Put(ticket, res) {
			kept++
		}
		c.drop(ticket.key)
	}
	b.ReportMetric(float64(kept)/float64(b.N), "kept/op")
}
