package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mcsession/mcsession/extra/mcsessionprom"
	"github.com/mcsession/mcsession/httpsession"
)

// metricsHandler serves GET /metrics in the Prometheus text format: the
// session metrics of m (see package mcsessionprom: middleware, store,
// lock and per-node memcached statistics) and the Go runtime's and the
// process's, from a registry of this server's own (no global state).
func metricsHandler(m *httpsession.Manager) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		mcsessionprom.NewCollector(mcsessionprom.FromManager(m)),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}
