// Package hist records latencies in a fixed-size log-linear histogram, in the
// manner of HdrHistogram: every value is kept with a relative error below
// 1/128 (under 0.8 %), whatever its magnitude, so a run of millions of
// requests costs a few tens of kilobytes and no sorting.
//
// A [Histogram] is not safe for concurrent use: give each load worker its own
// and [Histogram.Merge] them at the end, which keeps recording free of locks
// and shared cache lines.
package hist

import (
	"math"
	"math/bits"
	"time"
)

// subBits is log2 of the sub-buckets per power of two above 2*subCount.
const (
	subBits  = 7
	subCount = 1 << subBits // 128
	// Values below linearMax are counted exactly, one bucket each.
	linearMax = 2 * subCount // 256
	// maxExp covers values up to 2^(maxExp+8) ns, about 9 days.
	maxExp     = 42
	numBuckets = linearMax + maxExp*subCount
)

// Histogram counts durations (in nanoseconds). The zero value is not usable;
// create one with [New].
type Histogram struct {
	counts []uint64
	n      uint64
	sum    float64
	min    int64
	max    int64
}

// New returns an empty histogram.
func New() *Histogram {
	return &Histogram{counts: make([]uint64, numBuckets), min: math.MaxInt64}
}

// bucket returns the index of the bucket holding v (v >= 0).
func bucket(v int64) int {
	if v < linearMax {
		return int(v)
	}
	// Shift v so that its top 8 bits remain: mant is in [128, 256).
	e := bits.Len64(uint64(v)) - (subBits + 1)
	mant := int(v >> e)
	i := linearMax + (e-1)*subCount + (mant - subCount)
	if i >= numBuckets {
		return numBuckets - 1
	}
	return i
}

// bounds returns the smallest and largest value bucket i holds.
func bounds(i int) (lo, hi int64) {
	if i < linearMax {
		return int64(i), int64(i)
	}
	e := (i-linearMax)/subCount + 1
	mant := int64((i-linearMax)%subCount + subCount)
	lo = mant << e
	hi = lo + (int64(1) << e) - 1
	return lo, hi
}

// Record adds one observation. Negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[bucket(v)]++
	h.n++
	h.sum += float64(v)
	h.min = min(h.min, v)
	h.max = max(h.max, v)
}

// Merge adds every observation of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// Count returns the number of observations.
func (h *Histogram) Count() uint64 { return h.n }

// Max returns the largest observation exactly, or 0 when empty.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Min returns the smallest observation exactly, or 0 when empty.
func (h *Histogram) Min() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.min)
}

// Mean returns the arithmetic mean, or 0 when empty.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Quantile returns the value at quantile q (0 <= q <= 1) by the nearest-rank
// method: the smallest recorded value such that at least q of all observations
// are at or below it, reported as the midpoint of its bucket (clamped to the
// exact min and max). It returns 0 when empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	if rank >= h.n {
		return time.Duration(h.max)
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := bounds(i)
			v := lo + (hi-lo)/2
			return time.Duration(min(max(v, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}
