// Command quickstart is the README's quick start: a web server whose
// sessions live in memcached. Run it with the node list of your memcached
// servers: MEMCACHED_NODES=n1=127.0.0.1:11211 go run ./examples/quickstart
package main

import (
	"cmp"
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mcsession/mcsession/httpsession"
)

func main() {
	// Every app server gets the same list: node id = memcached address.
	nodes := cmp.Or(os.Getenv("MEMCACHED_NODES"), "n1=127.0.0.1:11211")
	sessions, err := httpsession.Open(nodes, httpsession.Options{})
	if err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("POST /cart", func(w http.ResponseWriter, r *http.Request) {
		s := httpsession.FromContext(r.Context())
		n, _, err := httpsession.Get[int](s, "items")
		if err == nil {
			err = s.Set("items", n+1) // saved before the response
		}
		if err != nil { // memcached down: the middleware answers 503 instead
			http.Error(w, "session error", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "%d items\n", n+1)
	})

	srv := &http.Server{Addr: cmp.Or(os.Getenv("LISTEN"), ":8080"), Handler: sessions.Middleware(mux)}
	go func() {
		if err := srv.ListenAndServe(); err != http.ErrServerClosed {
			log.Fatal(err)
		}
	}()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	<-ctx.Done()
	stop() // a second Ctrl-C ends the program at once
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx) // lets running requests finish
	_ = sessions.Close()  // then closes the memcached connections
}
