package main

import (
	"math/bits"
	"time"
)

// hist is a log-linear latency histogram in nanoseconds: 64 buckets per
// power of two (about 1.6% resolution) from 1 ns to about 2 minutes. It
// records without allocating, so it does not disturb allocs_per_req.
type hist struct {
	counts [histBuckets]uint64
	n      uint64
}

const (
	histSubBits = 6
	histSub     = 1 << histSubBits
	histBuckets = histSub * 32
)

func histIndex(v int64) int {
	if v < histSub {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	exp := bits.Len64(uint64(v)) - 1 // >= histSubBits
	sub := int(uint64(v)>>(exp-histSubBits)) & (histSub - 1)
	i := (exp-histSubBits+1)*histSub + sub
	if i >= histBuckets {
		return histBuckets - 1
	}
	return i
}

// histValue returns the middle of bucket i in nanoseconds.
func histValue(i int) float64 {
	if i < histSub {
		return float64(i)
	}
	exp := i/histSub + histSubBits - 1
	sub := i % histSub
	shift := exp - histSubBits
	lo := float64(uint64(histSub+sub) << shift)
	return lo + float64(uint64(1)<<shift)/2
}

func (h *hist) record(d time.Duration) {
	h.counts[histIndex(int64(d))]++
	h.n++
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the q-quantile (0 < q <= 1) in microseconds, 0 when empty.
func (h *hist) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.999999)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return histValue(i) / 1e3
		}
	}
	return histValue(histBuckets-1) / 1e3
}
