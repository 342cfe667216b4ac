// Package appproc builds the example app (examples/app) and runs copies of
// it as child processes, for the end-to-end tests and the cluster demo.
//
// A child is started with "-listen 127.0.0.1:0" by default and Start waits
// for the line the app prints once it listens, so ports are never guessed.
// Children, and the "go build" of Build, run in their own process group (a
// Ctrl-C aimed at the parent's terminal does not reach them; the parent
// stops them in order) and, on Linux, are killed when the parent dies.
package appproc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"time"
)

// ImportPath is the package path of the example app's main package.
const ImportPath = "github.com/mcsession/mcsession/examples/app"

const (
	// DefaultStartTimeout is how long Start waits for the app to listen.
	DefaultStartTimeout = 30 * time.Second
	// StopGrace is how long Stop waits after SIGTERM before SIGKILL.
	StopGrace = 12 * time.Second
	// buildStopGrace is how long Build waits for "go build" to exit after
	// its SIGINT before SIGKILL.
	buildStopGrace = 10 * time.Second
	// reapTimeout bounds the wait for a killed child to be reaped.
	reapTimeout = 10 * time.Second
)

// listeningLine matches the line the app prints once it listens.
var listeningLine = regexp.MustCompile(`listening on (http://\S+)`)

// ModulePath is the path of the Go module that holds the examples (its own
// go.mod in the repository's examples directory, so that the example app's
// metrics dependencies stay out of the library's go.mod).
const ModulePath = "github.com/mcsession/mcsession/examples"

// ErrNoModule is returned by Build when neither the current directory nor
// any directory above it holds the examples module.
var ErrNoModule = errors.New("appproc: the examples module (examples/go.mod) is not in or above the current directory")

// ModuleDir returns the directory of the examples module: the first
// directory, from the current one upwards, whose go.mod declares
// ModulePath, or that has an examples/go.mod declaring it (the repository
// root). It returns ErrNoModule when there is none.
func ModuleDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("appproc: %w", err)
	}
	for {
		for _, cand := range []string{dir, filepath.Join(dir, "examples")} {
			if declaresModule(filepath.Join(cand, "go.mod")) {
				return cand, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", ErrNoModule
		}
		dir = parent
	}
}

// declaresModule reports whether the go.mod file at path declares
// ModulePath.
func declaresModule(path string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if f := bytes.Fields(line); len(f) == 2 && string(f[0]) == "module" && string(f[1]) == ModulePath {
			return true
		}
	}
	return false
}

// Build compiles the example app into dir with "go build" and returns the
// path of the binary. The current directory must be the repository or lie
// inside it (as it does under "go test" and under "make demo"): the build
// runs in the examples module's directory (see ModuleDir). ctx bounds the
// build.
func Build(ctx context.Context, dir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("appproc: build: the go command is needed to build %s: %w", ImportPath, err)
	}
	modDir, err := ModuleDir()
	if err != nil {
		return "", fmt.Errorf("appproc: build %s: %w", ImportPath, err)
	}
	out, err := filepath.Abs(filepath.Join(dir, "app"))
	if err != nil {
		return "", fmt.Errorf("appproc: build: %w", err)
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, ImportPath)
	cmd.Dir = modDir
	// Like the apps, the build runs in its own process group: a Ctrl-C at
	// the parent's terminal does not reach it, so it only stops when ctx
	// ends (a build that fails while ctx is live really failed). It then
	// gets a SIGINT, it and its compilers, and SIGKILL after
	// buildStopGrace.
	cmd.SysProcAttr = sysProcAttr()
	cmd.Cancel = func() error { return interruptGroup(cmd) }
	cmd.WaitDelay = buildStopGrace
	var msg bytes.Buffer
	cmd.Stdout, cmd.Stderr = &msg, &msg
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("appproc: go build %s (in %s): %w\n%s", ImportPath, modDir, err, msg.Bytes())
	}
	return out, nil
}

// Options configures one app process. Binary and Nodes are required.
type Options struct {
	// Binary is the path of the built app (see Build).
	Binary string
	// Name is the instance name (-name). Default: the app's default, its
	// listen address.
	Name string
	// Nodes is the memcached node list (-nodes), e.g. mcproc.Cluster.Spec().
	Nodes string
	// Listen is the listen address (-listen). Default "127.0.0.1:0": a
	// free port, read back from the app's output.
	Listen string
	// Args are further flags, e.g. "-locking", "none". Default none.
	Args []string
	// Stderr receives the app's log. Default: discarded.
	Stderr io.Writer
	// StartTimeout bounds the wait for the app to listen. Default
	// DefaultStartTimeout (30 s).
	StartTimeout time.Duration
}

// Proc is one running (or exited) app process. It is safe for concurrent
// use.
type Proc struct {
	name string
	url  string
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd.Wait returned
	err  error         // cmd.Wait's result; read after done is closed

	stopOnce sync.Once
	stopErr  error
}

// Start starts the app and waits until it listens. ctx bounds only the
// start: cancelling it later does not stop the process (use Stop or Kill).
func Start(ctx context.Context, opts Options) (*Proc, error) {
	if opts.Binary == "" || opts.Nodes == "" {
		return nil, errors.New("appproc: start: Options.Binary and Options.Nodes are required")
	}
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	if opts.Stderr == nil {
		opts.Stderr = io.Discard
	}
	args := []string{"-listen", opts.Listen, "-nodes", opts.Nodes}
	if opts.Name != "" {
		args = append(args, "-name", opts.Name)
	}
	args = append(args, opts.Args...)
	cmd := exec.Command(opts.Binary, args...)
	cmd.Stderr = opts.Stderr
	cmd.SysProcAttr = sysProcAttr()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("appproc: start: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("appproc: start %s: %w", opts.Binary, err)
	}
	p := &Proc{name: opts.Name, cmd: cmd, done: make(chan struct{})}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := listeningLine.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case urls <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout) // after a too-long line
		p.err = cmd.Wait()
		close(p.done)
	}()

	timer := time.NewTimer(opts.StartTimeout)
	defer timer.Stop()
	select {
	case p.url = <-urls:
		if p.name == "" {
			p.name = p.url
		}
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("appproc: app %q exited before listening: %v", opts.Name, p.err)
	case <-timer.C:
		err = fmt.Errorf("appproc: app %q did not listen within %v", opts.Name, opts.StartTimeout)
	case <-ctx.Done():
		err = fmt.Errorf("appproc: start app %q: %w", opts.Name, ctx.Err())
	}
	return nil, errors.Join(err, p.Kill())
}

// Name returns the instance name (the URL when none was given).
func (p *Proc) Name() string { return p.name }

// URL returns the app's base URL, e.g. "http://127.0.0.1:41234".
func (p *Proc) URL() string { return p.url }

// Pid returns the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Running reports whether the process has not exited yet.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop shuts the app down gracefully: SIGTERM, then SIGKILL if it has not
// exited after StopGrace, and waits until it is gone. Stopping an exited
// process is not an error; a second Stop returns the first one's result.
func (p *Proc) Stop() error {
	p.stopOnce.Do(func() {
		if !p.Running() {
			return
		}
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			p.stopErr = errors.Join(fmt.Errorf("appproc: stop %s: %w", p.name, err), p.Kill())
			return
		}
		timer := time.NewTimer(StopGrace)
		defer timer.Stop()
		select {
		case <-p.done:
		case <-timer.C:
			p.stopErr = errors.Join(fmt.Errorf("appproc: %s ignored SIGTERM for %v; killed", p.name, StopGrace), p.Kill())
		}
	})
	return p.stopErr
}

// Kill kills the app with SIGKILL, as in a crash, and waits until it is
// gone. Killing an exited process is not an error.
func (p *Proc) Kill() error {
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("appproc: kill %s: %w", p.name, err)
	}
	timer := time.NewTimer(reapTimeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
		return fmt.Errorf("appproc: %s not reaped %v after SIGKILL", p.name, reapTimeout)
	}
}
