package mcproc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// portAttempts is how many free ports Start tries when Options.Port is 0:
	// the first one and 5 retries.
	portAttempts = 6
	// stopGrace is how long Stop waits after SIGTERM before SIGKILL.
	stopGrace = 3 * time.Second
	// reapTimeout bounds the wait for a SIGKILLed child to be reaped.
	reapTimeout = 10 * time.Second
	// restartBusyFor is how long Restart retries while its port is busy.
	restartBusyFor = 3 * time.Second
	// pollInterval is the pause between readiness probes and bind retries.
	pollInterval = 10 * time.Millisecond
	// probeTimeout bounds one readiness probe (dial, version, stats).
	probeTimeout = 500 * time.Millisecond
)

// errPortBusy marks a start that failed because memcached could not bind
// its port; Start and Restart retry those.
var errPortBusy = errors.New("port busy")

// Process is one running (or stopped) memcached process on a fixed address.
// Its address stays the same across Restart. A Process is safe for
// concurrent use.
type Process struct {
	opts Options // resolved; Port is the port actually used
	addr string

	ctl sync.Mutex // serialises Stop, Kill and Restart

	mu  sync.Mutex // guards cur
	cur *child     // the latest child; nil only during Start
}

// child is one memcached OS process. A Process has a new child after each
// Restart.
type child struct {
	cmd    *exec.Cmd
	done   chan struct{} // closed once cmd.Wait has returned
	err    error         // cmd.Wait's result; read only after done is closed
	stderr *tailBuffer
}

// Start starts memcached with
//
//	memcached -l HOST -p PORT -U 0 -m MB -t N [-u root] [-I SIZE] [-Z -o ssl_...] EXTRA...
//
// (-u root only when running as root, which memcached otherwise refuses;
// -Z and its -o options with Options.TLS) and waits until a TCP
// connection to the node (a TLS one with Options.TLS) answers "version" with
// "VERSION", and its "stats" report the child's pid, so that a foreign
// memcached that already owns the port is never mistaken for the new node.
// If that does not happen within Options.StartTimeout (default 5s), or ctx
// is done first, the child is killed and an error is returned. ctx bounds
// only the start: cancelling it later does not stop the node. When memcached
// is missing, the error wraps ErrNotInstalled.
func Start(ctx context.Context, opts Options) (*Process, error) {
	o, err := opts.resolve()
	if err != nil {
		return nil, err
	}
	if o.Port != 0 {
		addr := joinHostPort(o.Host, o.Port)
		c, err := launch(ctx, o, addr)
		if err != nil {
			return nil, fmt.Errorf("mcproc: start %s: %w", addr, err)
		}
		return &Process{opts: o, addr: addr, cur: c}, nil
	}
	var lastErr error
	for range portAttempts {
		port, err := freePort(o.Host)
		if err != nil {
			return nil, fmt.Errorf("mcproc: start: %w", err)
		}
		addr := joinHostPort(o.Host, port)
		c, err := launch(ctx, o, addr)
		if err == nil {
			o.Port = port
			return &Process{opts: o, addr: addr, cur: c}, nil
		}
		lastErr = fmt.Errorf("mcproc: start %s: %w", addr, err)
		if !errors.Is(err, errPortBusy) {
			return nil, lastErr
		}
	}
	return nil, lastErr
}

// Addr returns the node's address, "127.0.0.1:PORT" by default. It is the
// same across restarts.
func (p *Process) Addr() string { return p.addr }

// Running reports whether the node's current memcached process is alive.
func (p *Process) Running() bool {
	c := p.current()
	return c != nil && !c.exited()
}

// Stop stops the node gracefully: SIGTERM, then SIGKILL if it has not exited
// after 3s, and waits until it is gone. Stopping a stopped node is not an
// error.
func (p *Process) Stop() error {
	p.ctl.Lock()
	defer p.ctl.Unlock()
	c := p.current()
	if c == nil || c.exited() {
		return nil
	}
	if err := c.stop(); err != nil {
		return fmt.Errorf("mcproc: stop %s: %w", p.addr, err)
	}
	return nil
}

// Kill kills the node with SIGKILL, as in a crash, and waits until it is
// gone. Killing a stopped node is not an error.
func (p *Process) Kill() error {
	p.ctl.Lock()
	defer p.ctl.Unlock()
	if err := p.killLocked(); err != nil {
		return fmt.Errorf("mcproc: kill %s: %w", p.addr, err)
	}
	return nil
}

func (p *Process) killLocked() error {
	c := p.current()
	if c == nil || c.exited() {
		return nil
	}
	return c.kill()
}

// Restart kills the node if it is running and starts a new, empty memcached
// on the same address, with the same options. If the port is briefly busy
// it retries for up to about 3s. It waits for the new node like Start does;
// if that fails, the node is left stopped and a later Restart may try again.
func (p *Process) Restart(ctx context.Context) error {
	p.ctl.Lock()
	defer p.ctl.Unlock()
	if err := p.killLocked(); err != nil {
		return fmt.Errorf("mcproc: restart %s: %w", p.addr, err)
	}
	deadline := time.Now().Add(restartBusyFor)
	for {
		c, err := launch(ctx, p.opts, p.addr)
		if err == nil {
			p.mu.Lock()
			p.cur = c
			p.mu.Unlock()
			return nil
		}
		if !errors.Is(err, errPortBusy) || time.Now().After(deadline) {
			return fmt.Errorf("mcproc: restart %s: %w", p.addr, err)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("mcproc: restart %s: %w", p.addr, err)
		}
	}
}

func (p *Process) current() *child {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur
}

// launch starts one memcached child listening on addr and waits until it
// answers. On failure the child is killed and reaped.
func launch(ctx context.Context, o Options, addr string) (*child, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	args := []string{"-l", o.Host, "-p", port, "-U", "0",
		"-m", strconv.Itoa(o.MemoryMB), "-t", strconv.Itoa(o.Threads)}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root")
	}
	if o.MaxItemSize != "" {
		args = append(args, "-I", o.MaxItemSize)
	}
	if o.TLS != nil {
		args = append(args, o.TLS.args()...)
	}
	args = append(args, o.ExtraArgs...)

	// exec.Command, not CommandContext: ctx bounds the start, not the
	// node's life.
	cmd := exec.Command(o.Binary, args...)
	cmd.SysProcAttr = sysProcAttr()
	cmd.Stdout = o.Stdout
	tail := &tailBuffer{}
	if o.Stderr != nil {
		cmd.Stderr = io.MultiWriter(o.Stderr, tail)
	} else {
		cmd.Stderr = tail
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, done: make(chan struct{}), stderr: tail}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	if err := c.waitReady(ctx, addr, o.clientTLS, o.StartTimeout); err != nil {
		if kerr := c.kill(); kerr != nil {
			return nil, errors.Join(err, kerr)
		}
		return nil, err
	}
	return c, nil
}

// waitReady polls addr until this child answers, it exits, ctx is done or
// timeout passes. A probe in flight is abandoned as soon as the child exits.
// With tlsCfg the probes speak TLS.
func (c *child) waitReady(ctx context.Context, addr string, tlsCfg *tls.Config, timeout time.Duration) error {
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Cancel probes when the child exits.
	pctx, pcancel := context.WithCancel(tctx)
	defer pcancel()
	go func() {
		select {
		case <-c.done:
			pcancel()
		case <-pctx.Done():
		}
	}()
	pid := strconv.Itoa(c.cmd.Process.Pid)
	for {
		probeCtx, probeCancel := context.WithTimeout(pctx, probeTimeout)
		stats, err := probe(probeCtx, addr, tlsCfg)
		probeCancel()
		if err == nil && stats["pid"] == pid {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("%s is answered by pid %s, not by memcached pid %s", addr, stats["pid"], pid)
		}
		if c.exited() {
			return c.exitError()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if tctx.Err() != nil {
			return fmt.Errorf("memcached did not answer within %v: %w", timeout, err)
		}
		select {
		case <-pctx.Done(): // checked at the top of the next round
		case <-time.After(pollInterval):
		}
	}
}

// exitError describes a child that exited before answering. It wraps
// errPortBusy when memcached could not bind its port.
func (c *child) exitError() error {
	msg := strings.Join(strings.Fields(strings.ReplaceAll(c.stderr.String(), "\n", " ; ")), " ")
	msg = strings.Trim(msg, " ;")
	err := fmt.Errorf("memcached exited before answering (%v)", c.err)
	if msg != "" {
		err = fmt.Errorf("memcached exited before answering (%v): %s", c.err, msg)
	}
	if strings.Contains(msg, "failed to listen") || strings.Contains(msg, "Address already in use") {
		return fmt.Errorf("%w: %w", errPortBusy, err)
	}
	return err
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to stopGrace, then kills.
func (c *child) stop() error {
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return c.kill()
	}
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-c.done:
		return nil
	case <-t.C:
		return c.kill()
	}
}

// kill sends SIGKILL and waits until the child has been reaped.
func (c *child) kill() error {
	if err := c.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	t := time.NewTimer(reapTimeout)
	defer t.Stop()
	select {
	case <-c.done:
		return nil
	case <-t.C:
		return fmt.Errorf("pid %d did not exit within %v of SIGKILL", c.cmd.Process.Pid, reapTimeout)
	}
}

// freePort returns a port that was free on host a moment ago.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	return port, nil
}

func joinHostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// tailBuffer is an io.Writer that keeps the last tailMax bytes written.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

const tailMax = 4 << 10

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > tailMax {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-tailMax:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
