package main

import (
	"math"
	"testing"
	"time"
)

func TestHistQuantiles(t *testing.T) {
	var h hist
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, tc := range []struct{ q, want float64 }{{0.5, 500}, {0.99, 990}, {1, 1000}} {
		got := h.quantile(tc.q)
		if math.Abs(got-tc.want)/tc.want > 0.02 {
			t.Errorf("q%.2f = %.1f µs, want about %.1f", tc.q, got, tc.want)
		}
	}
	var empty hist
	if empty.quantile(0.5) != 0 {
		t.Error("empty histogram should give 0")
	}
}

func TestHistIndexMonotonic(t *testing.T) {
	prev := -1
	for v := int64(0); v < 1<<40; v = v*9/8 + 1 {
		i := histIndex(v)
		if i < prev {
			t.Fatalf("index went down at %d", v)
		}
		prev = i
		if v >= histSub && i < histBuckets-1 {
			mid := histValue(i)
			if math.Abs(mid-float64(v))/float64(v) > 0.02 {
				t.Fatalf("value %d in bucket %d with middle %.0f", v, i, mid)
			}
		}
	}
}
