package mcsessionprom_test

import (
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mcsession/mcsession/extra/mcsessionprom"
	"github.com/mcsession/mcsession/httpsession"
)

// Register a Collector of a Manager's metrics and serve them on /metrics.
func Example() {
	sessions, err := httpsession.Open(nodeList, httpsession.Options{}) // e.g. "n1=10.0.0.1:11211,n2=10.0.0.2:11211"
	if err != nil {
		log.Fatal(err)
	}
	defer sessions.Close()

	reg := prometheus.NewRegistry() // or prometheus.DefaultRegisterer
	reg.MustRegister(mcsessionprom.NewCollector(mcsessionprom.FromManager(sessions)))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	// A scrape (what Prometheus does every few seconds):
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if strings.HasPrefix(line, "mcsession_memcached_node_up") {
			fmt.Println(line)
		}
	}
	// Output:
	// mcsession_memcached_node_up{node="n1"} 1
	// mcsession_memcached_node_up{node="n2"} 1
}

// A Collector of the lower layers only, for a store used without the HTTP
// middleware, with a label that tells this store's series apart.
func ExampleNewCollector() {
	sessions, err := httpsession.Open(nodeList, httpsession.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer sessions.Close()
	st := sessions.Store()

	c := mcsessionprom.NewCollector(mcsessionprom.Source{Store: st, Cluster: st.Cluster()},
		mcsessionprom.WithConstLabels(prometheus.Labels{"store": "carts"}))
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(mfs) > 0, mfs[0].GetMetric()[0].GetLabel()[0].GetName())
	// Output: true store
}
