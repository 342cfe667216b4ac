//go:build !unix

package appproc

import (
	"os/exec"
	"syscall"
)

// sysProcAttr returns nil: no process-group or parent-death settings here.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// interruptGroup kills cmd's process: there are no process groups here.
func interruptGroup(cmd *exec.Cmd) error { return cmd.Process.Kill() }
