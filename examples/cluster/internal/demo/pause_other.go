//go:build !unix

package demo

import (
	"errors"

	"github.com/mcsession/mcsession/integration/mcproc"
)

// errNoPause: SIGSTOP and SIGCONT exist on Unix only.
var errNoPause = errors.New("demo: pausing a node needs SIGSTOP (Unix only)")

// pauseNode would hang node n; it is not supported here.
func pauseNode(n *mcproc.Node) error { return errNoPause }

// resumeNode would continue node n; it is not supported here.
func resumeNode(n *mcproc.Node) error { return errNoPause }
