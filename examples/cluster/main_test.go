package main

import (
	"context"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Argument errors are reported before anything starts.
func TestRunRejectsBadArguments(t *testing.T) {
	require.ErrorIs(t, run(context.Background(), []string{"-h"}, io.Discard, io.Discard), flag.ErrHelp)
	require.ErrorContains(t, run(context.Background(), []string{"extra"}, io.Discard, io.Discard), "unexpected arguments")
	require.ErrorContains(t, run(context.Background(), []string{"-listen", "0.0.0.0:8000"}, io.Discard, io.Discard), "loopback")
	require.ErrorContains(t, run(context.Background(), []string{"-nodes", "1", "-listen", "127.0.0.1:0"}, io.Discard, io.Discard), "at least 2 nodes")
	require.ErrorContains(t, run(context.Background(), []string{"-sticky-trust"}, io.Discard, io.Discard), "-sticky-trust needs -sticky")
}

// `make demo ARGS=-sticky` passes ARGS to the demo after DEMO_FLAGS (make
// -n prints the commands without running them).
func TestMakeDemoArgs(t *testing.T) {
	makeBin, err := exec.LookPath("make")
	if err != nil {
		t.Skip("make is not installed")
	}
	cmd := exec.Command(makeBin, "-n", "--no-print-directory", "demo", "BIN=out", "DEMO_FLAGS=-quiet", "ARGS=-sticky -async-backup")
	cmd.Dir = filepath.Join("..", "..") // the module root, with the Makefile
	cmd.Env = withoutMakeVars(os.Environ())
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "\nout/cluster -quiet -sticky -async-backup\n")
	require.Contains(t, string(out), "==> demo: out/cluster -quiet -sticky -async-backup (Ctrl-C stops everything)")
}

// withoutMakeVars returns env without the variables of an enclosing make
// (under `make test`), so that the make a test runs is not a sub-make.
func withoutMakeVars(env []string) []string {
	var out []string
	for _, kv := range env {
		if name, _, _ := strings.Cut(kv, "="); name != "MAKEFLAGS" && name != "MFLAGS" && name != "MAKELEVEL" {
			out = append(out, kv)
		}
	}
	return out
}
