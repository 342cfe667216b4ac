//go:build !unix

package appproc

import "syscall"

// sysProcAttr returns nil: no process-group or parent-death settings here.
func sysProcAttr() *syscall.SysProcAttr { return nil }
