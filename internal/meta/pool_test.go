package meta

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/stretchr/testify/require"
)

func TestNewPoolDefaults(t *testing.T) {
	tests := []struct {
		name string
		in   Config
		want Config // Dial is checked apart
	}{
		{"zero", Config{Addr: "a:1"}, Config{Addr: "a:1", Timeout: DefaultTimeout, DialTimeout: DefaultDialTimeout,
			MaxConns: DefaultMaxConns, MaxIdle: DefaultMaxIdle, MaxValueSize: DefaultMaxValueSize}},
		{"MaxIdle at most MaxConns", Config{Addr: "a:1", MaxConns: 2}, Config{Addr: "a:1", Timeout: DefaultTimeout,
			DialTimeout: DefaultDialTimeout, MaxConns: 2, MaxIdle: 2, MaxValueSize: DefaultMaxValueSize}},
		{"negative means default", Config{Addr: "a:1", Timeout: -1, DialTimeout: -1, MaxConns: -1, MaxIdle: -1, MaxValueSize: -1},
			Config{Addr: "a:1", Timeout: DefaultTimeout, DialTimeout: DefaultDialTimeout, MaxConns: DefaultMaxConns,
				MaxIdle: DefaultMaxIdle, MaxValueSize: DefaultMaxValueSize}},
		{"kept", Config{Addr: "a:1", Timeout: time.Second, DialTimeout: 2 * time.Second, MaxConns: 5, MaxIdle: 3, MaxValueSize: 10},
			Config{Addr: "a:1", Timeout: time.Second, DialTimeout: 2 * time.Second, MaxConns: 5, MaxIdle: 3, MaxValueSize: 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPool(tt.in)
			require.NotNil(t, p.cfg.Dial)
			got := p.cfg
			got.Dial = nil
			require.Equal(t, tt.want, got)
			require.Equal(t, "a:1", p.Addr())
			require.Equal(t, Stats{}, p.Stats())
			require.NoError(t, p.Close())
		})
	}
}

// TestMaxConns runs 8 goroutines on a pool of 2 connections: batches wait
// for a connection (Stats.Waits) and no more than 2 are ever open.
func TestMaxConns(t *testing.T) {
	proc := mcproc.NewProcess(t)
	p := newPool(t, proc.Addr(), Config{MaxConns: 2, Timeout: 10 * time.Second})
	const workers, batches = 8, 50
	var maxOpen atomic.Int64
	stop := make(chan struct{})
	monitored := make(chan struct{})
	go func() {
		defer close(monitored)
		for {
			if o := int64(p.Stats().Open); o > maxOpen.Load() {
				maxOpen.Store(o)
			}
			select {
			case <-stop:
				return
			default:
				time.Sleep(50 * time.Microsecond)
			}
		}
	}()
	start := make(chan struct{})
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			key := fmt.Sprintf("w%d", w)
			for b := range batches {
				v := fmt.Sprintf("%s-%d", key, b)
				out, err := p.Do(testCtx(t), Request{Command: Set, Key: key, Value: []byte(v)}, Request{Command: Get, Key: key, ReturnValue: true})
				if err == nil && string(out[1].Value) != v {
					err = fmt.Errorf("worker %d read %q, want %q", w, out[1].Value, v)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	close(stop)
	<-monitored
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	st := p.Stats()
	require.Positive(t, st.Waits)
	require.LessOrEqual(t, maxOpen.Load(), int64(2))
	require.LessOrEqual(t, st.Open, 2)
	require.LessOrEqual(t, st.Dials, uint64(2))
	require.Zero(t, st.Timeouts)
	require.Equal(t, uint64(workers*batches), st.Batches)
	require.Equal(t, uint64(2*workers*batches), st.Requests)
}

// TestWaitForConn takes the only connection of a pool and checks what a
// batch waiting for it does: it times out (not sent), gets the connection
// when it comes back, stops on ctx, and stops on Close.
func TestWaitForConn(t *testing.T) {
	proc := mcproc.NewProcess(t)
	tests := []struct {
		name string
		// release ends the wait; nil lets it time out.
		release func(p *Pool, c *conn, cancel context.CancelFunc)
		check   func(t *testing.T, err error, p *Pool)
	}{
		{"timeout", nil, func(t *testing.T, err error, p *Pool) {
			require.ErrorIs(t, err, ErrNotSent)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.ErrorContains(t, err, "no free connection")
			require.Equal(t, uint64(1), p.Stats().Timeouts)
		}},
		{"connection returned", func(p *Pool, c *conn, _ context.CancelFunc) { p.put(c) }, func(t *testing.T, err error, p *Pool) {
			require.NoError(t, err)
			require.Equal(t, uint64(1), p.Stats().Dials, "the returned connection was used")
		}},
		{"ctx canceled", func(_ *Pool, _ *conn, cancel context.CancelFunc) { cancel() }, func(t *testing.T, err error, p *Pool) {
			require.ErrorIs(t, err, ErrNotSent)
			require.ErrorIs(t, err, context.Canceled)
			require.Zero(t, p.Stats().Timeouts)
		}},
		{"pool closed", func(p *Pool, _ *conn, _ context.CancelFunc) { require.NoError(t, p.Close()) }, func(t *testing.T, err error, p *Pool) {
			require.ErrorIs(t, err, ErrClosed)
			require.ErrorIs(t, err, ErrNotSent)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			timeout := 10 * time.Second
			if tt.release == nil {
				timeout = 200 * time.Millisecond
			}
			p := newPool(t, proc.Addr(), Config{MaxConns: 1, Timeout: timeout})
			c, err := p.get(testCtx(t), time.Now().Add(5*time.Second), true)
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(testCtx(t))
			defer cancel()
			start := time.Now()
			errc := doAsync(ctx, p, Request{Command: Get, Key: "k"})
			require.Eventually(t, func() bool { return p.Stats().Waits == 1 }, 5*time.Second, time.Millisecond)
			if tt.release != nil {
				tt.release(p, c, cancel)
			}
			err = wait(t, errc, timeout+2*time.Second)
			require.Less(t, time.Since(start), timeout+2*time.Second)
			tt.check(t, err, p)
			if tt.name != "connection returned" {
				require.Zero(t, p.Stats().Batches)
				p.put(c)
			}
			require.LessOrEqual(t, p.Stats().Open, 1)
		})
	}
}

// TestClose checks that Close closes idle connections at once and busy
// ones when their batch ends (the batch itself completes), and that Do then
// fails with ErrClosed.
func TestClose(t *testing.T) {
	proc := mcproc.NewProcess(t)
	p := newPool(t, proc.Addr(), Config{Timeout: 10 * time.Second})
	ctx := testCtx(t)
	do(t, p, Request{Command: NoOp})
	c, err := p.get(ctx, time.Now().Add(time.Second), true)
	require.NoError(t, err)
	p.put(c) // the same idle connection
	c2, err := p.get(ctx, time.Now().Add(time.Second), true)
	require.NoError(t, err)
	c3, err := p.get(ctx, time.Now().Add(time.Second), true)
	require.NoError(t, err)
	p.put(c3)
	require.Equal(t, Stats{Open: 2, Idle: 1, Dials: 2, Batches: 1, Requests: 1}, p.Stats())

	// A batch in flight on a paused node while the pool closes.
	require.NoError(t, proc.Pause())
	errc := doAsync(ctx, p, Request{Command: Set, Key: "k", Value: []byte("v")})
	waitBatches(t, p, 2)
	require.NoError(t, p.Close())
	require.NoError(t, p.Close(), "closing twice is fine")
	require.Equal(t, 2, p.Stats().Open, "c2 and the busy connection stay open until returned")
	require.NoError(t, proc.Resume())
	require.NoError(t, wait(t, errc, 12*time.Second), "a batch under way when the pool closes completes")
	p.put(c2)
	st := p.Stats()
	require.Equal(t, 0, st.Open)
	require.Equal(t, 0, st.Idle)

	_, err = p.Do(ctx, Request{Command: NoOp})
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, err, ErrNotSent)
	require.Equal(t, uint64(2), p.Stats().Dials)
}

func TestCloseIdle(t *testing.T) {
	proc := mcproc.NewProcess(t)
	p := newPool(t, proc.Addr(), Config{})
	do(t, p, Request{Command: NoOp})
	require.Equal(t, 1, p.Stats().Idle)
	p.CloseIdle()
	require.Equal(t, 0, p.Stats().Open)
	do(t, p, Request{Command: NoOp})
	require.Equal(t, uint64(2), p.Stats().Dials, "the pool stays usable")
}

// TestMaxIdle: connections returned when MaxIdle are idle already are
// closed.
func TestMaxIdle(t *testing.T) {
	proc := mcproc.NewProcess(t)
	p := newPool(t, proc.Addr(), Config{MaxConns: 4, MaxIdle: 1})
	ctx := testCtx(t)
	var conns []*conn
	for range 3 {
		c, err := p.get(ctx, time.Now().Add(time.Second), true)
		require.NoError(t, err)
		conns = append(conns, c)
	}
	require.Equal(t, 3, p.Stats().Open)
	for _, c := range conns {
		p.put(c)
	}
	st := p.Stats()
	require.Equal(t, 1, st.Open)
	require.Equal(t, 1, st.Idle)
	do(t, p, Request{Command: NoOp})
	require.Equal(t, uint64(3), p.Stats().Dials)
}

// TestIdleConnWithUnreadBytes: an idle connection with bytes nobody asked
// for, in its socket or already in its reader, is out of step and must be
// dropped before use, never read as the next batch's answers.
func TestIdleConnWithUnreadBytes(t *testing.T) {
	proc := mcproc.NewProcess(t)
	tests := []struct {
		name  string
		queue func(t *testing.T, c *conn)
	}{
		{"in the socket", func(t *testing.T, c *conn) {
			_, err := c.nc.Write([]byte("mn\r\n"))
			require.NoError(t, err)
			require.Eventually(t, func() bool { return connCheck(c.nc) == errUnexpectedRead }, 5*time.Second, time.Millisecond)
		}},
		{"in the reader", func(t *testing.T, c *conn) {
			_, err := c.nc.Write([]byte("mn\r\nmn\r\n"))
			require.NoError(t, err)
			require.NoError(t, c.nc.SetReadDeadline(time.Now().Add(5*time.Second)))
			_, err = c.br.Peek(len("MN\r\nMN\r\n")) // both answers in the reader
			require.NoError(t, err)
			out := make([]Response, 1)
			require.NoError(t, readAnswers(c.br, []Request{{Command: NoOp}}, out, DefaultMaxValueSize))
			require.Equal(t, StatusNoOp, out[0].Status)
			require.Equal(t, len("MN\r\n"), c.br.Buffered())
			require.NoError(t, connCheck(c.nc), "the socket itself is empty")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPool(t, proc.Addr(), Config{})
			c, err := p.get(testCtx(t), time.Now().Add(5*time.Second), true)
			require.NoError(t, err)
			tt.queue(t, c)
			p.put(c)
			require.Equal(t, []Response{{Status: StatusMiss}, {Status: StatusNoOp}},
				do(t, p, Request{Command: Get, Key: "nope"}, Request{Command: NoOp}))
			st := p.Stats()
			require.Equal(t, uint64(1), st.Stale)
			require.Equal(t, uint64(2), st.Dials)
		})
	}
}

// TestConnCheck checks the socket peek on real connections.
func TestConnCheck(t *testing.T) {
	proc := mcproc.NewProcess(t)
	nc, err := net.Dial("tcp", proc.Addr())
	require.NoError(t, err)
	defer nc.Close()
	require.NoError(t, connCheck(nc), "open and quiet")
	_, err = nc.Write([]byte("mn\r\n"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return connCheck(nc) == errUnexpectedRead }, 5*time.Second, time.Millisecond)
	require.Equal(t, errUnexpectedRead, connCheck(nc), "a peek leaves the bytes")
	buf := make([]byte, 4)
	_, err = io.ReadFull(nc, buf)
	require.NoError(t, err)
	require.NoError(t, connCheck(nc))
	require.NoError(t, proc.Kill())
	require.Eventually(t, func() bool { return connCheck(nc) == io.EOF }, 5*time.Second, time.Millisecond)

	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	require.NoError(t, connCheck(a), "a conn without a file descriptor is taken as usable")
}
