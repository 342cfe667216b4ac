package mcproc

import "syscall"

// sysProcAttr puts the child in its own process group, so that a Ctrl-C to
// the parent's terminal does not reach it, and asks Linux to SIGKILL it when
// the parent dies. Pdeathsig fires when the OS thread that started the child
// exits; the Go runtime keeps its threads alive unless a goroutine exits
// while locked to one, which mcproc never does.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
