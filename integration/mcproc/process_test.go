package mcproc

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"
)

// testCtx returns a context that bounds one test step.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// requireDown checks that nothing accepts connections on addr.
func requireDown(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		conn.Close()
	}
	require.Error(t, err, "dial %s after stop", addr)
}

func TestProcessStopRestart(t *testing.T) {
	p := NewProcess(t)
	ctx := testCtx(t)
	addr := p.Addr()
	require.True(t, strings.HasPrefix(addr, "127.0.0.1:"), addr)
	require.True(t, p.Running())

	c := p.Client()
	require.NoError(t, c.Set(&memcache.Item{Key: "k", Value: []byte("v")}))
	it, err := c.Get("k")
	require.NoError(t, err)
	require.Equal(t, "v", string(it.Value))
	n, err := p.Stat(ctx, "curr_items")
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	n, err = p.Stat(ctx, "cmd_set")
	require.NoError(t, err)
	require.EqualValues(t, 1, n)

	require.NoError(t, p.Stop())
	require.False(t, p.Running())
	requireDown(t, addr)
	_, err = p.Stats(ctx)
	require.Error(t, err)
	require.NoError(t, p.Stop(), "second Stop")
	require.NoError(t, p.Kill(), "Kill after Stop")

	require.NoError(t, p.Restart(ctx))
	require.True(t, p.Running())
	require.Equal(t, addr, p.Addr())
	_, err = p.Client().Get("k")
	require.ErrorIs(t, err, memcache.ErrCacheMiss, "a restarted node is empty")
	n, err = p.Stat(ctx, "curr_items")
	require.NoError(t, err)
	require.EqualValues(t, 0, n)
}

func TestProcessKillRestart(t *testing.T) {
	p := NewProcess(t)
	ctx := testCtx(t)
	addr := p.Addr()
	require.NoError(t, p.Client().Set(&memcache.Item{Key: "k", Value: []byte("v")}))

	require.NoError(t, p.Kill())
	require.False(t, p.Running())
	requireDown(t, addr)
	require.NoError(t, p.Kill(), "second Kill")
	require.NoError(t, p.Stop(), "Stop after Kill")

	require.NoError(t, p.Restart(ctx))
	require.Equal(t, addr, p.Addr())
	require.True(t, p.Running())
	_, err := p.Client().Get("k")
	require.ErrorIs(t, err, memcache.ErrCacheMiss)

	// Restart of a running node kills it first and also leaves it empty.
	require.NoError(t, p.Client().Set(&memcache.Item{Key: "k2", Value: []byte("v")}))
	require.NoError(t, p.Restart(ctx))
	require.True(t, p.Running())
	_, err = p.Client().Get("k2")
	require.ErrorIs(t, err, memcache.ErrCacheMiss)
}

func TestStats(t *testing.T) {
	p := NewProcess(t)
	ctx := testCtx(t)
	c := p.Client()
	require.NoError(t, c.Set(&memcache.Item{Key: "a", Value: []byte("1")}))
	_, err := c.Get("a")
	require.NoError(t, err)
	require.NoError(t, c.Touch("a", 60))

	stats, err := p.Stats(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, stats["version"])
	require.NotEmpty(t, stats["pid"])
	for name, want := range map[string]uint64{"cmd_set": 1, "cmd_get": 1, "cmd_touch": 1, "curr_items": 1} {
		got, err := p.Stat(ctx, name)
		require.NoError(t, err, name)
		require.Equal(t, want, got, name)
	}

	_, err = p.Stat(ctx, "no_such_stat")
	require.ErrorContains(t, err, "not reported")
	_, err = p.Stat(ctx, "version")
	require.Error(t, err, "version is not numeric")

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = p.Stats(cancelled)
	require.ErrorIs(t, err, context.Canceled)
}

func TestParseStats(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]string
		wantErr bool
	}{
		{name: "ok", in: "STAT pid 12\r\nSTAT version 1.6.18\r\nSTAT libevent 2.1.12 stable\r\nEND\r\n",
			want: map[string]string{"pid": "12", "version": "1.6.18", "libevent": "2.1.12 stable"}},
		{name: "empty", in: "END\r\n", want: map[string]string{}},
		{name: "error", in: "ERROR\r\n", wantErr: true},
		{name: "no value", in: "STAT pid\r\nEND\r\n", wantErr: true},
		{name: "truncated", in: "STAT pid 12\r\nSTAT", wantErr: true},
		{name: "no end", in: "STAT pid 12\r\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStats(bufio.NewReader(strings.NewReader(tt.in)))
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestStartOptions(t *testing.T) {
	bin := RequireBinary(t)
	ctx := testCtx(t)
	port, err := freePort("127.0.0.1")
	require.NoError(t, err)
	var stderr strings.Builder
	var mu sync.Mutex
	p, err := Start(ctx, Options{
		Binary: bin, Host: "localhost", Port: port, MemoryMB: 16, Threads: 1,
		MaxItemSize: "2m", ExtraArgs: []string{"-c", "128"},
		Stderr: lockedWriter{&mu, &stderr},
	})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Kill()) })
	require.Equal(t, joinHostPort("127.0.0.1", port), p.Addr())

	stats, err := p.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, "1", stats["threads"])
	require.Equal(t, "128", stats["max_connections"])
	require.Equal(t, "16777216", stats["limit_maxbytes"])

	settings := statsSettings(t, p.Addr())
	require.Equal(t, "2097152", settings["item_size_max"])
	require.Equal(t, "0", settings["udpport"])
}

func TestStartDefaults(t *testing.T) {
	p := NewProcess(t)
	settings := statsSettings(t, p.Addr())
	require.Equal(t, "67108864", settings["maxbytes"])
	stats, err := p.Stats(testCtx(t))
	require.NoError(t, err)
	require.Equal(t, "67108864", stats["limit_maxbytes"])
	require.Equal(t, "2", stats["threads"])
	require.Equal(t, "1048576", settings["item_size_max"])
	require.Equal(t, "0", settings["udpport"])
}

// statsSettings returns the answer to "stats settings".
func statsSettings(t *testing.T, addr string) map[string]string {
	t.Helper()
	var settings map[string]string
	err := withConn(testCtx(t), addr, nil, 5*time.Second, func(rw *bufio.ReadWriter) error {
		if _, err := rw.WriteString("stats settings\r\n"); err != nil {
			return err
		}
		if err := rw.Flush(); err != nil {
			return err
		}
		var err error
		settings, err = parseStats(rw.Reader)
		return err
	})
	require.NoError(t, err)
	return settings
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestStartRejectsNonLoopbackHost(t *testing.T) {
	for _, host := range []string{"0.0.0.0", "::", "10.0.0.1", "192.168.1.1", "example.com", "127.0.0.1:11211"} {
		t.Run(host, func(t *testing.T) {
			p, err := Start(testCtx(t), Options{Host: host})
			require.Nil(t, p)
			require.ErrorContains(t, err, "not a loopback")
		})
	}
}

func TestLoopbackHost(t *testing.T) {
	for in, want := range map[string]string{"": "127.0.0.1", "localhost": "127.0.0.1",
		"127.0.0.1": "127.0.0.1", "127.0.0.2": "127.0.0.2", "::1": "::1"} {
		got, err := loopbackHost(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
}

func TestStartIPv6Loopback(t *testing.T) {
	bin := RequireBinary(t)
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	l.Close()
	p, err := Start(testCtx(t), Options{Binary: bin, Host: "::1"})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Kill()) })
	require.True(t, strings.HasPrefix(p.Addr(), "[::1]:"), p.Addr())
	require.NoError(t, p.Client().Set(&memcache.Item{Key: "k", Value: []byte("v")}))
}

func TestStartMissingBinary(t *testing.T) {
	_, err := Start(testCtx(t), Options{Binary: "/nonexistent/memcached"})
	require.ErrorIs(t, err, ErrNotInstalled)
}

func TestStartInvalidOptions(t *testing.T) {
	for _, o := range []Options{{Port: -1}, {Port: 70000}, {MemoryMB: -1}, {Threads: -1}, {StartTimeout: -time.Second}} {
		_, err := Start(testCtx(t), o)
		require.Error(t, err)
	}
}

func TestStartCancelled(t *testing.T) {
	bin := RequireBinary(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Start(ctx, Options{Binary: bin})
	require.ErrorIs(t, err, context.Canceled)
}

func TestStartBusyFixedPort(t *testing.T) {
	bin := RequireBinary(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	start := time.Now()
	_, err = Start(testCtx(t), Options{Binary: bin, Port: port})
	require.Error(t, err)
	require.ErrorIs(t, err, errPortBusy)
	require.ErrorContains(t, err, "Address already in use")
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestStartFailureReported(t *testing.T) {
	bin := RequireBinary(t)
	var stderr strings.Builder
	var mu sync.Mutex
	_, err := Start(testCtx(t), Options{Binary: bin, ExtraArgs: []string{"--no-such-flag"},
		Stderr: lockedWriter{&mu, &stderr}})
	require.Error(t, err)
	require.ErrorContains(t, err, "exited before answering")
	require.ErrorContains(t, err, "no-such-flag", "the error quotes memcached's stderr")
	require.False(t, errors.Is(err, errPortBusy))
	mu.Lock()
	defer mu.Unlock()
	require.Contains(t, stderr.String(), "no-such-flag", "Options.Stderr gets memcached's stderr")
}

func TestRestartBusyPort(t *testing.T) {
	p := NewProcess(t)
	require.NoError(t, p.Kill())
	l, err := net.Listen("tcp", p.Addr())
	require.NoError(t, err)

	// Held for longer than Restart retries: it gives up.
	start := time.Now()
	err = p.Restart(testCtx(t))
	require.ErrorIs(t, err, errPortBusy)
	require.Less(t, time.Since(start), 10*time.Second)
	require.False(t, p.Running())

	// Freed while Restart retries: it succeeds.
	time.AfterFunc(300*time.Millisecond, func() { l.Close() })
	require.NoError(t, p.Restart(testCtx(t)))
	require.True(t, p.Running())
}

func TestProcessConcurrentUse(t *testing.T) {
	p := NewProcess(t)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = p.Running()
				_ = p.Addr()
				_, _ = p.Stat(ctx, "curr_items")
			}
		}()
	}
	for range 3 {
		require.NoError(t, p.Restart(ctx))
		require.NoError(t, p.Kill())
	}
	require.NoError(t, p.Restart(ctx))
	close(stop)
	wg.Wait()
	require.True(t, p.Running())
}
