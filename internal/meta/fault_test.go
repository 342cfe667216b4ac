package meta

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/stretchr/testify/require"
)

// Faults of a real node: killed, paused, restarted, absent.

// doAsync runs Do in a goroutine; the channel gets its error.
func doAsync(ctx context.Context, p *Pool, reqs ...Request) <-chan error {
	errc := make(chan error, 1)
	go func() {
		_, err := p.Do(ctx, reqs...)
		errc <- err
	}()
	return errc
}

// wait returns the error from errc, failing the test if none comes within
// limit.
func wait(t testing.TB, errc <-chan error, limit time.Duration) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(limit):
		t.Fatalf("Do did not return within %v", limit)
		return nil
	}
}

// waitBatches waits until p has started n batches.
func waitBatches(t testing.TB, p *Pool, n uint64) {
	t.Helper()
	require.Eventually(t, func() bool { return p.Stats().Batches >= n }, 10*time.Second, time.Millisecond)
}

// requireRefused checks an error of a batch to a node that is gone.
func requireRefused(t testing.TB, err error) {
	t.Helper()
	require.ErrorIs(t, err, ErrNotSent)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	require.NotErrorIs(t, err, ErrUnknownOutcome)
}

// wroteConn signals, on wrote, once the first bytes of a write are in the
// kernel: a test can then break the node knowing the batch was under way.
type wroteConn struct {
	net.Conn
	once  *sync.Once
	wrote chan struct{}
}

// SyscallConn lets connCheck peek at the socket, as on a plain TCP conn.
func (c wroteConn) SyscallConn() (syscall.RawConn, error) {
	return c.Conn.(syscall.Conn).SyscallConn()
}

func (c wroteConn) Write(b []byte) (int, error) {
	first := min(len(b), 4096)
	n, err := c.Conn.Write(b[:first])
	if err != nil {
		return n, err
	}
	c.once.Do(func() { close(c.wrote) })
	if first == len(b) {
		return n, nil
	}
	m, err := c.Conn.Write(b[first:])
	return n + m, err
}

// TestKillMidBatch kills a node (SIGKILL) while a batch of large values is
// on the wire: Do fails at once with ErrUnknownOutcome, not at the timeout.
// The node's pooled idle connection is then found stale, and the next batch
// is refused without ErrUnknownOutcome.
func TestKillMidBatch(t *testing.T) {
	proc := mcproc.NewProcess(t)
	const timeout = 10 * time.Second
	var once sync.Once
	wrote := make(chan struct{})
	var d net.Dialer
	p := newPool(t, proc.Addr(), Config{Timeout: timeout, Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return wroteConn{Conn: nc, once: &once, wrote: wrote}, nil
	}})
	ctx := testCtx(t)
	// Two idle connections.
	c1, err := p.get(ctx, time.Now().Add(time.Second), true)
	require.NoError(t, err)
	c2, err := p.get(ctx, time.Now().Add(time.Second), true)
	require.NoError(t, err)
	p.put(c1)
	p.put(c2)

	// Paused, the node reads nothing: the batch is surely still in flight
	// when it is killed.
	require.NoError(t, proc.Pause())
	big := bytes.Repeat([]byte("v"), 1000*1024)
	start := time.Now()
	errc := doAsync(ctx, p,
		Request{Command: Set, Key: "a", Value: big}, Request{Command: Set, Key: "b", Value: big},
		Request{Command: Get, Key: "a", ReturnValue: true})
	select {
	case <-wrote:
	case <-time.After(timeout):
		t.Fatal("the batch was not written")
	}
	require.NoError(t, proc.Kill())
	err = wait(t, errc, timeout+2*time.Second)
	require.ErrorIs(t, err, ErrUnknownOutcome)
	require.NotErrorIs(t, err, ErrProtocol)
	require.Less(t, time.Since(start), timeout/2, "the kill, not the timeout, ended the batch")
	st := p.Stats()
	require.Equal(t, uint64(1), st.Broken)
	require.Zero(t, st.Timeouts)
	require.Equal(t, 1, st.Open, "the other connection is still idle")

	// The idle connection is stale; the node refuses new ones.
	_, err = p.Do(ctx, Request{Command: NoOp})
	requireRefused(t, err)
	st = p.Stats()
	require.Equal(t, uint64(1), st.Stale)
	require.Equal(t, uint64(1), st.DialErrors)
	require.Equal(t, 0, st.Open)
}

// TestKillUnderLoad kills a running node while batches go out back to
// back: each batch succeeds or fails with ErrUnknownOutcome or ErrNotSent,
// never with a protocol error, and once the node is gone batches are
// refused.
func TestKillUnderLoad(t *testing.T) {
	proc := mcproc.NewProcess(t)
	p := newPool(t, proc.Addr(), Config{})
	ctx := testCtx(t)
	value := bytes.Repeat([]byte("x"), 200<<10)
	errc := make(chan error, 1)
	go func() {
		for {
			_, err := p.Do(ctx, Request{Command: Set, Key: "k", Value: value}, Request{Command: Get, Key: "k", ReturnValue: true})
			if err != nil {
				errc <- err
				return
			}
		}
	}()
	waitBatches(t, p, 20)
	require.NoError(t, proc.Kill())
	err := wait(t, errc, 10*time.Second)
	require.True(t, errors.Is(err, ErrUnknownOutcome) || errors.Is(err, ErrNotSent), "%v", err)
	require.NotErrorIs(t, err, ErrProtocol)
	for range 3 {
		_, err = p.Do(ctx, Request{Command: NoOp})
		requireRefused(t, err)
	}
	require.Equal(t, 0, p.Stats().Open)
}

// TestPauseMidBatch pauses a node (SIGSTOP) past the timeout: Do fails with
// ErrUnknownOutcome within about Timeout (or ctx's earlier deadline), the
// connection is discarded, and after Resume the next batch works on a new
// connection.
func TestPauseMidBatch(t *testing.T) {
	tests := []struct {
		name    string
		warm    bool          // a pooled connection exists before the pause
		timeout time.Duration // Config.Timeout
		ctxTime time.Duration // ctx deadline, 0 for none
	}{
		{"pooled connection", true, 300 * time.Millisecond, 0},
		{"new connection", false, 300 * time.Millisecond, 0},
		{"ctx deadline first", true, 20 * time.Second, 300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proc := mcproc.NewProcess(t)
			p := newPool(t, proc.Addr(), Config{Timeout: tt.timeout})
			if tt.warm {
				do(t, p, Request{Command: NoOp})
			}
			require.NoError(t, proc.Pause())
			resumed := false
			t.Cleanup(func() {
				if !resumed {
					_ = proc.Resume()
				}
			})
			ctx := testCtx(t)
			limit := tt.timeout
			if tt.ctxTime > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctxTime)
				defer cancel()
				limit = tt.ctxTime
			}
			start := time.Now()
			_, err := p.Do(ctx, Request{Command: Set, Key: "k", Value: []byte("v")}, Request{Command: Get, Key: "k", ReturnValue: true})
			elapsed := time.Since(start)
			require.ErrorIs(t, err, ErrUnknownOutcome)
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			require.Less(t, elapsed, limit+2*time.Second)
			require.GreaterOrEqual(t, elapsed, limit/2)
			st := p.Stats()
			require.Equal(t, uint64(1), st.Broken)
			require.Equal(t, uint64(1), st.Timeouts)
			require.Equal(t, 0, st.Open)

			require.NoError(t, proc.Resume())
			resumed = true
			out := do(t, p, Request{Command: Set, Key: "k2", Value: []byte("w")}, Request{Command: Get, Key: "k2", ReturnValue: true})
			require.Equal(t, "w", string(out[1].Value))
			st = p.Stats()
			require.Equal(t, uint64(1), st.Broken)
			require.Zero(t, st.Stale)
			require.Equal(t, uint64(2), st.Dials, "the broken connection was not reused")
		})
	}
}

// TestRestartBetweenBatches restarts a node while the pool holds idle
// connections to it: they are found closed (Stats.Stale) before use and
// the next batch succeeds on a new connection, with no ErrUnknownOutcome.
func TestRestartBetweenBatches(t *testing.T) {
	for _, graceful := range []bool{false, true} {
		name := map[bool]string{false: "kill", true: "stop"}[graceful]
		t.Run(name, func(t *testing.T) {
			proc := mcproc.NewProcess(t)
			p := newPool(t, proc.Addr(), Config{})
			ctx := testCtx(t)
			var conns []*conn
			for range 4 {
				c, err := p.get(ctx, time.Now().Add(5*time.Second), true)
				require.NoError(t, err)
				conns = append(conns, c)
			}
			for _, c := range conns {
				p.put(c)
			}
			do(t, p, Request{Command: Set, Key: "k", Value: []byte("v")})
			require.Equal(t, 4, p.Stats().Idle)

			if graceful {
				require.NoError(t, proc.Stop())
			}
			require.NoError(t, proc.Restart(ctx))

			out, err := p.Do(ctx, Request{Command: Get, Key: "k", ReturnValue: true}, Request{Command: NoOp})
			require.NoError(t, err)
			require.Equal(t, []Response{{Status: StatusMiss}, {Status: StatusNoOp}}, out, "a restarted node is empty")
			st := p.Stats()
			require.Equal(t, uint64(4), st.Stale)
			require.Zero(t, st.Broken)
			require.Equal(t, uint64(5), st.Dials)
			require.Equal(t, 1, st.Open)
		})
	}
}

// TestRefusedPort: nothing listens, so nothing is sent; the slot taken for
// the dial is given back each time.
func TestRefusedPort(t *testing.T) {
	p := newPool(t, freeAddr(t), Config{MaxConns: 1})
	for range 3 {
		out, err := p.Do(testCtx(t), Request{Command: Set, Key: "k", Value: []byte("v")})
		requireRefused(t, err)
		require.Equal(t, []Response{{}}, out)
	}
	st := p.Stats()
	require.Equal(t, uint64(3), st.Dials)
	require.Equal(t, uint64(3), st.DialErrors)
	require.Zero(t, st.Waits)
	require.Zero(t, st.Batches)
	require.Equal(t, 0, st.Open)
}

// TestDialTimeout: a dial that hangs is bounded by the batch deadline and
// reported as not sent.
func TestDialTimeout(t *testing.T) {
	p := newPool(t, "127.0.0.1:1", Config{Timeout: 200 * time.Millisecond, DialTimeout: 200 * time.Millisecond,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}})
	start := time.Now()
	_, err := p.Do(testCtx(t), Request{Command: NoOp})
	require.ErrorIs(t, err, ErrNotSent)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 200*time.Millisecond+2*time.Second)
	require.Equal(t, 0, p.Stats().Open)
	require.Equal(t, uint64(1), p.Stats().DialErrors)
}
