package appproc

// ExitCode returns the exit status of the process and true once it has
// exited (-1 when a signal ended it, as os.ProcessState.ExitCode reports),
// and false while it runs. After Stop, a status of 0 tells that the app shut
// down cleanly; the example app exits with 2 when its graceful shutdown
// failed (for example when queued session writes were not written in time).
func (p *Proc) ExitCode() (int, bool) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), true
	default:
		return 0, false
	}
}
