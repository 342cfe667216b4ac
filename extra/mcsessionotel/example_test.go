package mcsessionotel_test

import (
	"context"
	"fmt"
	"log"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/mcsession/mcsession/extra/mcsessionotel"
	"github.com/mcsession/mcsession/httpsession"
)

// Register a Manager's metrics with a MeterProvider, and its latency
// histograms as a Producer of the provider's reader. In production the
// reader is a PeriodicReader with an exporter (OTLP, Prometheus, …) and the
// provider usually the global one (otel.SetMeterProvider).
func Example() {
	sessions, err := httpsession.Open(nodeList, httpsession.Options{}) // e.g. "n1=10.0.0.1:11211,n2=10.0.0.2:11211"
	if err != nil {
		log.Fatal(err)
	}
	defer sessions.Close()
	src := mcsessionotel.FromManager(sessions)

	reader := sdkmetric.NewManualReader(sdkmetric.WithProducer(mcsessionotel.NewProducer(src)))
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(context.Background())
	reg, err := mcsessionotel.Register(src, mcsessionotel.WithMeterProvider(provider))
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Unregister()

	// A session saved, then a collection (what the exporter does periodically).
	ctx := context.Background()
	s, err := sessions.Store().NewSession(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if err := sessions.Store().Save(ctx, s); err != nil {
		log.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		log.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				if m.Name == "mcsession.session.saves" {
					fmt.Println(m.Name, m.Unit, d.DataPoints[0].Value)
				}
			case metricdata.Histogram[float64]:
				if m.Name == "mcsession.session.save.duration" {
					fmt.Println(m.Name, m.Unit, d.DataPoints[0].Count, len(d.DataPoints[0].Bounds))
				}
			}
		}
	}
	// Unordered output:
	// mcsession.session.saves {save} 1
	// mcsession.session.save.duration s 1 21
}
