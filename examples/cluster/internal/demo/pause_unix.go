//go:build unix

package demo

import "github.com/mcsession/mcsession/integration/mcproc"

// pauseNode hangs node n (SIGSTOP).
func pauseNode(n *mcproc.Node) error { return n.Pause() }

// resumeNode continues a paused node n (SIGCONT).
func resumeNode(n *mcproc.Node) error { return n.Resume() }
