//go:build unix

package appproc_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/examples/internal/appproc"
)

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string // run after the trap, if any, is set
		kill bool
		want int
	}{
		{"clean exit on SIGTERM", "trap 'exit 0' TERM", false, 0},
		{"failed shutdown", "trap 'exit 2' TERM", false, 2},
		{"killed", "", true, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The trap is set before the line that lets Start return.
			bin := script(t, tc.body+"\n"+`echo "mcsession example app x listening on http://127.0.0.1:9"; while :; do sleep 0.05; done`)
			p, err := appproc.Start(context.Background(), appproc.Options{Binary: bin, Nodes: "n1=127.0.0.1:1"})
			require.NoError(t, err)
			_, exited := p.ExitCode()
			require.False(t, exited, "still running")
			if tc.kill {
				require.NoError(t, p.Kill())
			} else {
				require.NoError(t, p.Stop())
			}
			code, exited := p.ExitCode()
			require.True(t, exited)
			require.Equal(t, tc.want, code)
		})
	}
}
