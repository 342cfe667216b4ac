// Package demo runs the mcsession cluster demo: memcached nodes and app
// servers as local child processes, a round-robin reverse proxy in front of
// the apps, and a live page that shows which app served each request, where
// the session lives, each node's health and breaker state, and buttons to
// stop and restart nodes.
//
// The demo process serves, on one loopback address:
//
//	GET  /                        the page (inline HTML, CSS and JS)
//	GET  /demo/state?id=ID        nodes, apps and the placement of session ID
//	POST /demo/nodes/{id}/stop    stop a memcached node (SIGTERM)
//	POST /demo/nodes/{id}/kill    kill a memcached node (SIGKILL, a crash)
//	POST /demo/nodes/{id}/start   restart a stopped node (empty, same address)
//	anything else                 proxied round robin to the app servers
package demo

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcsession/mcsession/examples/app/server"
	"github.com/mcsession/mcsession/examples/internal/appproc"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

// page is the demo page: inline HTML, CSS and JS, no dependencies.
//
//go:embed index.html
var page string

// Defaults for Config fields left at their zero value.
const (
	// DefaultListen is the address of the proxy and the page.
	DefaultListen = "127.0.0.1:8000"
	// DefaultNodes is the number of memcached nodes.
	DefaultNodes = 3
	// DefaultApps is the number of app servers.
	DefaultApps = 2
	// DefaultPollInterval is how often the demo probes nodes and apps.
	DefaultPollInterval = 500 * time.Millisecond
	// DefaultStartTimeout bounds the start of everything, the build of the
	// app included.
	DefaultStartTimeout = 3 * time.Minute
)

const (
	// probeTimeout bounds one probe of a node or an app.
	probeTimeout = time.Second
	// nodeStartTimeout bounds the restart of a node.
	nodeStartTimeout = 10 * time.Second
	// shutdownTimeout bounds the shutdown of the demo's HTTP server.
	shutdownTimeout = 5 * time.Second
)

// ErrNotStopped is in the error of a failed Start (one cancelled by its
// context included) when Start could not stop everything it had started.
var ErrNotStopped = errors.New("demo: could not stop everything it started")

// Config configures the demo. The zero value gives the documented
// defaults.
type Config struct {
	// Listen is the proxy's and page's address; it must be a loopback
	// address, since the page can stop nodes. Port 0 picks a free port.
	// Default DefaultListen ("127.0.0.1:8000").
	Listen string
	// Nodes is the number of memcached nodes, named n1, n2, ... Default
	// DefaultNodes (3).
	Nodes int
	// Apps is the number of app servers, named app1, app2, ... Default
	// DefaultApps (2).
	Apps int
	// AppBinary is a built examples/app. Default "": it is built with
	// "go build" into a temporary directory (the current directory must
	// then lie inside the mcsession module).
	AppBinary string
	// AppArgs are extra flags for every app, e.g. "-locking", "auto".
	// Default none.
	AppArgs []string
	// AppLog receives the apps' logs (failovers, relocations). Default:
	// discarded.
	AppLog io.Writer
	// PollInterval is how often the demo probes every node through its own
	// replica.Cluster (so its breakers follow the nodes' health) and asks
	// every app for its view. Default DefaultPollInterval (500 ms).
	PollInterval time.Duration
	// StartTimeout bounds Start. Default DefaultStartTimeout (3 min).
	StartTimeout time.Duration
	// Logger receives the demo's own events. Default: discarded.
	Logger *slog.Logger
}

// Demo is a running demo. Close it to stop every child process.
type Demo struct {
	cfg     Config
	log     *slog.Logger
	tmpDir  string
	mc      *mcproc.Cluster
	apps    []*appproc.Proc
	cluster *replica.Cluster // the demo's own view of the nodes
	st      *store.Store     // for Placement only; it stores nothing
	ln      net.Listener
	srv     *http.Server
	next    atomic.Uint64 // round-robin position of the proxy
	hc      *http.Client  // probes of the apps

	mu    sync.Mutex
	views map[string]map[string]string // app name -> node id -> breaker state

	probe     chan struct{} // asks the poller for an immediate round
	stopPoll  context.CancelFunc
	pollDone  chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// NodeState is one memcached node in State.
type NodeState struct {
	// ID is the node id, e.g. "n1".
	ID string `json:"id"`
	// Addr is the node's host:port.
	Addr string `json:"addr"`
	// Running reports whether the node's memcached process is alive.
	Running bool `json:"running"`
	// Breaker is the node's breaker state in the demo's own
	// replica.Cluster: "closed", "half-open" or "open".
	Breaker string `json:"breaker"`
	// Apps maps each app's name to the node's breaker state in that app
	// ("" when the app did not answer).
	Apps map[string]string `json:"apps"`
}

// AppState is one app server in State.
type AppState struct {
	// Name is the app's instance name, e.g. "app1".
	Name string `json:"name"`
	// URL is the app's own address (the proxy forwards to it).
	URL string `json:"url"`
	// Running reports whether the app process is alive.
	Running bool `json:"running"`
	// Pid is the app's process id.
	Pid int `json:"pid"`
}

// SessionState is the placement of a session id in State.
type SessionState struct {
	// ID is the session id asked about.
	ID string `json:"id"`
	// Valid is false for an id that does not parse or names no node.
	Valid bool `json:"valid"`
	// Primary is the node that holds the primary copy (the id's suffix).
	Primary string `json:"primary"`
	// Backup is the node the next save writes the backup copy to: the
	// next healthy node after the primary ("" when there is none).
	Backup string `json:"backup"`
}

// State is the JSON answer of GET /demo/state.
type State struct {
	// Nodes lists the memcached nodes in order.
	Nodes []NodeState `json:"nodes"`
	// Apps lists the app servers in order.
	Apps []AppState `json:"apps"`
	// Session is the placement of the id given as ?id=, nil without one.
	Session *SessionState `json:"session,omitempty"`
}

// Start builds (when needed) and starts everything: the memcached nodes,
// the app servers and the proxy with the page. ctx bounds the start only;
// Close stops everything. On failure (ctx cancelled included), whatever was
// started is stopped, and the error wraps ErrNotStopped if that failed.
func Start(ctx context.Context, cfg Config) (d *Demo, err error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.Nodes == 0 {
		cfg.Nodes = DefaultNodes
	}
	if cfg.Apps == 0 {
		cfg.Apps = DefaultApps
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if cfg.AppLog == nil {
		cfg.AppLog = io.Discard
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Nodes < 2 || cfg.Apps < 1 || cfg.PollInterval < 0 {
		return nil, fmt.Errorf("demo: need at least 2 nodes and 1 app (got %d and %d)", cfg.Nodes, cfg.Apps)
	}
	if err := checkLoopback(cfg.Listen); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()

	d = &Demo{
		cfg:      cfg,
		log:      cfg.Logger,
		hc:       &http.Client{Timeout: probeTimeout},
		views:    map[string]map[string]string{},
		probe:    make(chan struct{}, 1),
		pollDone: make(chan struct{}),
	}
	defer func() {
		if err != nil {
			if cerr := d.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("%w: %w", ErrNotStopped, cerr))
			}
			d = nil
		}
	}()
	// The listener first: a busy port fails fast, before any build.
	if d.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return d, fmt.Errorf("demo: listen (choose another address with -listen): %w", err)
	}
	bin := cfg.AppBinary
	if bin == "" {
		if d.tmpDir, err = os.MkdirTemp("", "mcsession-demo-"); err != nil {
			return d, fmt.Errorf("demo: %w", err)
		}
		d.log.Info("building the app", "package", appproc.ImportPath)
		if bin, err = appproc.Build(ctx, d.tmpDir); err != nil {
			return d, fmt.Errorf("demo: %w", err)
		}
	}
	d.log.Info("starting memcached nodes", "count", cfg.Nodes)
	if d.mc, err = mcproc.StartCluster(ctx, cfg.Nodes, mcproc.Options{}); err != nil {
		return d, fmt.Errorf("demo: %w", err)
	}
	for i := 1; i <= cfg.Apps; i++ {
		name := "app" + strconv.Itoa(i)
		p, err := appproc.Start(ctx, appproc.Options{
			Binary: bin, Name: name, Nodes: d.mc.Spec(), Args: cfg.AppArgs, Stderr: cfg.AppLog,
		})
		if err != nil {
			return d, fmt.Errorf("demo: %w", err)
		}
		d.apps = append(d.apps, p)
		d.log.Info("app server started", "name", name, "url", p.URL(), "pid", p.Pid())
	}
	nodes, err := replica.ParseNodes(d.mc.Spec())
	if err != nil {
		return d, fmt.Errorf("demo: %w", err)
	}
	if d.cluster, err = replica.New(replica.Config{Nodes: nodes, Timeout: probeTimeout / 2, MaxIdleConns: 2}); err != nil {
		return d, fmt.Errorf("demo: %w", err)
	}
	if d.st, err = store.New(store.Config{Cluster: d.cluster}); err != nil {
		return d, fmt.Errorf("demo: %w", err)
	}

	pollCtx, stopPoll := context.WithCancel(context.Background())
	d.stopPoll = stopPoll
	d.pollOnce(ctx)
	go d.poll(pollCtx)

	d.srv = &http.Server{
		Handler:           d.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
	}
	go func() {
		if err := d.srv.Serve(d.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("demo server failed", "err", err)
		}
	}()
	return d, nil
}

// checkLoopback rejects a listen address whose host is not a loopback IP
// or "localhost".
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("demo: listen address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("demo: listen address %q: only loopback addresses (127.0.0.1, ::1, localhost): the page can stop nodes", addr)
}

// URL returns the address of the page and the proxy, e.g.
// "http://127.0.0.1:8000/".
func (d *Demo) URL() string { return "http://" + d.ln.Addr().String() + "/" }

// Nodes returns the memcached nodes.
func (d *Demo) Nodes() *mcproc.Cluster { return d.mc }

// Apps returns the app server processes.
func (d *Demo) Apps() []*appproc.Proc { return d.apps }

// Close stops the HTTP server (the page and the proxy), the app servers
// and the memcached nodes, all gracefully (SIGTERM, then SIGKILL after a
// grace period), and removes the built app. It logs each thing it stopped
// to Config.Logger and waits until every child process has exited. A
// second Close returns the first one's result.
func (d *Demo) Close() error {
	d.closeOnce.Do(func() {
		var errs []error
		if d.srv != nil {
			// Requests still in flight after shutdownTimeout (a browser
			// tab) are cut off: the demo stops either way.
			ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			if err := d.srv.Shutdown(ctx); err != nil {
				d.log.Warn("requests still open; closing their connections", "after", shutdownTimeout, "err", err)
				if err := d.srv.Close(); err != nil {
					errs = append(errs, fmt.Errorf("demo: close the server: %w", err))
				}
			}
			cancel()
			d.log.Info("stopped the page and the proxy", "url", d.URL())
		} else if d.ln != nil {
			d.ln.Close()
		}
		if d.stopPoll != nil {
			d.stopPoll()
			<-d.pollDone
		}
		errs = append(errs, parallel(len(d.apps), func(i int) error {
			p := d.apps[i]
			if err := p.Stop(); err != nil {
				return err
			}
			d.log.Info("stopped app server", "name", p.Name(), "pid", p.Pid())
			return nil
		}))
		if d.cluster != nil {
			errs = append(errs, d.cluster.Close())
		}
		if d.mc != nil {
			errs = append(errs, parallel(len(d.mc.Nodes), func(i int) error {
				n := d.mc.Nodes[i]
				if !n.Running() { // stopped from the page
					d.log.Info("memcached node already stopped", "node", n.ID, "addr", n.Addr())
					return nil
				}
				if err := n.Stop(); err != nil {
					return err
				}
				d.log.Info("stopped memcached node", "node", n.ID, "addr", n.Addr())
				return nil
			}))
			errs = append(errs, d.mc.Close()) // kills whatever Stop left
		}
		if d.tmpDir != "" {
			errs = append(errs, os.RemoveAll(d.tmpDir))
		}
		d.closeErr = errors.Join(errs...)
	})
	return d.closeErr
}

// parallel runs f(0) ... f(n-1) concurrently and joins their errors.
func parallel(n int, f func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// poll probes nodes and apps every PollInterval, and at once when asked
// through d.probe, until ctx is done.
func (d *Demo) poll(ctx context.Context) {
	defer close(d.pollDone)
	t := time.NewTicker(d.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.probe:
		}
		d.pollOnce(ctx)
	}
}

// pollOnce pings every node through the demo's cluster (a meta no-op; a
// refused connection counts against the node's breaker) and
// reads every app's breaker view from its GET /api/nodes.
func (d *Demo) pollOnce(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, id := range d.cluster.NodeIDs() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = d.cluster.Ping(ctx, id)
		}()
	}
	views := make([]map[string]string, len(d.apps))
	for i, p := range d.apps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			views[i] = d.appView(ctx, p)
		}()
	}
	wg.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, p := range d.apps {
		d.views[p.Name()] = views[i]
	}
}

// appView returns the breaker state of every node as app p sees it, nil
// when p does not answer.
func (d *Demo) appView(ctx context.Context, p *appproc.Proc) map[string]string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+"/api/nodes", nil)
	if err != nil {
		return nil
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var nr server.NodesResponse
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&nr) != nil {
		return nil
	}
	view := make(map[string]string, len(nr.Nodes))
	for _, n := range nr.Nodes {
		view[n.ID] = n.State
	}
	return view
}

// probeSoon asks the poller for a round now (after a node was stopped or
// started), without waiting for it.
func (d *Demo) probeSoon() {
	select {
	case d.probe <- struct{}{}:
	default:
	}
}

// state returns the current State, with the placement of session id when
// id is not "".
func (d *Demo) state(id string) State {
	st := State{Nodes: []NodeState{}, Apps: []AppState{}}
	breakers := map[string]string{}
	for _, s := range d.cluster.Status() {
		breakers[s.ID] = s.State
	}
	d.mu.Lock()
	for _, n := range d.mc.Nodes {
		ns := NodeState{ID: n.ID, Addr: n.Addr(), Running: n.Running(), Breaker: breakers[n.ID], Apps: map[string]string{}}
		for _, p := range d.apps {
			ns.Apps[p.Name()] = d.views[p.Name()][n.ID]
		}
		st.Nodes = append(st.Nodes, ns)
	}
	d.mu.Unlock()
	for _, p := range d.apps {
		st.Apps = append(st.Apps, AppState{Name: p.Name(), URL: p.URL(), Running: p.Running(), Pid: p.Pid()})
	}
	if id != "" {
		primary, backup, ok := d.st.Placement(id)
		st.Session = &SessionState{ID: id, Valid: ok, Primary: primary, Backup: backup}
	}
	return st
}

// handler routes the page and the demo's endpoints, and proxies the rest.
func (d *Demo) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = io.WriteString(w, page)
	})
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent) // not proxied: it would skew the round robin
	})
	mux.HandleFunc("GET /demo/state", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.state(r.URL.Query().Get("id")))
	})
	mux.HandleFunc("POST /demo/nodes/{id}/{action}", d.nodeAction)
	mux.HandleFunc("/demo/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{
			"error": "not found: the demo serves GET /demo/state and POST /demo/nodes/{id}/stop|kill|start",
		})
	})
	mux.Handle("/", d.proxy())
	return mux
}

// nodeAction stops, kills or restarts one node and answers its NodeState.
func (d *Demo) nodeAction(w http.ResponseWriter, r *http.Request) {
	id, action := r.PathValue("id"), r.PathValue("action")
	n := d.mc.Node(id)
	if n == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no node " + strconv.Quote(id)})
		return
	}
	var err error
	switch action {
	case "stop":
		err = n.Stop()
	case "kill":
		err = n.Kill()
	case "start":
		if !n.Running() {
			ctx, cancel := context.WithTimeout(r.Context(), nodeStartTimeout)
			err = n.Restart(ctx)
			cancel()
		}
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no action " + strconv.Quote(action) + " (stop, kill or start)"})
		return
	}
	d.log.Info("node "+action, "node", id, "err", err)
	d.probeSoon()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	for _, ns := range d.state("").Nodes {
		if ns.ID == id {
			writeJSON(w, http.StatusOK, ns)
			return
		}
	}
}

// proxy returns the round-robin reverse proxy to the apps.
func (d *Demo) proxy() http.Handler {
	targets := make([]*url.URL, len(d.apps))
	for i, p := range d.apps {
		u, err := url.Parse(p.URL())
		if err != nil {
			panic(err) // appproc only returns URLs it parsed from the app
		}
		targets[i] = u
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			t := targets[(d.next.Add(1)-1)%uint64(len(targets))]
			pr.SetURL(t)
			pr.SetXForwarded()
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			d.log.Warn("proxy", "path", r.URL.Path, "err", err)
			http.Error(w, "proxy: app server unreachable", http.StatusBadGateway)
		},
		ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
	}
}

// writeJSON answers v as JSON with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
