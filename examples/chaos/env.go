package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mcsession/mcsession/examples/internal/appproc"
	"github.com/mcsession/mcsession/integration/mcproc"
)

// Defaults of EnvConfig.
const (
	DefaultNodes = 3
	DefaultApps  = 2
	// envStartTimeout bounds the start of a whole Env.
	envStartTimeout = 60 * time.Second
)

// EnvConfig configures an Env. Binary is required.
type EnvConfig struct {
	// Binary is the example app, built with appproc.Build.
	Binary string
	// Nodes is the number of memcached nodes, "n1" to "nN". Default 3.
	Nodes int
	// Apps is the number of app servers, "A", "B", ... Default 2.
	Apps int
	// AppArgs are extra flags for every app server, e.g. "-locking",
	// "none". Default none: locking all, 2 s lock timeout, 500 ms per
	// memcached round trip, 2 s breaker open timeout.
	AppArgs []string
	// LogDir receives each app server's log as app-NAME.log (appended
	// across Envs). Required.
	LogDir string
	// Memcached is the memcached binary. Default: found in $PATH.
	Memcached string
}

// Env is a running test environment: memcached nodes, a toxiproxy proxy in
// front of each, and app servers whose -nodes are the proxies. Close stops
// everything.
type Env struct {
	Nodes   *mcproc.Cluster
	Proxies *Proxies
	Apps    []*App
}

// App is one running app server and its log.
type App struct {
	*appproc.Proc
	Log *LogSink
}

// StartEnv starts an Env. ctx bounds the start only. On failure what was
// started is stopped.
func StartEnv(ctx context.Context, cfg EnvConfig) (*Env, error) {
	if cfg.Binary == "" || cfg.LogDir == "" {
		return nil, errors.New("chaos: EnvConfig.Binary and EnvConfig.LogDir are required")
	}
	if cfg.Nodes == 0 {
		cfg.Nodes = DefaultNodes
	}
	if cfg.Apps == 0 {
		cfg.Apps = DefaultApps
	}
	ctx, cancel := context.WithTimeout(ctx, envStartTimeout)
	defer cancel()
	mc, err := mcproc.StartCluster(ctx, cfg.Nodes, mcproc.Options{Binary: cfg.Memcached, Host: ProxyHost})
	if err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	e := &Env{Nodes: mc}
	ids := make([]string, len(mc.Nodes))
	addrs := make([]string, len(mc.Nodes))
	for i, n := range mc.Nodes {
		ids[i], addrs[i] = n.ID, n.Addr()
	}
	if e.Proxies, err = StartProxies(ids, addrs); err != nil {
		return nil, errors.Join(err, e.Close())
	}
	for i := range cfg.Apps {
		name := string(rune('A' + i))
		sink, err := NewLogSink(filepath.Join(cfg.LogDir, "app-"+name+".log"))
		if err != nil {
			return nil, errors.Join(err, e.Close())
		}
		p, err := appproc.Start(ctx, appproc.Options{
			Binary: cfg.Binary, Name: name, Nodes: e.Proxies.Spec(), Stderr: sink, Args: cfg.AppArgs,
		})
		if err != nil {
			return nil, errors.Join(fmt.Errorf("chaos: %w", err), sink.Close(), e.Close())
		}
		e.Apps = append(e.Apps, &App{Proc: p, Log: sink})
		if err := checkLoopback(strings.TrimPrefix(p.URL(), "http://")); err != nil {
			return nil, errors.Join(fmt.Errorf("chaos: app %s listens on %s: %w", name, p.URL(), err), e.Close())
		}
	}
	return e, nil
}

// Node returns the memcached node id.
func (e *Env) Node(id string) *mcproc.Node { return e.Nodes.Node(id) }

// NodeIDs returns the node ids in order.
func (e *Env) NodeIDs() []string {
	ids := make([]string, len(e.Nodes.Nodes))
	for i, n := range e.Nodes.Nodes {
		ids[i] = n.ID
	}
	return ids
}

// Close stops the app servers (SIGTERM, then SIGKILL after appproc's
// grace), the proxies and the memcached nodes (SIGKILL; a paused node is
// killed too), and closes the app logs.
func (e *Env) Close() error {
	var errs []error
	for _, a := range e.Apps {
		errs = append(errs, a.Stop(), a.Log.Close())
	}
	if e.Proxies != nil {
		e.Proxies.Close()
	}
	if e.Nodes != nil {
		errs = append(errs, e.Nodes.Close())
	}
	return errors.Join(errs...)
}

// Workdir is the temporary directory of a faults or soak run: it holds the
// example app's binary (always removed) and, unless the run was given a
// log directory of its own, the app servers' logs (kept when the run
// failed).
type Workdir struct {
	// Dir is the temporary directory; LogDir is where the app servers
	// log (inside Dir unless given).
	Dir, LogDir string
}

// NewWorkdir creates a temporary directory named prefix-* and the log
// directory logDir ("": Dir/logs). Remove it with Close.
func NewWorkdir(prefix, logDir string) (*Workdir, error) {
	dir, err := os.MkdirTemp("", prefix+"-")
	if err != nil {
		return nil, err
	}
	w := &Workdir{Dir: dir, LogDir: logDir}
	if w.LogDir == "" {
		w.LogDir = filepath.Join(dir, "logs")
	}
	if err := os.MkdirAll(w.LogDir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return w, nil
}

// Build builds the example app into the directory and returns its path.
func (w *Workdir) Build(ctx context.Context) (string, error) { return BuildApp(ctx, w.Dir) }

// Close removes the directory; with keepLogs, logs inside it stay (the
// app binary goes).
func (w *Workdir) Close(keepLogs bool) {
	if keepLogs && w.LogDir == filepath.Join(w.Dir, "logs") {
		os.RemoveAll(filepath.Join(w.Dir, "app"))
		return
	}
	os.RemoveAll(w.Dir)
}

// BuildApp builds the example app into dir, bounded by ctx and by 5
// minutes. The current directory must be inside the repository.
func BuildApp(ctx context.Context, dir string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("chaos: %w", err)
	}
	bin, err := appproc.Build(ctx, dir)
	if err != nil {
		return "", fmt.Errorf("chaos: %w", err)
	}
	return bin, nil
}
