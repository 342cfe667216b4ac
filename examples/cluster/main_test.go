package main

import (
	"context"
	"flag"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

// Argument errors are reported before anything starts.
func TestRunRejectsBadArguments(t *testing.T) {
	require.ErrorIs(t, run(context.Background(), []string{"-h"}, io.Discard, io.Discard), flag.ErrHelp)
	require.ErrorContains(t, run(context.Background(), []string{"extra"}, io.Discard, io.Discard), "unexpected arguments")
	require.ErrorContains(t, run(context.Background(), []string{"-listen", "0.0.0.0:8000"}, io.Discard, io.Discard), "loopback")
	require.ErrorContains(t, run(context.Background(), []string{"-nodes", "1", "-listen", "127.0.0.1:0"}, io.Discard, io.Discard), "at least 2 nodes")
}
