package chaos

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// InterruptContext returns a context that ends at the first SIGINT or
// SIGTERM, for the commands faults and soak: it tells stderr, under the
// command's name, that everything started is being stopped, and answers
// later signals with a request to wait (a second Ctrl-C does not kill the
// command mid-cleanup, which would leave child processes behind).
func InterruptContext(name string, stderr io.Writer) context.Context {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-sigs
		fmt.Fprintf(stderr, "%s: stopping (killing the app servers and memcached nodes)\n", name)
		cancel()
		for range sigs {
			fmt.Fprintf(stderr, "%s: already stopping, please wait\n", name)
		}
	}()
	return ctx
}
