// Package latency records durations in a fixed set of exponential
// buckets, lock-free, for the latency histograms that packages store,
// lock and replica expose in their statistics (load, save, lock wait,
// memcached round trip per node). It has no dependencies: metrics
// exporters (Prometheus, OpenTelemetry) turn a Snapshot into their own
// histogram type.
package latency

import (
	"math"
	"sync/atomic"
	"time"
)

// NumBounds is the number of bucket bounds (see Bounds).
const NumBounds = 21

// bound returns the inclusive upper bound of bucket i: 16 µs doubling.
func bound(i int) time.Duration { return 16 * time.Microsecond << i }

// Bounds returns the upper bounds of the buckets, inclusive: 16 µs
// doubling up to about 16.8 s (NumBounds bounds); a last bucket without
// bound takes longer durations.
func Bounds() []time.Duration {
	b := make([]time.Duration, NumBounds)
	for i := range b {
		b[i] = bound(i)
	}
	return b
}

// Histogram counts durations per bucket. The zero value is ready to use
// and it is safe for concurrent use; do not copy it after first use.
type Histogram struct {
	counts [NumBounds + 1]atomic.Uint64
	sum    atomic.Int64 // nanoseconds
}

// Observe records d (negative durations count as 0).
func (h *Histogram) Observe(d time.Duration) {
	d = max(d, 0)
	i := 0
	for i < NumBounds && d > bound(i) {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

// Since records the time elapsed since start.
func (h *Histogram) Since(start time.Time) { h.Observe(time.Since(start)) }

// Snapshot is a histogram at one moment.
type Snapshot struct {
	// Count is the number of durations recorded; Sum their total.
	Count uint64
	Sum   time.Duration
	// Buckets holds, for each of Bounds() and then for the durations above
	// the last one (UpperBound 0 means no bound), how many durations fell
	// in it (not cumulative).
	Buckets []Bucket
}

// Bucket is one bucket of a Snapshot.
type Bucket struct {
	// UpperBound is the bucket's inclusive upper bound; 0 for the last
	// bucket, which has none.
	UpperBound time.Duration
	// Count is how many durations fell in the bucket.
	Count uint64
}

// Snapshot returns the counts so far. Under concurrent Observe calls the
// buckets, Count and Sum may disagree by the calls in flight.
func (h *Histogram) Snapshot() Snapshot {
	s := Snapshot{Buckets: make([]Bucket, len(h.counts)), Sum: time.Duration(h.sum.Load())}
	for i := range h.counts {
		c := h.counts[i].Load()
		s.Buckets[i].Count = c
		if i < NumBounds {
			s.Buckets[i].UpperBound = bound(i)
		}
		s.Count += c
	}
	return s
}

// Mean returns Sum/Count, 0 without durations.
func (s Snapshot) Mean() time.Duration {
	if s.Count == 0 {
		return 0
	}
	return s.Sum / time.Duration(s.Count)
}

// Quantile returns an estimate of the q-quantile (0 < q ≤ 1): the upper
// bound of the bucket that holds it (so it is never lower than the true
// value by more than a factor of two); the last bound for durations above
// it, and 0 without durations.
func (s Snapshot) Quantile(q float64) time.Duration {
	if s.Count == 0 || q <= 0 || math.IsNaN(q) {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(s.Count)))
	var seen uint64
	for _, b := range s.Buckets {
		seen += b.Count
		if seen >= rank {
			if b.UpperBound == 0 {
				return bound(NumBounds - 1)
			}
			return b.UpperBound
		}
	}
	return bound(NumBounds - 1)
}
