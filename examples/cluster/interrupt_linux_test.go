package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/internal/syncbuf"

	"github.com/mcsession/mcsession/examples/cluster/internal/demo"
	"github.com/mcsession/mcsession/integration/mcproc"
)

// These tests run the demo program as `make demo` does, in a process group
// of its own as a terminal's foreground job, and send SIGINT to the whole
// group as Ctrl-C does.

const (
	// buildTimeout bounds the build of the demo program.
	buildTimeout = 3 * time.Minute
	// startTimeout bounds the wait for the demo's URL line (the demo
	// builds examples/app first).
	startTimeout = 3 * time.Minute
	// exitTimeout bounds the wait for the demo to exit after SIGINT: the
	// app servers' and nodes' grace periods and the server's shutdown,
	// with room to spare.
	exitTimeout = 45 * time.Second
)

var urlLine = regexp.MustCompile(`mcsession demo: open (http://\S+)`)

// demoProc is the demo program running in its own process group.
type demoProc struct {
	cmd    *exec.Cmd
	marker string // in the environment of the demo and of all its children
	stdout syncbuf.Buffer
	stderr syncbuf.Buffer
	done   chan struct{} // closed once cmd.Wait returned
	err    error         // cmd.Wait's result, read after done
}

// buildDemo builds this program (go build) and returns the binary's path.
func buildDemo(t *testing.T) string {
	t.Helper()
	mcproc.RequireBinary(t)
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is needed to build the demo and the app")
	}
	bin := filepath.Join(t.TempDir(), "cluster")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, goBin, "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// startDemo starts bin on a free loopback port in a new process group.
func startDemo(t *testing.T, bin string) *demoProc {
	t.Helper()
	return startGroup(t, exec.Command(bin, "-listen", "127.0.0.1:0", "-quiet"))
}

// startGroup starts cmd in a new process group, with a marker in its
// environment.
func startGroup(t *testing.T, cmd *exec.Cmd) *demoProc {
	t.Helper()
	p := &demoProc{
		cmd:    cmd,
		marker: fmt.Sprintf("MCSESSION_DEMO_TEST=%d-%d", os.Getpid(), time.Now().UnixNano()),
		done:   make(chan struct{}),
	}
	if p.cmd.Env == nil {
		p.cmd.Env = os.Environ()
	}
	p.cmd.Env = append(p.cmd.Env, p.marker)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, p.cmd.Start())
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
			}
		}
		for _, pid := range p.leftovers(t) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return p
}

// waitOutput waits until stdout or stderr matches re and returns the
// match's submatches; it fails if the demo exits or timeout passes first.
func (p *demoProc) waitOutput(t *testing.T, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, out := range []string{p.stdout.String(), p.stderr.String()} {
			if m := re.FindStringSubmatch(out); m != nil {
				return m
			}
		}
		select {
		case <-p.done:
			t.Fatalf("the demo exited (%v) before printing %q\nstdout:\n%s\nstderr:\n%s", p.err, re, p.stdout.String(), p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo did not print %q within %v\nstdout:\n%s\nstderr:\n%s", re, timeout, p.stdout.String(), p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// interrupt sends SIGINT to the demo's process group, as Ctrl-C in its
// terminal does.
func (p *demoProc) interrupt(t *testing.T) {
	t.Helper()
	require.NoError(t, syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT))
}

// requireCleanExit waits for the demo to exit and requires status 0 and no
// process left behind.
func (p *demoProc) requireCleanExit(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(exitTimeout):
		t.Fatalf("the demo did not exit within %v of SIGINT\nstdout:\n%s\nstderr:\n%s", exitTimeout, p.stdout.String(), p.stderr.String())
	}
	require.NoError(t, p.err, "exit status 0 after SIGINT\nstdout:\n%s\nstderr:\n%s", p.stdout.String(), p.stderr.String())
	require.Equal(t, 0, p.cmd.ProcessState.ExitCode())
	require.Empty(t, p.leftovers(t), "no process the demo started is left (pids with %s in their environment)", p.marker)
}

// leftovers returns the live processes, other than zombies, that have the
// demo's marker in their environment: the demo, its children (memcached,
// the apps, go build) and theirs.
func (p *demoProc) leftovers(t *testing.T) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue // gone, or not ours to read
		}
		for _, kv := range bytes.Split(env, []byte{0}) { // a zombie's is empty
			if string(kv) == p.marker {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// refused requires that nothing accepts connections at addr.
func refused(t *testing.T, what, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	require.ErrorIs(t, err, syscall.ECONNREFUSED, "%s at %s still accepts connections", what, addr)
}

// Ctrl-C while the demo runs: it stops the proxy, the apps and the nodes,
// says so, and exits with status 0, leaving no process behind.
func TestInterruptStopsEverythingAndExitsZero(t *testing.T) {
	p := startDemo(t, buildDemo(t))
	base := p.waitOutput(t, urlLine, startTimeout)[1]

	// What the demo started, from its own state page.
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get(base + "demo/state")
	require.NoError(t, err)
	var st demo.State
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
	resp.Body.Close()
	hc.CloseIdleConnections()
	require.Len(t, st.Nodes, demo.DefaultNodes)
	require.Len(t, st.Apps, demo.DefaultApps)
	running := p.leftovers(t)
	require.Contains(t, running, p.cmd.Process.Pid, "the /proc scan sees the demo")
	for _, a := range st.Apps {
		require.Contains(t, running, a.Pid, "the /proc scan sees app %s", a.Name)
	}
	require.GreaterOrEqual(t, len(running), 1+len(st.Apps)+len(st.Nodes), "the demo, the apps and the nodes")

	p.interrupt(t)
	p.requireCleanExit(t)

	out, errOut := p.stdout.String(), p.stderr.String()
	require.Contains(t, out, "received interrupt: stopping the page and proxy, 2 app servers and 3 memcached nodes")
	require.Contains(t, out, "stopped everything the demo started")
	require.Contains(t, errOut, `msg="stopped the page and the proxy"`)
	for _, a := range st.Apps {
		require.Contains(t, errOut, fmt.Sprintf(`msg="stopped app server" who=demo name=%s pid=%d`, a.Name, a.Pid))
		u, err := url.Parse(a.URL)
		require.NoError(t, err)
		refused(t, "app "+a.Name, u.Host)
	}
	for _, n := range st.Nodes {
		require.Contains(t, errOut, fmt.Sprintf(`msg="stopped memcached node" who=demo node=%s addr=%s`, n.ID, n.Addr))
		refused(t, "memcached "+n.ID, n.Addr)
	}
	u, err := url.Parse(base)
	require.NoError(t, err)
	refused(t, "the demo's proxy", u.Host)
}

// The sticky variant: after an app server was killed and restarted from
// the page, Ctrl-C stops the new process too, and nothing is left behind.
func TestInterruptStickyAfterAppRestart(t *testing.T) {
	p := startGroup(t, exec.Command(buildDemo(t), "-listen", "127.0.0.1:0", "-quiet", "-sticky"))
	base := p.waitOutput(t, urlLine, startTimeout)[1]
	require.Contains(t, p.stdout.String(), "sticky variant: the proxy pins each browser to one app server (cookie demo_route)")

	hc := &http.Client{Timeout: 30 * time.Second}
	post := func(path string) demo.AppState {
		t.Helper()
		resp, err := hc.Post(base+path, "", nil)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var as demo.AppState
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&as))
		return as
	}
	killed := post("demo/apps/app1/kill")
	require.Equal(t, demo.AppKilled, killed.Status)
	restarted := post("demo/apps/app1/start")
	require.Equal(t, demo.AppRunning, restarted.Status)
	require.NotEqual(t, killed.Pid, restarted.Pid)
	require.Contains(t, p.leftovers(t), restarted.Pid, "the restarted app carries the marker")
	stopped := post("demo/apps/app2/stop")
	require.Equal(t, demo.AppStopped, stopped.Status)
	hc.CloseIdleConnections()

	p.interrupt(t)
	p.requireCleanExit(t)
	errOut := p.stderr.String()
	require.Contains(t, errOut, fmt.Sprintf(`msg="stopped app server" who=demo name=app1 pid=%d`, restarted.Pid))
	require.Contains(t, errOut, fmt.Sprintf(`msg="app server already stopped" who=demo name=app2 pid=%d`, stopped.Pid))
	u, err := url.Parse(restarted.URL)
	require.NoError(t, err)
	refused(t, "app1", u.Host)
}

// Ctrl-C while the demo is still starting (building the app, starting the
// nodes or the apps) also ends it with status 0 and nothing left behind.
func TestInterruptWhileStartingExitsZero(t *testing.T) {
	// An empty build cache makes the demo's build of the app take far
	// longer than the signal takes to arrive, so the interrupt always
	// lands while it is starting.
	cmd := exec.Command(buildDemo(t), "-listen", "127.0.0.1:0", "-quiet")
	cmd.Env = append(os.Environ(), "GOCACHE="+t.TempDir())
	p := startGroup(t, cmd)
	p.waitOutput(t, regexp.MustCompile(`msg="building the app"`), startTimeout)
	p.interrupt(t)
	p.requireCleanExit(t)
	out := p.stdout.String()
	require.Contains(t, out, "received interrupt while starting: stopped everything the demo had started")
}

// A second Ctrl-C while the demo stops is reported and does not cut the
// stop short.
func TestSecondInterruptIsIgnored(t *testing.T) {
	p := startDemo(t, buildDemo(t))
	p.waitOutput(t, urlLine, startTimeout)
	p.interrupt(t)
	p.waitOutput(t, regexp.MustCompile(`stopping the page and proxy`), exitTimeout)
	select {
	case <-p.done: // already stopped: nothing left to interrupt
	default:
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT)
	}
	p.requireCleanExit(t)
	require.Contains(t, p.stdout.String(), "stopped everything the demo started")
}

// `make demo` stopped with Ctrl-C: make reports no error for the recipe
// (the demo exits with status 0, and make runs it directly, not through
// "go run", which exits with status 1 after a SIGINT). GNU make then
// re-raises the SIGINT it got on itself, as it does for any Ctrl-C, so its
// own status is either 0 or "killed by SIGINT", never a failure.
func TestMakeDemoInterrupt(t *testing.T) {
	mcproc.RequireBinary(t)
	makeBin, err := exec.LookPath("make")
	if err != nil {
		t.Skip("make is not installed")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go command is needed to build the demo and the app")
	}
	cmd := exec.Command(makeBin, "--no-print-directory", "demo",
		"BIN="+t.TempDir(), "DEMO_FLAGS=-listen 127.0.0.1:0 -quiet")
	cmd.Dir = filepath.Join("..", "..")     // the module root, with the Makefile
	cmd.Env = withoutMakeVars(os.Environ()) // not a sub-make of `make test`
	p := startGroup(t, cmd)
	p.waitOutput(t, urlLine, buildTimeout+startTimeout)
	p.interrupt(t)
	select {
	case <-p.done:
	case <-time.After(exitTimeout):
		t.Fatalf("make did not exit within %v of SIGINT\nstdout:\n%s\nstderr:\n%s", exitTimeout, p.stdout.String(), p.stderr.String())
	}
	out := p.stdout.String() + p.stderr.String()
	require.NotContains(t, out, "make: ***", "make reports no error for the recipe")
	if p.err != nil {
		ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
		require.True(t, ok && ws.Signaled() && ws.Signal() == syscall.SIGINT, "make: %v\n%s", p.err, out)
	}
	require.Contains(t, out, "==> demo: ")
	require.Contains(t, out, "stopped everything the demo started")
	require.Empty(t, p.leftovers(t), "no process the demo started is left")
}
