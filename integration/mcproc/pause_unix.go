//go:build unix

package mcproc

import (
	"fmt"
	"syscall"
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
	return nil
}
