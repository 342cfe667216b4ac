//go:build unix

package appproc

import (
	"os/exec"
	"syscall"
)

// interruptGroup sends SIGINT to the process group cmd leads (it was
// started with Setpgid), as a Ctrl-C would: the go command and the
// compilers it runs all stop.
func interruptGroup(cmd *exec.Cmd) error {
	return syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
}
