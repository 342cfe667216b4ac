// Command cluster is the mcsession demo (`make demo`): it starts three
// memcached nodes and two app servers (examples/app, built with go build)
// as local child processes, puts a round-robin reverse proxy in front of
// the apps, and prints the URL of a live page that shows which app served
// each request, where the session lives, each node's health and breaker
// state, and buttons to stop, kill, pause (SIGSTOP), resume and restart
// nodes. Its load panel runs N virtual users (a load generator inside this
// process) against the proxy and draws requests per second, 409/503
// answers and acknowledged against stored increments, next to every app
// server's and node's main metrics (see package demo).
//
//	go run ./examples/cluster [-listen 127.0.0.1:8000] [-nodes 3] [-apps 2] [-locking all]
//	                          [-sticky [-sticky-trust]] [-async-backup] [-quiet]
//
// With -sticky (`make demo ARGS=-sticky`) the apps run in sticky mode and
// the proxy pins each client to one app server with a cookie (demo_route),
// moving it to a running one when that server is down; the page can then
// also stop (SIGTERM), kill (SIGKILL) and restart the app servers, to watch
// a session survive the death of the app server that held it in memory.
// -sticky-trust and -async-backup are passed on to the apps.
//
// Run it from inside the repository (it builds the example app in the
// examples module). Ctrl-C (SIGINT) or SIGTERM stops every child process, also while the demo is starting,
// and the program then exits with status 0. `make demo` builds this program
// and runs the binary rather than "go run": "go run" exits with status 1
// whenever it gets a SIGINT, whatever its child's status.
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
	// SIGINT and SIGTERM stay caught until the program exits: a second
	// Ctrl-C, even one that arrives as main returns, must not kill it before
	// it has stopped its children (and make would report an error).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancelCause(context.Background())
	go func() {
		cancel(signalReceived{<-sigs})
		for sig := range sigs {
			fmt.Fprintf(os.Stderr, "cluster: %v: already stopping, please wait\n", sig)
		}
	}()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

// signalReceived is the cause of run's context when a signal ended it.
type signalReceived struct{ sig os.Signal }

func (s signalReceived) Error() string { return "received " + s.sig.String() }

// run parses args, runs the demo until ctx is done (main cancels it on
// SIGINT or SIGTERM), and stops everything it started. The end of ctx is
// the normal end of the demo, even while it is still starting: run then
// returns nil once every child process is gone, so the program exits with
// status 0.
//
// Ctrl-C in a terminal sends SIGINT to the whole foreground process group
// (make and this program). The memcached nodes, the app servers and the
// build of the app run in process groups of their own (mcproc, appproc),
// so they do not get it: this program stops them, in order. The stop is
// bounded by the children's grace periods.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg demo.Config
	var locking string
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Listen, "listen", demo.DefaultListen, "`address` of the page and the proxy (loopback only)")
	fs.IntVar(&cfg.Nodes, "nodes", demo.DefaultNodes, "number of memcached nodes")
	fs.IntVar(&cfg.Apps, "apps", demo.DefaultApps, "number of app servers")
	fs.StringVar(&locking, "locking", "all", "locking `mode` of the apps: all, none, auto or pattern:REGEXP")
	fs.BoolVar(&cfg.Sticky, "sticky", false, "sticky variant: sticky apps; the proxy pins each client to one app server by cookie and fails over; the page can stop, kill and start app servers")
	fs.BoolVar(&cfg.StickyTrust, "sticky-trust", false, "with -sticky: the apps serve sessions from memory without checking memcached's version (-sticky-trust)")
	fs.BoolVar(&cfg.AsyncBackup, "async-backup", false, "pass -async-backup to the apps: session writes queued after the response (the backup copy; with -sticky the whole write)")
	quiet := fs.Bool("quiet", false, "do not show the app servers' logs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.StickyTrust && !cfg.Sticky {
		return errors.New("-sticky-trust needs -sticky")
	}
	cfg.AppArgs = []string{"-locking", locking}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("who", "demo")
	cfg.Logger = log
	if !*quiet {
		cfg.AppLog = stderr
	}

	d, err := demo.Start(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, demo.ErrNotStopped) {
			// Interrupted while starting; Start stopped what it had started.
			log.Info("start interrupted", "err", err)
			fmt.Fprintf(stdout, "\n%v while starting: stopped everything the demo had started\n", context.Cause(ctx))
			return nil
		}
		return err
	}
	fmt.Fprintf(stdout, "\nmcsession demo: open %s  (Ctrl-C stops everything)\n\n", d.URL())
	if cfg.Sticky {
		fmt.Fprintf(stdout, "sticky variant: the proxy pins each browser to one app server (cookie %s);\n"+
			"kill that server on the page and watch the session move to the other one.\n\n", demo.RouteCookie)
	}
	<-ctx.Done()
	fmt.Fprintf(stdout, "\n%v: stopping the page and proxy, %d app servers and %d memcached nodes…\n",
		context.Cause(ctx), len(d.Apps()), len(d.Nodes().Nodes))
	if err := d.Close(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "stopped everything the demo started")
	return nil
}
