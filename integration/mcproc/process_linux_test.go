package mcproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the ")" that ends the command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// waitGone waits up to 5s for pid to be gone.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("pid %d still alive", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStartTimeoutKillsChild(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	script := filepath.Join(dir, "fake-memcached")
	// A "memcached" that never listens.
	body := "#!/bin/sh\necho $$ > " + pidFile + "\nexec sleep 30\n"
	require.NoError(t, os.WriteFile(script, []byte(body), 0o755))

	start := time.Now()
	_, err := Start(testCtx(t), Options{Binary: script, StartTimeout: 300 * time.Millisecond})
	require.ErrorContains(t, err, "did not answer within 300ms")
	require.Less(t, time.Since(start), 5*time.Second)

	b, err := os.ReadFile(pidFile)
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	require.False(t, alive(pid), "the child is killed and reaped")
}

func TestChildInOwnProcessGroup(t *testing.T) {
	p := NewProcess(t)
	pid := p.current().cmd.Process.Pid
	pgid, err := syscall.Getpgid(pid)
	require.NoError(t, err)
	require.Equal(t, pid, pgid)
	require.NotEqual(t, syscall.Getpgrp(), pgid)
}

// TestChildDiesWithParent runs a helper copy of the test binary that starts
// memcached, kills the helper with SIGKILL, and checks that memcached dies
// too (Pdeathsig).
func TestChildDiesWithParent(t *testing.T) {
	if os.Getenv("MCPROC_HELPER") == "1" {
		runHelper()
		return
	}
	RequireBinary(t)
	ctx := testCtx(t)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestChildDiesWithParent$", "-test.count=1")
	cmd.Env = append(os.Environ(), "MCPROC_HELPER=1")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})

	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if pid, ok := strings.CutPrefix(sc.Text(), "memcached-pid="); ok {
				lines <- pid
				return
			}
		}
		close(lines)
	}()
	var pid int
	select {
	case s, ok := <-lines:
		require.True(t, ok, "helper exited without starting memcached")
		pid, err = strconv.Atoi(s)
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("helper did not start memcached within 15s")
	}
	require.True(t, alive(pid))

	require.NoError(t, cmd.Process.Kill())
	err = cmd.Wait()
	var exitErr *exec.ExitError
	require.True(t, errors.As(err, &exitErr), "helper killed: %v", err)
	waitGone(t, pid)
}

func runHelper() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := Start(ctx, Options{})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Printf("memcached-pid=%d\n", p.current().cmd.Process.Pid)
	// Wait to be killed; give up (and clean up) after 30s.
	time.Sleep(30 * time.Second)
	_ = p.Kill()
	os.Exit(0)
}
