package identity

import (
	"strconv"
	"testing"
)

// BenchmarkAssertion compares a cache hit (the common case: a caller's
// repeated requests to one upstream) with a miss, which signs, for each
// algorithm. Misses use a new subject each time, so they also pay for
// inserting into the cache and, once it is full, evicting.
func BenchmarkAssertion(b *testing.B) {
	for _, alg := range []struct {
		name string
		pem  func(tb testing.TB) []byte
	}{
		{"ES256", func(tb testing.TB) []byte { return pkcs8PEM(tb, ecKey()) }},
		{"RS256", func(tb testing.TB) []byte { return pkcs1PEM(rsaKey()) }},
	} {
		s := newSigner(b, Options{KeyFile: writeFile(b, "key.pem", alg.pem(b))})
		p := Principal{Subject: "user-1", ClientID: "client-1", Scopes: []string{"read:user_data", "openid"}}
		const aud = "http://everything:3001/mcp"
		b.Run(alg.name+"/hit", func(b *testing.B) {
			if _, err := s.Assertion(p, aud); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Assertion(p, aud); err != nil {
					b.Fatal(err)
				}
			}
		})
		// Outside the closure: the testing package may call it more than
		// once, and a subject signed for before would be a hit.
		i := 0
		b.Run(alg.name+"/miss", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				q := p
				q.Subject = "user-" + strconv.Itoa(i)
				i++
				if _, err := s.Assertion(q, aud); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAssertionParallelHit is the hit path from every CPU at once.
func BenchmarkAssertionParallelHit(b *testing.B) {
	s := newSigner(b, Options{})
	p := Principal{Subject: "user-1", ClientID: "client-1", Scopes: []string{"read:user_data", "openid"}}
	if _, err := s.Assertion(p, "https://up"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Assertion(p, "https://up"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
