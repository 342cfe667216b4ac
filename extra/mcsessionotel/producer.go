package mcsessionotel

import (
	"context"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/mcsession/mcsession/latency"
)

// Producer reports mcsession's latency histograms to the OpenTelemetry
// SDK, which has no observable histogram instrument (see the package doc):
// an sdk/metric Producer whose Produce turns the latency snapshots into
// cumulative explicit-bucket histograms, unit "s", named
//
//	mcsession.session.load.duration     (Source.Store: Load and LoadLocked)
//	mcsession.session.save.duration     (Source.Store: Save)
//	mcsession.lock.acquire.duration     (Source.Locker: lock acquisitions)
//	mcsession.memcached.round_trip.duration (Source.Cluster, attribute "node")
//
// with the latency package's bucket bounds. Attach it to each reader:
//
//	reader := sdkmetric.NewPeriodicReader(exporter, sdkmetric.WithProducer(p))
//
// Its data points are cumulative, whatever temporality the reader's
// exporter asks for; their start time is when NewProducer was called. A
// node id listed twice by the cluster (active, and draining at its old
// address after Cluster.SetNodes) gets its active node's histogram. A
// Producer keeps no state beyond that and is safe for concurrent use.
type Producer struct {
	src   Source
	attrs []attribute.KeyValue
	start time.Time
}

var _ sdkmetric.Producer = (*Producer)(nil)

// NewProducer returns a Producer of src's latency histograms. Of the
// options only WithAttributes applies.
func NewProducer(src Source, opts ...Option) *Producer {
	return &Producer{src: src, attrs: newConfig(opts).attrs, start: time.Now()}
}

// Produce returns the histograms of the Source's layers that are set; it
// never fails.
func (p *Producer) Produce(context.Context) ([]metricdata.ScopeMetrics, error) {
	now := time.Now()
	var ms []metricdata.Metrics
	add := func(name, desc string, points []metricdata.HistogramDataPoint[float64]) {
		ms = append(ms, metricdata.Metrics{
			Name: name + ".duration", Description: "Duration of " + desc + ".", Unit: "s",
			Data: metricdata.Histogram[float64]{DataPoints: points, Temporality: metricdata.CumulativeTemporality},
		})
	}
	common := attribute.NewSet(p.attrs...)
	if st := p.src.Store; st != nil {
		s := st.Stats()
		for _, l := range storeLatencies {
			add(l.name, l.desc, []metricdata.HistogramDataPoint[float64]{p.point(l.val(&s), common, now)})
		}
	}
	if lk := p.src.Locker; lk != nil {
		s := lk.Stats()
		for _, l := range lockLatencies {
			add(l.name, l.desc, []metricdata.HistogramDataPoint[float64]{p.point(l.val(&s), common, now)})
		}
	}
	if cl := p.src.Cluster; cl != nil {
		pools := cl.PoolStats()
		for _, l := range poolLatencies {
			points := make([]metricdata.HistogramDataPoint[float64], 0, len(pools))
			var seen []string
			for _, ps := range pools {
				if !first(&seen, ps.Node) {
					continue
				}
				set := attribute.NewSet(append([]attribute.KeyValue{attribute.String("node", ps.Node)}, p.attrs...)...)
				points = append(points, p.point(l.val(&ps), set, now))
			}
			add(l.name, l.desc, points)
		}
	}
	if len(ms) == 0 {
		return nil, nil
	}
	return []metricdata.ScopeMetrics{{Scope: instrumentation.Scope{Name: ScopeName}, Metrics: ms}}, nil
}

// bounds are the latency package's bucket bounds in seconds.
var bounds = func() []float64 {
	b := latency.Bounds()
	out := make([]float64, len(b))
	for k, d := range b {
		out[k] = d.Seconds()
	}
	return out
}()

// point turns a latency snapshot into a histogram data point: OpenTelemetry's
// bucket counts are per bucket (not cumulative), like the snapshot's, and
// its last bucket, above the last bound, is the snapshot's unbounded one.
func (p *Producer) point(s latency.Snapshot, attrs attribute.Set, now time.Time) metricdata.HistogramDataPoint[float64] {
	counts := make([]uint64, len(bounds)+1)
	var count uint64
	for k, b := range s.Buckets {
		if k < len(counts) {
			counts[k] = b.Count
		}
		count += b.Count
	}
	return metricdata.HistogramDataPoint[float64]{
		Attributes: attrs, StartTime: p.start, Time: now,
		Count: count, Bounds: slices.Clone(bounds), BucketCounts: counts, Sum: s.Sum.Seconds(),
	}
}
