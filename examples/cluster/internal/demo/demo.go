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
//	POST /demo/nodes/{id}/pause   hang a memcached node (SIGSTOP: it keeps
//	                              its data and port and answers nothing)
//	POST /demo/nodes/{id}/resume  continue a paused node (SIGCONT)
//	POST /demo/nodes/{id}/start   restart a stopped node (empty, same address)
//	POST /demo/load/start?users=N start the load generator (default 20 users)
//	POST /demo/load/stop          stop it; answers after its final read
//	GET  /demo/load               the load's time series and counters (LoadState)
//	GET  /demo/metrics            every app's and node's main metrics (Metrics)
//	anything else                 proxied round robin to the app servers
//
// # Load
//
// The load generator runs inside the demo process and sends its requests
// to the demo's own proxy, as browsers would. Each virtual user has its own
// cookie jar, hence its own session, and repeats: increment its own counter
// (POST /api/counter), increment the shared counter (the same request with
// the one cookie jar every virtual user shares), and once a second read its
// own counter back (GET /api/session). The demo reads the shared counter
// once a second as well. An increment is acknowledged when it is answered
// 200; each counter must hold exactly its acknowledged increments. When the
// load stops (POST /demo/load/stop, Config.LoadMaxDuration, or Close), the
// virtual users finish their current request, the demo waits for the apps'
// queued writes and reads every counter a last time (LoadResult). The page
// draws the requests per second, the 409 and 503 answers per second and
// acknowledged against stored increments, and shows which node is the
// shared counter's primary, to kill or pause it while the load runs.
//
// # Sticky variant
//
// With Config.Sticky the apps run in sticky mode (-sticky: each keeps the
// sessions it serves in memory) and the proxy is sticky, as a load balancer
// in front of Tomcat with memcached-session-manager would be: it pins each
// client to one app server with the RouteCookie, which names that server
// (HAProxy's "cookie SERVERID insert"). When the pinned server is down (its
// process stopped, or it refuses the connection), the proxy sends the
// request to a running one and pins the client there: that server loads the
// session from memcached, so the session survives the death of the server
// that held it. The page can then also stop, kill and restart app servers:
//
//	POST /demo/apps/{name}/stop   stop an app server (SIGTERM: it finishes its
//	                              requests and writes its queued session writes)
//	POST /demo/apps/{name}/kill   kill an app server (SIGKILL, a crash: queued
//	                              writes, with -async-backup, are lost)
//	POST /demo/apps/{name}/start  restart a stopped app server (same address,
//	                              new process, empty session cache)
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
	"strings"
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
	// appStartTimeout bounds the restart of an app server.
	appStartTimeout = appproc.DefaultStartTimeout
)

// The sticky proxy's cookie and response headers (Config.Sticky).
const (
	// RouteCookie is the cookie the sticky proxy pins a client with: the
	// name of the client's app server, e.g. "app1". The proxy sets it on
	// the first response and whenever it moves the client to another
	// server.
	RouteCookie = "demo_route"
	// RouteHeader names, on every response of the sticky proxy, the app
	// server the request was sent to.
	RouteHeader = "X-Demo-Route"
	// FailoverHeader names, on a response of the sticky proxy, the app
	// server the client was pinned to when the proxy had to send the
	// request elsewhere because that server was down.
	FailoverHeader = "X-Demo-Failover"
)

// The process states of an app server (AppState.Status).
const (
	// AppRunning: the process is alive and the proxy sends requests to it.
	AppRunning = "running"
	// AppStopping: stopped from the page (SIGTERM), still finishing its
	// requests and queued writes; the proxy sends it nothing new.
	AppStopping = "stopping"
	// AppStopped: stopped from the page (SIGTERM), and gone.
	AppStopped = "stopped"
	// AppKilled: killed from the page (SIGKILL), and gone.
	AppKilled = "killed"
	// AppExited: gone, not by the page's doing.
	AppExited = "exited"
	// AppStarting: being restarted from the page.
	AppStarting = "starting"
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
	// then lie inside the repository: see appproc.Build).
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
	// Sticky runs the sticky variant (see the package doc): the apps get
	// -sticky, the proxy pins each client to one app server with the
	// RouteCookie and fails over to a running one, and the page can stop,
	// kill and restart app servers. Default false: the round-robin proxy
	// and non-sticky apps.
	Sticky bool
	// StickyTrust, with Sticky, gives the apps -sticky-trust (they serve
	// the session in memory without checking memcached's version first).
	StickyTrust bool
	// AsyncBackup gives the apps -async-backup (writes queued after the
	// response: the backup copy, or with Sticky the whole write).
	AsyncBackup bool
	// LoadMaxDuration bounds a run of the load generator: it stops by
	// itself after that long. Default DefaultLoadMaxDuration (10 min).
	LoadMaxDuration time.Duration
	// LoadThink is each virtual user's pause between two rounds of
	// increments. Default DefaultLoadThink (10 ms); negative for none.
	LoadThink time.Duration
}

// Demo is a running demo. Close it to stop every child process.
type Demo struct {
	cfg       Config
	log       *slog.Logger
	tmpDir    string
	bin       string   // the app binary
	appArgs   []string // every app's flags after -listen, -nodes and -name
	page      string   // the page, marked sticky in sticky mode
	mc        *mcproc.Cluster
	apps      []*appSlot
	cluster   *replica.Cluster // the demo's own view of the nodes
	st        *store.Store     // for Placement only; it stores nothing
	ln        net.Listener
	srv       *http.Server
	next      atomic.Uint64   // round-robin position of the proxy
	hc        *http.Client    // probes of the apps
	transport *http.Transport // the proxy's
	load      *loadGen

	mu      sync.Mutex
	views   map[string]map[string]string     // app name -> node id -> breaker state
	stats   map[string]*server.StatsResponse // app name -> its /api/stats
	appWin  map[string]*recent               // app name -> its load and save latencies
	nodeWin map[string]*recent               // node id -> the demo's probe round trips
	paused  map[string]bool                  // node id -> paused from the page

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
	// Paused reports a running node paused from the page (SIGSTOP).
	Paused bool `json:"paused"`
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
	// Pid is the app's process id (of its latest process).
	Pid int `json:"pid"`
	// Status is the process state: AppRunning, AppStopping, AppStopped,
	// AppKilled, AppExited or AppStarting.
	Status string `json:"status"`
	// Restarts counts the restarts from the page (sticky mode).
	Restarts int `json:"restarts,omitempty"`
	// Stats is the app's GET /api/stats as of the latest probe (sticky
	// mode only; nil when the app did not answer).
	Stats *server.StatsResponse `json:"stats,omitempty"`
}

// ModeState is the demo's mode in State.
type ModeState struct {
	// Sticky is Config.Sticky: the sticky proxy and apps.
	Sticky bool `json:"sticky"`
	// StickyTrust is Config.StickyTrust.
	StickyTrust bool `json:"stickyTrust"`
	// AsyncBackup is Config.AsyncBackup.
	AsyncBackup bool `json:"asyncBackup"`
	// RouteCookie is the sticky proxy's cookie, "" in round-robin mode.
	RouteCookie string `json:"routeCookie,omitempty"`
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
	// Mode is the demo's mode.
	Mode ModeState `json:"mode"`
	// Pinned is the app server the RouteCookie of the request for the
	// state names: the one the sticky proxy sends the asker to while it
	// runs ("" in round-robin mode or without the cookie).
	Pinned string `json:"pinned,omitempty"`
}

// appSlot is one app server of the demo: its name and address stay, its
// process changes when the page restarts it.
type appSlot struct {
	name   string
	target *url.URL // the app's base URL; a restart listens there again

	ctl    sync.Mutex // serialises restarts and Close's stop of the app
	closed bool       // set by Close under ctl: no more restarts

	mu       sync.Mutex
	proc     *appproc.Proc
	action   string // the page's last action on proc: "" or an App* state
	restarts int
}

// current returns the app's process and the page's last action on it.
func (s *appSlot) current() (*appproc.Proc, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc, s.action
}

// setAction records the page's action on p, unless p was replaced since.
func (s *appSlot) setAction(p *appproc.Proc, action string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == p {
		s.action = action
	}
}

// status returns the app's process state (AppState.Status).
func (s *appSlot) status() string {
	p, action := s.current()
	running := p.Running()
	switch {
	case action == AppStarting:
		return AppStarting
	case running && action == AppStopping:
		return AppStopping
	case running:
		return AppRunning
	case action == AppStopping: // gone, the stop not yet recorded
		return AppStopped
	case action == AppStopped || action == AppKilled:
		return action
	}
	return AppExited
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
	if cfg.LoadMaxDuration <= 0 {
		cfg.LoadMaxDuration = DefaultLoadMaxDuration
	}
	if cfg.LoadThink == 0 {
		cfg.LoadThink = DefaultLoadThink
	}
	if cfg.Nodes < 2 || cfg.Apps < 1 || cfg.PollInterval < 0 {
		return nil, fmt.Errorf("demo: need at least 2 nodes and 1 app (got %d and %d)", cfg.Nodes, cfg.Apps)
	}
	if cfg.StickyTrust && !cfg.Sticky {
		return nil, errors.New("demo: StickyTrust (-sticky-trust) needs Sticky (-sticky)")
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
		stats:    map[string]*server.StatsResponse{},
		appWin:   map[string]*recent{},
		nodeWin:  map[string]*recent{},
		paused:   map[string]bool{},
		probe:    make(chan struct{}, 1),
		pollDone: make(chan struct{}),
		page:     page,
		appArgs:  appArgs(cfg),
	}
	if cfg.Sticky {
		d.page = strings.Replace(page, "<body>", `<body class="sticky">`, 1)
	}
	// Enough idle connections to the apps for the load's virtual users:
	// http.DefaultTransport keeps 2 per app and would open (and leave in
	// TIME_WAIT) a connection for nearly every proxied request.
	d.transport = http.DefaultTransport.(*http.Transport).Clone()
	d.transport.MaxIdleConns = 2*MaxLoadUsers + 8
	d.transport.MaxIdleConnsPerHost = 2*MaxLoadUsers + 8
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
	d.load = newLoadGen(d)
	d.bin = cfg.AppBinary
	if d.bin == "" {
		if d.tmpDir, err = os.MkdirTemp("", "mcsession-demo-"); err != nil {
			return d, fmt.Errorf("demo: %w", err)
		}
		d.log.Info("building the app", "package", appproc.ImportPath)
		if d.bin, err = appproc.Build(ctx, d.tmpDir); err != nil {
			return d, fmt.Errorf("demo: %w", err)
		}
	}
	d.log.Info("starting memcached nodes", "count", cfg.Nodes)
	if d.mc, err = mcproc.StartCluster(ctx, cfg.Nodes, mcproc.Options{}); err != nil {
		return d, fmt.Errorf("demo: %w", err)
	}
	for i := 1; i <= cfg.Apps; i++ {
		name := "app" + strconv.Itoa(i)
		p, err := d.startProc(ctx, name, "")
		if err != nil {
			return d, fmt.Errorf("demo: %w", err)
		}
		target, err := url.Parse(p.URL())
		if err != nil {
			return d, errors.Join(fmt.Errorf("demo: app %s: %w", name, err), p.Kill())
		}
		d.apps = append(d.apps, &appSlot{name: name, target: target, proc: p})
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

// appArgs returns the flags of every app after -listen, -nodes and -name:
// the mode's, then Config.AppArgs.
func appArgs(cfg Config) []string {
	var args []string
	if cfg.Sticky {
		args = append(args, "-sticky")
	}
	if cfg.StickyTrust {
		args = append(args, "-sticky-trust")
	}
	if cfg.AsyncBackup {
		args = append(args, "-async-backup")
	}
	return append(args, cfg.AppArgs...)
}

// startProc starts the app process name, on listen ("" for a free port).
func (d *Demo) startProc(ctx context.Context, name, listen string) (*appproc.Proc, error) {
	return appproc.Start(ctx, appproc.Options{
		Binary: d.bin, Name: name, Nodes: d.mc.Spec(), Listen: listen, Args: d.appArgs, Stderr: d.cfg.AppLog,
	})
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

// Apps returns the app server processes: the latest process of each app
// server, running or not.
func (d *Demo) Apps() []*appproc.Proc {
	procs := make([]*appproc.Proc, len(d.apps))
	for i, s := range d.apps {
		procs[i], _ = s.current()
	}
	return procs
}

// app returns the app server called name, nil when there is none.
func (d *Demo) app(name string) *appSlot {
	for _, s := range d.apps {
		if s.name == name {
			return s
		}
	}
	return nil
}

// Close stops the load generator (its virtual users finish their current
// request; no final read), then the HTTP server (the page and the proxy),
// the app servers and the memcached nodes (a paused one is resumed first),
// all gracefully (SIGTERM, then SIGKILL after a grace period), and removes
// the built app. It logs each thing it stopped to Config.Logger and waits
// until every child process has exited. A second Close returns the first
// one's result.
func (d *Demo) Close() error {
	d.closeOnce.Do(func() {
		var errs []error
		if d.load != nil {
			d.load.close() // its virtual users talk to the proxy: first
		}
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
			s := d.apps[i]
			s.ctl.Lock() // waits for a restart from the page, and forbids more
			s.closed = true
			s.ctl.Unlock()
			p, action := s.current()
			if action != "" && !p.Running() { // stopped or killed from the page
				d.log.Info("app server already stopped", "name", p.Name(), "pid", p.Pid())
				return nil
			}
			if err := p.Stop(); err != nil {
				return err
			}
			d.log.Info("stopped app server", "name", p.Name(), "pid", p.Pid())
			return nil
		}))
		if d.transport != nil {
			d.transport.CloseIdleConnections()
		}
		if d.cluster != nil {
			errs = append(errs, d.cluster.Close())
		}
		if d.mc != nil {
			errs = append(errs, parallel(len(d.mc.Nodes), func(i int) error {
				n := d.mc.Nodes[i]
				if d.isPaused(n.ID) {
					_ = resumeNode(n) // a SIGTERM would wait for SIGCONT
				}
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
// refused connection counts against the node's breaker), reads every
// app's breaker view from its GET /api/nodes and its counters from its
// GET /api/stats.
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
	stats := make([]*server.StatsResponse, len(d.apps))
	for i, s := range d.apps {
		wg.Add(2)
		go func() {
			defer wg.Done()
			views[i] = d.appView(ctx, s)
		}()
		go func() {
			defer wg.Done()
			stats[i] = d.appStats(ctx, s)
		}()
	}
	wg.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, s := range d.apps {
		d.views[s.name] = views[i]
		d.stats[s.name] = stats[i]
	}
	d.recordLatencies(time.Now(), stats)
}

// getJSON decodes the JSON answer of GET url into v and reports whether
// that worked.
func (d *Demo) getJSON(ctx context.Context, url string, v any) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(v) == nil
}

// appView returns the breaker state of every node as app s sees it, nil
// when s does not answer.
func (d *Demo) appView(ctx context.Context, s *appSlot) map[string]string {
	var nr server.NodesResponse
	if !d.getJSON(ctx, s.target.String()+"/api/nodes", &nr) {
		return nil
	}
	view := make(map[string]string, len(nr.Nodes))
	for _, n := range nr.Nodes {
		view[n.ID] = n.State
	}
	return view
}

// appStats returns app s's GET /api/stats, nil when s does not answer.
func (d *Demo) appStats(ctx context.Context, s *appSlot) *server.StatsResponse {
	var sr server.StatsResponse
	if !d.getJSON(ctx, s.target.String()+"/api/stats", &sr) {
		return nil
	}
	return &sr
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
// id is not "", for a client pinned to app server pinned ("" for none).
func (d *Demo) state(id, pinned string) State {
	st := State{Nodes: []NodeState{}, Apps: []AppState{}, Mode: ModeState{
		Sticky: d.cfg.Sticky, StickyTrust: d.cfg.StickyTrust, AsyncBackup: d.cfg.AsyncBackup,
	}}
	if d.cfg.Sticky {
		st.Mode.RouteCookie = RouteCookie
		if d.app(pinned) != nil {
			st.Pinned = pinned
		}
	}
	breakers := map[string]string{}
	for _, s := range d.cluster.Status() {
		breakers[s.ID] = s.State
	}
	d.mu.Lock()
	for _, n := range d.mc.Nodes {
		ns := NodeState{ID: n.ID, Addr: n.Addr(), Running: n.Running(), Breaker: breakers[n.ID], Apps: map[string]string{}}
		ns.Paused = ns.Running && d.paused[n.ID]
		for _, s := range d.apps {
			ns.Apps[s.name] = d.views[s.name][n.ID]
		}
		st.Nodes = append(st.Nodes, ns)
	}
	d.mu.Unlock()
	for _, s := range d.apps {
		st.Apps = append(st.Apps, d.appState(s))
	}
	if id != "" {
		primary, backup, ok := d.st.Placement(id)
		st.Session = &SessionState{ID: id, Valid: ok, Primary: primary, Backup: backup}
	}
	return st
}

// appState returns app server s's AppState.
func (d *Demo) appState(s *appSlot) AppState {
	p, _ := s.current()
	s.mu.Lock()
	restarts := s.restarts
	s.mu.Unlock()
	as := AppState{Name: s.name, URL: s.target.String(), Running: p.Running(), Pid: p.Pid(), Status: s.status(), Restarts: restarts}
	if d.cfg.Sticky && as.Running {
		d.mu.Lock()
		as.Stats = d.stats[s.name]
		d.mu.Unlock()
	}
	return as
}

// pinned returns the app server name r's RouteCookie names, "" for none.
func pinned(r *http.Request) string {
	if c, err := r.Cookie(RouteCookie); err == nil {
		return c.Value
	}
	return ""
}

// handler routes the page and the demo's endpoints, and proxies the rest.
func (d *Demo) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = io.WriteString(w, d.page)
	})
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent) // not proxied: it would skew the round robin
	})
	mux.HandleFunc("GET /demo/state", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.state(r.URL.Query().Get("id"), pinned(r)))
	})
	mux.HandleFunc("POST /demo/nodes/{id}/{action}", d.nodeAction)
	mux.HandleFunc("POST /demo/load/start", d.loadStart)
	mux.HandleFunc("POST /demo/load/stop", d.loadStop)
	mux.HandleFunc("GET /demo/load", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.load.state())
	})
	mux.HandleFunc("GET /demo/metrics", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.metrics())
	})
	notFound := "not found: the demo serves GET /demo/state, GET /demo/load, GET /demo/metrics, " +
		"POST /demo/nodes/{id}/stop|kill|pause|resume|start and POST /demo/load/start|stop"
	if d.cfg.Sticky {
		mux.HandleFunc("POST /demo/apps/{name}/{action}", d.appAction)
		notFound += " and POST /demo/apps/{name}/stop|kill|start"
	}
	mux.HandleFunc("/demo/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": notFound})
	})
	if d.cfg.Sticky {
		mux.Handle("/", d.stickyProxy())
	} else {
		mux.Handle("/", d.proxy())
	}
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
		if d.isPaused(id) {
			_ = resumeNode(n) // a SIGTERM would wait for SIGCONT
		}
		err = n.Stop()
	case "kill":
		err = n.Kill()
	case "pause":
		if n.Running() && !d.isPaused(id) {
			if err = pauseNode(n); err == nil {
				d.setPaused(id, true)
			}
		}
	case "resume":
		if d.isPaused(id) {
			err = resumeNode(n)
		}
	case "start":
		if !n.Running() {
			ctx, cancel := context.WithTimeout(r.Context(), nodeStartTimeout)
			err = n.Restart(ctx)
			cancel()
		}
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no action " + strconv.Quote(action) + " (stop, kill, pause, resume or start)"})
		return
	}
	if action != "pause" && (err == nil || !n.Running()) {
		d.setPaused(id, false) // resumed, or gone
	}
	d.log.Info("node "+action, "node", id, "err", err)
	if err == nil {
		d.load.mark(action + " " + id)
	}
	d.probeSoon()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	for _, ns := range d.state("", "").Nodes {
		if ns.ID == id {
			writeJSON(w, http.StatusOK, ns)
			return
		}
	}
}

// appAction stops, kills or restarts one app server (sticky mode) and
// answers its AppState.
func (d *Demo) appAction(w http.ResponseWriter, r *http.Request) {
	name, action := r.PathValue("name"), r.PathValue("action")
	s := d.app(name)
	if s == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no app server " + strconv.Quote(name)})
		return
	}
	p, _ := s.current()
	var err error
	switch action {
	case "stop":
		if p.Running() {
			s.setAction(p, AppStopping)
			err = p.Stop() // SIGTERM; SIGKILL after appproc.StopGrace
			if s.status() == AppStopped {
				s.setAction(p, AppStopped)
			}
		}
	case "kill":
		if p.Running() {
			s.setAction(p, AppKilled)
			err = p.Kill()
		}
	case "start":
		ctx, cancel := context.WithTimeout(r.Context(), appStartTimeout)
		err = d.restartApp(ctx, s)
		cancel()
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no action " + strconv.Quote(action) + " (stop, kill or start)"})
		return
	}
	p, _ = s.current()
	d.log.Info("app server "+action, "name", name, "pid", p.Pid(), "err", err)
	if err == nil {
		d.load.mark(action + " " + name)
	}
	// Connections to a stopped app would fail the next request sent on
	// them; the next request to a restarted app opens a new one anyway.
	d.transport.CloseIdleConnections()
	d.probeSoon()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, d.appState(s))
}

// restartApp starts a new process for app server s, on its address, unless
// it runs. ctx bounds the start.
func (d *Demo) restartApp(ctx context.Context, s *appSlot) error {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	if s.closed {
		return errors.New("demo: shutting down")
	}
	old, action := s.current()
	if old.Running() {
		return nil // running or still stopping: nothing to start
	}
	s.setAction(old, AppStarting)
	p, err := d.startProc(ctx, s.name, s.target.Host)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.action = action
		return fmt.Errorf("demo: restart %s on %s: %w", s.name, s.target.Host, err)
	}
	s.proc, s.action = p, ""
	s.restarts++
	return nil
}

// The sticky proxy passes each try of a request to its ReverseProxy with
// an attempt in the request's context.
type attemptKey struct{}

// attempt is one try of the sticky proxy to send a request to an app.
type attempt struct {
	app    *appSlot
	pinned string // the app the request's RouteCookie named, "" for none
	last   bool   // no other app may be tried after this one
	failed error  // set when the app refused and the next may be tried
}

// stickyProxy returns the sticky reverse proxy to the apps: a client's
// requests go to the running app server its RouteCookie names; a client
// without one, or whose app server is down, goes to the next running one
// in round-robin order and is pinned there. A request the app refuses
// the connection for (it is stopping, or died since its last probe) is
// sent to the next running app when it has no body.
func (d *Demo) stickyProxy() http.Handler {
	rp := &httputil.ReverseProxy{
		Transport: d.transport,
		Rewrite: func(pr *httputil.ProxyRequest) {
			a := pr.In.Context().Value(attemptKey{}).(*attempt)
			pr.SetURL(a.app.target)
			pr.SetXForwarded()
		},
		ModifyResponse: func(resp *http.Response) error {
			a := resp.Request.Context().Value(attemptKey{}).(*attempt)
			resp.Header.Set(RouteHeader, a.app.name)
			if a.pinned == a.app.name {
				return nil
			}
			c := &http.Cookie{Name: RouteCookie, Value: a.app.name, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode}
			resp.Header.Add("Set-Cookie", c.String())
			if d.app(a.pinned) != nil {
				resp.Header.Set(FailoverHeader, a.pinned)
				d.log.Info("proxy: app server down, client moved", "from", a.pinned, "to", a.app.name)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			a := r.Context().Value(attemptKey{}).(*attempt)
			var op *net.OpError
			if !a.last && errors.As(err, &op) && op.Op == "dial" {
				a.failed = err // nothing was sent: the caller tries the next app
				return
			}
			d.log.Warn("proxy", "path", r.URL.Path, "app", a.app.name, "err", err)
			http.Error(w, "proxy: app server "+a.app.name+" unreachable", http.StatusBadGateway)
		},
		ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pin := pinned(r)
		apps := d.route(pin)
		if len(apps) == 0 {
			http.Error(w, "proxy: no app server is running (start one on the demo page)", http.StatusServiceUnavailable)
			return
		}
		retry := r.ContentLength == 0 // no body to send again
		for i, app := range apps {
			a := &attempt{app: app, pinned: pin, last: !retry || i == len(apps)-1}
			rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), attemptKey{}, a)))
			if a.failed == nil {
				return
			}
			d.log.Warn("proxy: app server refused the connection, trying the next", "app", app.name, "err", a.failed)
		}
	})
}

// route returns the running app servers in the order the sticky proxy
// tries them for a client pinned to app server pin ("" for none): pin
// first when it runs, then the others in round-robin order.
func (d *Demo) route(pin string) []*appSlot {
	var first *appSlot
	if s := d.app(pin); s != nil && s.status() == AppRunning {
		first = s
	}
	var offset uint64
	if first == nil { // a new pin: advance the round robin
		offset = d.next.Add(1) - 1
	}
	apps := make([]*appSlot, 0, len(d.apps))
	if first != nil {
		apps = append(apps, first)
	}
	for i := range d.apps {
		s := d.apps[(offset+uint64(i))%uint64(len(d.apps))]
		if s != first && s.status() == AppRunning {
			apps = append(apps, s)
		}
	}
	return apps
}

// proxy returns the round-robin reverse proxy to the apps.
func (d *Demo) proxy() http.Handler {
	targets := make([]*url.URL, len(d.apps))
	for i, s := range d.apps {
		targets[i] = s.target
	}
	return &httputil.ReverseProxy{
		Transport: d.transport,
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

// isPaused reports whether node id was paused from the page.
func (d *Demo) isPaused(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.paused[id]
}

// setPaused records whether node id is paused.
func (d *Demo) setPaused(id string, paused bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.paused[id] = paused
}

// writeJSON answers v as JSON with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
