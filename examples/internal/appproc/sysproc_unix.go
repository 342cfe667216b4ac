//go:build unix && !linux

package appproc

import "syscall"

// sysProcAttr puts the child in its own process group, so that a Ctrl-C to
// the parent's terminal does not reach it. Only Linux can also kill it when
// the parent dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
