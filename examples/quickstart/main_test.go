package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/internal/syncbuf"

	"github.com/mcsession/mcsession/integration/mcproc"
)

// readmeQuickStart returns the first Go code block after the README's
// "## Quick start" heading.
func readmeQuickStart(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	require.NoError(t, err)
	_, after, ok := strings.Cut(string(readme), "\n## Quick start\n")
	require.True(t, ok, "README.md has no \"## Quick start\" section")
	_, after, ok = strings.Cut(after, "```go\n")
	require.True(t, ok, "the quick start has no ```go block")
	block, _, ok := strings.Cut(after, "```\n")
	require.True(t, ok, "the quick start's code block does not end")
	return block
}

// TestReadmeQuickStartIsThisProgram checks that the README's quick start
// is this program (from its package clause on), so that it builds as it
// stands: go vet and go test build this package.
func TestReadmeQuickStartIsThisProgram(t *testing.T) {
	src, err := os.ReadFile("main.go")
	require.NoError(t, err)
	i := bytes.Index(src, []byte("package main\n"))
	require.GreaterOrEqual(t, i, 0)
	require.Equal(t, string(src[i:]), readmeQuickStart(t),
		"README.md's quick start and examples/quickstart/main.go differ: change both")
}

// TestQuickStartRuns builds the quick start, runs it against two real
// memcached nodes, counts two items into one session and stops it with
// SIGINT, as Ctrl-C would: it must exit with status 0.
func TestQuickStartRuns(t *testing.T) {
	mc := mcproc.NewCluster(t, 2)
	bin := filepath.Join(t.TempDir(), "quickstart")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())

	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "MEMCACHED_NODES="+mc.Spec(), "LISTEN="+addr)
	var stderr syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
		}
	})

	// Wait (bounded) until it listens.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			break
		}
		require.True(t, time.Now().Before(deadline), "quickstart did not listen on %s: %s", addr, stderr.String())
		time.Sleep(20 * time.Millisecond)
	}

	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	client := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	for _, want := range []string{"1 items\n", "2 items\n"} {
		resp, err := client.Post("http://"+addr+"/cart", "", nil)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
		require.Equal(t, want, string(body))
	}

	require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
	select {
	case err := <-exited:
		require.NoError(t, err, "exit status after SIGINT; output: %s", stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("quickstart did not exit within 30 s of SIGINT")
	}
}
