package hist

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// exactQuantile is the nearest-rank quantile of sorted samples: the reference
// the histogram must match within its precision.
func exactQuantile(sorted []time.Duration, q float64) time.Duration {
	rank := max(int(math.Ceil(q*float64(len(sorted)))), 1)
	return sorted[rank-1]
}

func TestQuantileMatchesSortedSamples(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name string
		gen  func() time.Duration
		n    int
	}{
		{"uniform 0-300ns (exact region)", func() time.Duration { return time.Duration(rng.IntN(300)) }, 10_000},
		{"uniform 100us-2ms", func() time.Duration {
			return 100*time.Microsecond + time.Duration(rng.Int64N(int64(1900*time.Microsecond)))
		}, 50_000},
		{"lognormal around 300us", func() time.Duration {
			return time.Duration(300e3 * math.Exp(rng.NormFloat64()))
		}, 100_000},
		{"bimodal 200us and 30ms", func() time.Duration {
			if rng.IntN(100) < 3 {
				return 30*time.Millisecond + time.Duration(rng.Int64N(int64(time.Millisecond)))
			}
			return 200*time.Microsecond + time.Duration(rng.Int64N(int64(50*time.Microsecond)))
		}, 100_000},
		{"single value", func() time.Duration { return 1234567 }, 10},
		{"one sample", func() time.Duration { return 42 * time.Millisecond }, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := New()
			samples := make([]time.Duration, tt.n)
			for i := range samples {
				samples[i] = tt.gen()
				h.Record(samples[i])
			}
			slices.Sort(samples)
			if got := h.Count(); got != uint64(tt.n) {
				t.Errorf("Count() = %d, want %d", got, tt.n)
			}
			if got, want := h.Max(), samples[len(samples)-1]; got != want {
				t.Errorf("Max() = %v, want %v", got, want)
			}
			if got, want := h.Min(), samples[0]; got != want {
				t.Errorf("Min() = %v, want %v", got, want)
			}
			for _, q := range []float64{0, 0.01, 0.5, 0.9, 0.99, 0.999, 1} {
				want := exactQuantile(samples, q)
				got := h.Quantile(q)
				// Bucket width is at most 1/128 of its lower bound and the
				// midpoint is reported: the error is under 1/256 of the value.
				tol := float64(want)/256 + 1
				if d := math.Abs(float64(got - want)); d > tol {
					t.Errorf("Quantile(%v) = %v, want %v (off by %v, tolerance %v)", q, got, want, time.Duration(d), time.Duration(tol))
				}
			}
		})
	}
}

func TestExactBelow256ns(t *testing.T) {
	t.Parallel()
	h := New()
	for v := range 100 {
		h.Record(time.Duration(v + 1)) // 1..100
	}
	tests := []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 50}, {0.9, 90}, {0.99, 99}, {1, 100}, {0.001, 1},
	}
	for _, tt := range tests {
		if got := h.Quantile(tt.q); got != tt.want {
			t.Errorf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
	if got, want := h.Mean(), time.Duration(50); got != want {
		t.Errorf("Mean() = %v, want %v", got, want)
	}
}

func TestMerge(t *testing.T) {
	t.Parallel()
	a, b, all := New(), New(), New()
	for i := range 1000 {
		d := time.Duration(i) * 7 * time.Microsecond
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(b)
	a.Merge(New()) // merging an empty histogram changes nothing
	if a.Count() != all.Count() || a.Max() != all.Max() || a.Min() != all.Min() || a.Mean() != all.Mean() {
		t.Fatalf("merged count/min/max/mean = %d/%v/%v/%v, want %d/%v/%v/%v",
			a.Count(), a.Min(), a.Max(), a.Mean(), all.Count(), all.Min(), all.Max(), all.Mean())
	}
	for _, q := range []float64{0.5, 0.9, 0.99} {
		if got, want := a.Quantile(q), all.Quantile(q); got != want {
			t.Errorf("merged Quantile(%v) = %v, want %v", q, got, want)
		}
	}
}

func TestEmptyAndExtremes(t *testing.T) {
	t.Parallel()
	h := New()
	if h.Quantile(0.5) != 0 || h.Max() != 0 || h.Min() != 0 || h.Mean() != 0 {
		t.Errorf("empty histogram: quantile/max/min/mean = %v/%v/%v/%v, want zeros", h.Quantile(0.5), h.Max(), h.Min(), h.Mean())
	}
	h.Record(-5)            // clamped to 0
	h.Record(math.MaxInt64) // beyond the last bucket: counted there, max exact
	if got := h.Quantile(0); got != 0 {
		t.Errorf("Quantile(0) = %v, want 0", got)
	}
	if got := h.Quantile(1); got != math.MaxInt64 {
		t.Errorf("Quantile(1) = %v, want max", got)
	}
}

func TestBucketBounds(t *testing.T) {
	t.Parallel()
	// Every value must fall inside the bounds of its own bucket, and buckets
	// must tile the number line without gaps.
	var prevHi int64 = -1
	for i := range numBuckets {
		lo, hi := bounds(i)
		if lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, want %d", i, lo, prevHi+1)
		}
		if bucket(lo) != i || bucket(hi) != i {
			t.Fatalf("bucket %d = [%d, %d] but bucket(lo)=%d bucket(hi)=%d", i, lo, hi, bucket(lo), bucket(hi))
		}
		if i >= linearMax && float64(hi-lo+1)/float64(lo) > 1.0/128 {
			t.Fatalf("bucket %d = [%d, %d] is wider than 1/128 of its value", i, lo, hi)
		}
		prevHi = hi
	}
}

func BenchmarkRecord(b *testing.B) {
	h := New()
	for i := range b.N {
		h.Record(time.Duration(i&0xfffff) * 100)
	}
}
