package meta

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/stretchr/testify/require"
)

// testTimeout bounds every test's context: generous, only there so that a
// hang fails instead of blocking the run.
const testTimeout = 30 * time.Second

// testCtx returns a context cancelled when the test ends or after
// testTimeout.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// newPool returns a pool for addr with cfg's other fields, closed when the
// test ends. Timeout defaults to 5 s here (not 500 ms), so that a slow -race
// run cannot turn a conformance test into a timeout.
func newPool(t testing.TB, addr string, cfg Config) *Pool {
	t.Helper()
	cfg.Addr = addr
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	p := NewPool(cfg)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

// startProcess starts a memcached with opts (Binary filled in), killed when
// the test ends.
func startProcess(t testing.TB, opts mcproc.Options) *mcproc.Process {
	t.Helper()
	opts.Binary = mcproc.RequireBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	p, err := mcproc.Start(ctx, opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Kill()) })
	return p
}

// do runs reqs as one batch and requires it to succeed.
func do(t testing.TB, p *Pool, reqs ...Request) []Response {
	t.Helper()
	out, err := p.Do(testCtx(t), reqs...)
	require.NoError(t, err)
	require.Len(t, out, len(reqs))
	return out
}

// do1 runs one request and returns its answer.
func do1(t testing.TB, p *Pool, r Request) Response {
	t.Helper()
	return do(t, p, r)[0]
}

// set stores value under key (ModeSet, never expires) and returns its CAS.
func set(t testing.TB, p *Pool, key, value string, flags uint32) uint64 {
	t.Helper()
	r := do1(t, p, Request{Command: Set, Key: key, Value: []byte(value), Flags: flags, ReturnCAS: true})
	require.Equal(t, StatusOK, r.Status, "set %s", key)
	require.NotZero(t, r.CAS)
	return r.CAS
}

// getAll reads key asking for everything.
func getAll(t testing.TB, p *Pool, key string) Response {
	t.Helper()
	return do1(t, p, Request{Command: Get, Key: key, ReturnValue: true, ReturnCAS: true, ReturnTTL: true, ReturnFlags: true})
}

// stat returns one numeric stat of proc.
func stat(t testing.TB, proc *mcproc.Process, name string) uint64 {
	t.Helper()
	v, err := proc.Stat(testCtx(t), name)
	require.NoError(t, err)
	return v
}

// freeAddr returns a loopback address nothing listens on (a moment ago).
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// rawExchange writes raw bytes on a new connection to addr and returns a
// conn whose reader holds the server's answers, for readAnswers.
func rawExchange(t testing.TB, addr string, raw string) *conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = nc.Close() })
	require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = nc.Write([]byte(raw))
	require.NoError(t, err)
	return &conn{nc: nc, br: bufio.NewReaderSize(nc, maxLine), check: newConnChecker(nc)}
}

// key250 is a valid key of exactly MaxKeyLen bytes.
var key250 = strings.Repeat("k", MaxKeyLen)
