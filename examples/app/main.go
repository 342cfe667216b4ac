// Command app is one server of the mcsession example: a JSON session API
// (see package server) whose sessions live in memcached, so that several
// app processes behind a non-sticky load balancer share them.
//
//	cd examples && go run ./app -nodes n1=127.0.0.1:11211,n2=127.0.0.1:11212,n3=127.0.0.1:11213
//
// Flags:
//
//	-listen ADDR          listen address (default 127.0.0.1:8080; port 0 picks a free one)
//	-nodes LIST           memcached nodes, n1=HOST:PORT,n2=HOST:PORT,... (required)
//	-name NAME            instance name shown in responses (default: the listen address)
//	-locking MODE         all, none, auto or pattern:REGEXP on "METHOD PATH" (default all)
//	-idle DURATION        session idle timeout (default 30m)
//	-lifetime DURATION    absolute session lifetime (default 24h)
//	-lock-timeout DURATION  how long a request waits for the session lock (default 2s)
//	-cookie NAME          session cookie name (default mcsession)
//
// Once it listens, it prints one line to standard output:
//
//	mcsession example app NAME listening on http://HOST:PORT
//
// SIGINT and SIGTERM shut it down gracefully: requests in flight finish
// (bounded by 10 s) and their sessions are committed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mcsession/mcsession/examples/app/server"
)

// shutdownTimeout bounds the graceful shutdown.
const shutdownTimeout = 10 * time.Second

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "app:", err)
		os.Exit(2)
	}
}

// options are the parsed command line.
type options struct {
	listen string
	cfg    server.Config
}

// parseFlags parses the command line into options.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("app", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "listen `address` (port 0 picks a free port)")
	fs.StringVar(&o.cfg.Nodes, "nodes", "", "memcached `nodes`: n1=HOST:PORT,n2=HOST:PORT,... (required)")
	fs.StringVar(&o.cfg.Name, "name", "", "instance `name` shown in responses (default: the listen address)")
	fs.StringVar(&o.cfg.Locking, "locking", server.DefaultLocking, "locking `mode`: all, none, auto or pattern:REGEXP (matched against \"METHOD PATH\")")
	fs.DurationVar(&o.cfg.IdleTimeout, "idle", server.DefaultIdleTimeout, "session idle timeout")
	fs.DurationVar(&o.cfg.Lifetime, "lifetime", server.DefaultLifetime, "absolute session lifetime")
	fs.DurationVar(&o.cfg.LockTimeout, "lock-timeout", server.DefaultLockTimeout, "how long a request waits for its session's lock")
	fs.StringVar(&o.cfg.CookieName, "cookie", server.DefaultCookieName, "session cookie `name`")
	fs.BoolVar(&o.cfg.Sticky, "sticky", false, "sticky mode: keep sessions in this server's memory, check memcached's version before serving one")
	fs.BoolVar(&o.cfg.StickyTrust, "sticky-trust", false, "with -sticky: serve the local copy without the version check (msm's behaviour: stale after failback)")
	fs.BoolVar(&o.cfg.AsyncBackup, "async-backup", false, "asynchronous writes: the backup copy (non-sticky) or the whole write (-sticky) after the response; flushed on SIGTERM/SIGINT")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.cfg.Nodes == "" {
		return o, errors.New("-nodes is required, e.g. -nodes n1=127.0.0.1:11211,n2=127.0.0.1:11212")
	}
	if _, _, err := server.ParseLocking(o.cfg.Locking); err != nil {
		return o, err
	}
	if o.cfg.StickyTrust && !o.cfg.Sticky {
		return o, errors.New("-sticky-trust needs -sticky")
	}
	return o, nil
}

// run parses args, serves until SIGINT or SIGTERM, and shuts down.
func run(args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	if o.cfg.Name == "" {
		o.cfg.Name = ln.Addr().String()
	}
	o.cfg.Logger = logger.With("instance", o.cfg.Name)
	app, err := server.New(o.cfg)
	if err != nil {
		ln.Close()
		return err
	}
	defer app.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{
		Handler:           app,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(o.cfg.Logger.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "mcsession example app %s listening on http://%s\n", o.cfg.Name, ln.Addr())

	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}
	stop() // a second Ctrl-C kills at once
	o.cfg.Logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	pending := app.Store().Stats().AsyncPending
	if err := app.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: session writes: %w", err)
	}
	if pending > 0 {
		o.cfg.Logger.Info("queued session writes written", "count", pending)
	}
	return nil
}
