package latency_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/latency"
)

// TestBuckets checks where durations land: on a bound is inside it, just
// above is in the next, beyond the last bound is in the open bucket.
func TestBuckets(t *testing.T) {
	var h latency.Histogram
	for _, d := range []time.Duration{-time.Second, 0, 16 * time.Microsecond, 17 * time.Microsecond, 32 * time.Microsecond, time.Millisecond, time.Minute} {
		h.Observe(d)
	}
	s := h.Snapshot()
	require.Equal(t, uint64(7), s.Count)
	require.Equal(t, time.Minute+time.Millisecond+65*time.Microsecond, s.Sum)
	require.Len(t, s.Buckets, latency.NumBounds+1)
	require.Equal(t, latency.Bounds()[latency.NumBounds-1], s.Buckets[latency.NumBounds-1].UpperBound)
	require.Equal(t, uint64(3), s.Buckets[0].Count, "-1s, 0, 16µs")
	require.Equal(t, uint64(2), s.Buckets[1].Count, "17µs, 32µs")
	require.Equal(t, 1024*time.Microsecond, s.Buckets[6].UpperBound)
	require.Equal(t, uint64(1), s.Buckets[6].Count, "1ms ≤ 1024µs")
	last := s.Buckets[len(s.Buckets)-1]
	require.Zero(t, last.UpperBound)
	require.Equal(t, uint64(1), last.Count, "a minute is above every bound")
}

// TestQuantileAndMean checks the estimates on a known distribution.
func TestQuantileAndMean(t *testing.T) {
	var h latency.Histogram
	require.Zero(t, h.Snapshot().Quantile(0.5))
	require.Zero(t, h.Snapshot().Mean())
	for range 90 {
		h.Observe(100 * time.Microsecond) // bucket ≤ 128µs
	}
	for range 10 {
		h.Observe(3 * time.Millisecond) // bucket ≤ 4096µs
	}
	s := h.Snapshot()
	require.Equal(t, 128*time.Microsecond, s.Quantile(0.5))
	require.Equal(t, 128*time.Microsecond, s.Quantile(0.9))
	require.Equal(t, 4096*time.Microsecond, s.Quantile(0.91))
	require.Equal(t, 4096*time.Microsecond, s.Quantile(1))
	require.Equal(t, (90*100*time.Microsecond+10*3*time.Millisecond)/100, s.Mean())
}

// TestConcurrentObserve records from many goroutines (run with -race):
// nothing is lost.
func TestConcurrentObserve(t *testing.T) {
	var h latency.Histogram
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 1000 {
				h.Observe(time.Duration(i*j) * time.Microsecond)
				_ = h.Snapshot()
			}
		}()
	}
	wg.Wait()
	require.Equal(t, uint64(8000), h.Snapshot().Count)
}
