//go:build unix

package appproc_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/examples/internal/appproc"
)

// script writes an executable shell script into a temporary directory.
func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fake-app")
	require.NoError(t, os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755))
	return path
}

func TestStartRequiresBinaryAndNodes(t *testing.T) {
	_, err := appproc.Start(context.Background(), appproc.Options{Nodes: "n1=127.0.0.1:1"})
	require.Error(t, err)
	_, err = appproc.Start(context.Background(), appproc.Options{Binary: "/bin/true"})
	require.Error(t, err)
}

func TestStartFailsWhenTheAppExits(t *testing.T) {
	bin := script(t, "echo 'no memcached here' >&2; exit 2")
	_, err := appproc.Start(context.Background(), appproc.Options{Binary: bin, Nodes: "n1=127.0.0.1:1"})
	require.ErrorContains(t, err, "exited before listening")
}

func TestStartTimesOutAndKills(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	bin := script(t, "echo $$ > "+pidFile+"; exec sleep 60")
	start := time.Now()
	_, err := appproc.Start(context.Background(), appproc.Options{
		Binary: bin, Nodes: "n1=127.0.0.1:1", StartTimeout: 300 * time.Millisecond,
	})
	require.ErrorContains(t, err, "did not listen")
	require.Less(t, time.Since(start), 10*time.Second)
	raw, err := os.ReadFile(pidFile)
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	require.NoError(t, err)
	require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "the child was killed and reaped")
}

func TestStartStopAndKill(t *testing.T) {
	// A fake app that prints the line the real one prints, then waits.
	bin := script(t, `echo "mcsession example app $4 listening on http://127.0.0.1:9"; exec sleep 60`)
	for _, stop := range []string{"stop", "kill"} {
		t.Run(stop, func(t *testing.T) {
			p, err := appproc.Start(context.Background(), appproc.Options{Binary: bin, Nodes: "n1=127.0.0.1:1", Name: "x"})
			require.NoError(t, err)
			require.Equal(t, "http://127.0.0.1:9", p.URL())
			require.Equal(t, "x", p.Name())
			require.Positive(t, p.Pid())
			require.True(t, p.Running())
			if stop == "stop" {
				require.NoError(t, p.Stop())
				require.NoError(t, p.Stop(), "a second Stop is fine")
			} else {
				require.NoError(t, p.Kill())
			}
			require.False(t, p.Running())
			require.NoError(t, p.Kill(), "killing an exited process is fine")
		})
	}
}

// ModuleDir finds the examples module from inside it (as under go test)
// and from the repository root (as under make demo), and fails clearly
// outside the repository.
func TestModuleDir(t *testing.T) {
	want, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	got, err := appproc.ModuleDir()
	require.NoError(t, err)
	require.Equal(t, want, got)

	t.Chdir(filepath.Join(want, ".."))
	got, err = appproc.ModuleDir()
	require.NoError(t, err)
	require.Equal(t, want, got)

	t.Chdir(t.TempDir())
	_, err = appproc.ModuleDir()
	require.ErrorIs(t, err, appproc.ErrNoModule)
}
