//go:build unix

package mcproc

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"
)

// Pause stops the node's process with SIGSTOP: it keeps its data and its
// port but answers nothing, like a hung or partitioned node, so clients see
// timeouts rather than refused connections. Resume continues it. Kill and
// Restart work on a paused node.
func (p *Process) Pause() error { return p.signal(syscall.SIGSTOP, "pause") }

// Resume continues a paused node (SIGCONT) with the data it had.
func (p *Process) Resume() error { return p.signal(syscall.SIGCONT, "resume") }

func (p *Process) signal(sig syscall.Signal, what string) error {
	p.ctl.Lock()
	defer p.ctl.Unlock()
	c := p.current()
	if c == nil || c.exited() {
		return fmt.Errorf("mcproc: %s %s: not running", what, p.addr)
	}
	if err := c.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("mcproc: %s %s: %w", what, p.addr, err)
	}
	// Signals arrive asynchronously: where /proc tells, wait (bounded)
	// until the process is stopped or running again.
	stat := fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid)
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		b, err := os.ReadFile(stat)
		if err != nil {
			return nil // no /proc: nothing to wait on
		}
		// The state follows the parenthesised command name.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 0 && (f[0] == "T") == (sig == syscall.SIGSTOP) {
			return nil
		}
	}
	return fmt.Errorf("mcproc: %s %s: the process did not change state within 1s", what, p.addr)
}
