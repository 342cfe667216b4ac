// Command cluster is the mcsession demo (`make demo`): it starts three
// memcached nodes and two app servers (examples/app, built with go build)
// as local child processes, puts a round-robin reverse proxy in front of
// the apps, and prints the URL of a live page that shows which app served
// each request, where the session lives, each node's health and breaker
// state, and buttons to stop and restart nodes.
//
//	go run ./examples/cluster [-listen 127.0.0.1:8000] [-nodes 3] [-apps 2] [-locking all]
//
// Run it from the module root (it builds ./examples/app). Ctrl-C stops
// every child process.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/mcsession/mcsession/examples/cluster/internal/demo"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

// run parses args, runs the demo until SIGINT or SIGTERM, and stops it.
func run(args []string, stdout, stderr io.Writer) error {
	var cfg demo.Config
	var locking string
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Listen, "listen", demo.DefaultListen, "`address` of the page and the proxy (loopback only)")
	fs.IntVar(&cfg.Nodes, "nodes", demo.DefaultNodes, "number of memcached nodes")
	fs.IntVar(&cfg.Apps, "apps", demo.DefaultApps, "number of app servers")
	fs.StringVar(&locking, "locking", "all", "locking `mode` of the apps: all, none, auto or pattern:REGEXP")
	quiet := fs.Bool("quiet", false, "do not show the app servers' logs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.AppArgs = []string{"-locking", locking}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil)).With("who", "demo")
	if !*quiet {
		cfg.AppLog = stderr
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := demo.Start(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nmcsession demo: open %s  (Ctrl-C stops everything)\n\n", d.URL())
	<-ctx.Done()
	stop()
	fmt.Fprintln(stdout, "\nstopping the app servers and memcached nodes…")
	if err := d.Close(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "stopped")
	return nil
}
