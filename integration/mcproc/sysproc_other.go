//go:build !unix

package mcproc

import "syscall"

// sysProcAttr returns nil: no process-group or parent-death settings here.
func sysProcAttr() *syscall.SysProcAttr { return nil }
