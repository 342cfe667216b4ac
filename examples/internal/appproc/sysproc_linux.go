package appproc

import "syscall"

// sysProcAttr puts the child in its own process group, so that a Ctrl-C to
// the parent's terminal does not reach it (the parent stops it in order),
// and asks Linux to SIGKILL it when the parent dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
