// Command app is one server of the mcsession example: a JSON session API
// (see package server) whose sessions live in memcached, so that several
// app processes behind a non-sticky load balancer share them.
//
//	go run ./examples/app -nodes n1=127.0.0.1:11211,n2=127.0.0.1:11212,n3=127.0.0.1:11213
//
// Flags:
//
//	-listen ADDR          listen address (default 127.0.0.1:8080; port 0 picks a free one)
//	-nodes LIST           memcached nodes, n1=HOST:PORT,n2=HOST:PORT,... (required
//	                      unless -nodes-file is given)
//	-nodes-file FILE      read the node list from FILE instead (the same format;
//	                      entries may also be on separate lines, # starts a
//	                      comment) and read it again on SIGHUP: added nodes take
//	                      new sessions, removed ones are drained, then dropped
//	-drain-timeout DURATION  how long a removed node is drained before it is
//	                      dropped (default: the -idle value)
//	-name NAME            instance name shown in responses (default: the listen address)
//	-locking MODE         all, none, auto or pattern:REGEXP on "METHOD PATH" (default all)
//	-idle DURATION        session idle timeout (default 30m)
//	-lifetime DURATION    absolute session lifetime (default 24h)
//	-lock-timeout DURATION  how long a request waits for the session lock (default 2s)
//	-cookie NAME          session cookie name (default mcsession)
//	-tls-ca FILE          connect to memcached with TLS, trusting the CA
//	                      certificates in FILE (PEM) for the nodes' certificates
//	-tls-cert FILE        with -tls-key: the client certificate (PEM) presented
//	                      to nodes that require one (mutual TLS); needs -tls-ca
//	-tls-key FILE         the client certificate's private key (PEM)
//	-encrypt-keys HEX[,HEX...]  encrypt sessions at rest with AES-256-GCM: keys
//	                      of 64 hex characters (32 bytes) each, e.g. from
//	                      "openssl rand -hex 32"; the first encrypts, every
//	                      one decrypts (to rotate: NEW,OLD, later NEW alone)
//	-encrypt-keys-file FILE  read the keys of -encrypt-keys from FILE instead (one
//	                      or more per line, comma-separated, # comments), so
//	                      that they do not show in the process list
//	-encrypt-allow-plaintext  with encryption: also read sessions stored in
//	                      clear (while turning encryption on over live sessions)
//
// Once it listens, it prints one line to standard output:
//
//	mcsession example app NAME listening on http://HOST:PORT
//
// SIGINT and SIGTERM shut it down gracefully: requests in flight finish
// (bounded by 10 s) and their sessions are committed. SIGHUP re-reads
// -nodes-file and applies the node list it holds (see
// replica.Cluster.SetNodes), logging what changed; a file that cannot be
// read or parsed is logged and the current list kept.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mcsession/mcsession/codec"
	"github.com/mcsession/mcsession/examples/app/server"
	"github.com/mcsession/mcsession/replica"
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
	listen                 string
	nodesFile              string
	tlsCA, tlsCert, tlsKey string
	// keyIDs are the key ids of -encrypt-keys (the first one encrypts).
	keyIDs []string
	cfg    server.Config
}

// parseFlags parses the command line into options.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("app", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "listen `address` (port 0 picks a free port)")
	fs.StringVar(&o.cfg.Nodes, "nodes", "", "memcached `nodes`: n1=HOST:PORT,n2=HOST:PORT,... (required unless -nodes-file is given)")
	fs.StringVar(&o.nodesFile, "nodes-file", "", "read the node list from `file` (same format, one or more lines, # comments) instead of -nodes, and again on SIGHUP")
	fs.DurationVar(&o.cfg.DrainTimeout, "drain-timeout", 0, "how long a node removed from -nodes-file is drained before it is dropped (default: the -idle value)")
	fs.StringVar(&o.cfg.Name, "name", "", "instance `name` shown in responses (default: the listen address)")
	fs.StringVar(&o.cfg.Locking, "locking", server.DefaultLocking, "locking `mode`: all, none, auto or pattern:REGEXP (matched against \"METHOD PATH\")")
	fs.DurationVar(&o.cfg.IdleTimeout, "idle", server.DefaultIdleTimeout, "session idle timeout")
	fs.DurationVar(&o.cfg.Lifetime, "lifetime", server.DefaultLifetime, "absolute session lifetime")
	fs.DurationVar(&o.cfg.LockTimeout, "lock-timeout", server.DefaultLockTimeout, "how long a request waits for its session's lock")
	fs.StringVar(&o.cfg.CookieName, "cookie", server.DefaultCookieName, "session cookie `name`")
	fs.BoolVar(&o.cfg.Sticky, "sticky", false, "sticky mode: keep sessions in this server's memory, check memcached's version before serving one")
	fs.BoolVar(&o.cfg.StickyTrust, "sticky-trust", false, "with -sticky: serve the local copy without the version check (msm's behaviour: stale after failback)")
	fs.BoolVar(&o.cfg.AsyncBackup, "async-backup", false, "asynchronous writes: the backup copy (non-sticky) or the whole write (-sticky) after the response; flushed on SIGTERM/SIGINT")
	fs.StringVar(&o.tlsCA, "tls-ca", "", "connect to memcached with TLS, trusting the CA certificates in `file` (PEM)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "client certificate `file` (PEM) for memcached nodes that require one; with -tls-key and -tls-ca")
	fs.StringVar(&o.tlsKey, "tls-key", "", "private key `file` (PEM) of -tls-cert")
	encryptKeys := fs.String("encrypt-keys", "", "encrypt sessions at rest (AES-256-GCM) with these `keys`: HEX[,HEX...], 64 hex characters (32 bytes) each; the first encrypts, every one decrypts")
	encryptKeysFile := fs.String("encrypt-keys-file", "", "read the keys of -encrypt-keys from `file` (comma- or line-separated, # comments), keeping them out of the process list")
	fs.BoolVar(&o.cfg.AllowPlaintext, "encrypt-allow-plaintext", false, "with -encrypt-keys or -encrypt-keys-file: also read sessions stored in clear (migration)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.nodesFile != "" {
		spec, err := readNodesFile(o.nodesFile)
		if err != nil {
			return o, err
		}
		o.cfg.Nodes = spec
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
	tlsCfg, err := loadTLS(o.tlsCA, o.tlsCert, o.tlsKey)
	if err != nil {
		return o, err
	}
	o.cfg.TLS = tlsCfg
	ring, err := loadKeys(*encryptKeys, *encryptKeysFile)
	if err != nil {
		return o, err
	}
	if ring != nil {
		o.cfg.Encryption, o.keyIDs = ring, ring.KeyIDs()
	} else if o.cfg.AllowPlaintext {
		return o, errors.New("-encrypt-allow-plaintext needs -encrypt-keys or -encrypt-keys-file")
	}
	return o, nil
}

// loadKeys returns the key ring of -encrypt-keys (keys) or
// -encrypt-keys-file (file), nil when neither is given. Errors name the
// flag and the key's position, never a key.
func loadKeys(keys, file string) (*codec.KeyRing, error) {
	flagName := "-encrypt-keys"
	switch {
	case keys != "" && file != "":
		return nil, errors.New("-encrypt-keys and -encrypt-keys-file exclude each other")
	case file != "":
		flagName = "-encrypt-keys-file " + file
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("-encrypt-keys-file: %w", err)
		}
		var list []string
		for _, line := range strings.Split(string(data), "\n") {
			line, _, _ = strings.Cut(line, "#")
			if line = strings.TrimSpace(line); line != "" {
				list = append(list, strings.Trim(line, ","))
			}
		}
		if len(list) == 0 {
			return nil, fmt.Errorf("%s: no key in it", flagName)
		}
		keys = strings.Join(list, ",")
	case keys == "":
		return nil, nil
	}
	ring, err := codec.ParseKeyRing(keys)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flagName, err)
	}
	return ring, nil
}

// loadTLS returns the TLS configuration of the memcached connections: nil
// without caFile; otherwise the CA certificates of caFile as roots and,
// with certFile and keyFile (both or neither), the client certificate.
func loadTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("-tls-cert and -tls-key go together")
	}
	if caFile == "" {
		if certFile != "" {
			return nil, errors.New("-tls-cert and -tls-key need -tls-ca (the CA that signed memcached's certificate)")
		}
		return nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("-tls-ca: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("-tls-ca %s: no PEM certificate in it", caFile)
	}
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("-tls-cert, -tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// run parses args, serves until SIGINT or SIGTERM, and shuts down.
func run(args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	var hup chan os.Signal
	if o.nodesFile != "" {
		// Registered first, so that a SIGHUP during start-up is applied
		// once the app runs rather than killing it.
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
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
	if o.cfg.Encryption != nil {
		o.cfg.Logger.Info("sessions encrypted at rest (AES-256-GCM)", "encrypting_key_id", o.keyIDs[0],
			"decrypting_key_ids", o.keyIDs, "allow_plaintext", o.cfg.AllowPlaintext)
	}
	app, err := server.New(o.cfg)
	if err != nil {
		ln.Close()
		return err
	}
	defer app.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if hup != nil {
		go reloadOnHangup(ctx, hup, o.nodesFile, app.Store().Cluster(), o.cfg.Logger)
	}
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

// readNodesFile reads a node list file: the -nodes format, where entries
// may also be separated by line breaks, blank lines are ignored and "#"
// starts a comment that runs to the end of its line.
func readNodesFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("-nodes-file: %w", err)
	}
	var entries []string
	for _, line := range strings.Split(string(data), "\n") {
		line, _, _ = strings.Cut(line, "#")
		for _, e := range strings.Split(line, ",") {
			if e = strings.TrimSpace(e); e != "" {
				entries = append(entries, e)
			}
		}
	}
	if len(entries) == 0 {
		return "", fmt.Errorf("-nodes-file %s: no nodes in it", path)
	}
	return strings.Join(entries, ","), nil
}

// reloadOnHangup applies the node list of path to cluster at every signal
// on hup, until ctx ends.
func reloadOnHangup(ctx context.Context, hup <-chan os.Signal, path string, cluster *replica.Cluster, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if err := applyNodesFile(path, cluster, log); err != nil {
			log.Error("SIGHUP: node list not changed", "file", path, "err", err)
		}
	}
}

// applyNodesFile reads path and gives its node list to cluster, logging
// the change.
func applyNodesFile(path string, cluster *replica.Cluster, log *slog.Logger) error {
	spec, err := readNodesFile(path)
	if err != nil {
		return err
	}
	nodes, err := replica.ParseNodes(spec)
	if err != nil {
		return fmt.Errorf("-nodes-file %s: %w", path, err)
	}
	ch, err := cluster.SetNodes(nodes)
	if err != nil {
		return err
	}
	var draining []string
	for _, d := range cluster.Draining() {
		draining = append(draining, fmt.Sprintf("%s=%s until %s", d.ID, d.Addr, d.Until.Format(time.RFC3339)))
	}
	log.Info("SIGHUP: node list applied", "file", path, "nodes", spec, "added", ch.Added, "removed", ch.Removed,
		"undrained", ch.Undrained, "draining", draining)
	return nil
}
