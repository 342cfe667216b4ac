package meta

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/stretchr/testify/require"
)

// Conformance of every command and flag the transport sends, against a
// real memcached 1.6.18. The gomemcache client of mcproc is the
// independent witness of what was stored.

// requireTTL checks a returned TTL against the one set, allowing for the
// seconds that passed and for memcached's clock, which ticks once a second
// (an absolute expiry may read one second more than the wall clock gives).
func requireTTL(t testing.TB, want, got int32) {
	t.Helper()
	if want == -1 {
		require.Equal(t, int32(-1), got)
		return
	}
	require.LessOrEqual(t, got, want+1)
	require.GreaterOrEqual(t, got, want-5)
}

func TestGetReturnFlags(t *testing.T) {
	proc := mcproc.NewProcess(t)
	p := newPool(t, proc.Addr(), Config{})
	cas := set(t, p, "k", "hello", 7)
	tests := []struct {
		name string
		req  Request
		want Response
	}{
		{"no flags", Request{}, Response{Status: StatusOK}},
		{"v", Request{ReturnValue: true}, Response{Status: StatusOK, Value: []byte("hello")}},
		{"c", Request{ReturnCAS: true}, Response{Status: StatusOK, CAS: cas}},
		{"t", Request{ReturnTTL: true}, Response{Status: StatusOK, TTL: -1}},
		{"f", Request{ReturnFlags: true}, Response{Status: StatusOK, Flags: 7}},
		{"v f", Request{ReturnValue: true, ReturnFlags: true}, Response{Status: StatusOK, Value: []byte("hello"), Flags: 7}},
		{"v c t f", Request{ReturnValue: true, ReturnCAS: true, ReturnTTL: true, ReturnFlags: true},
			Response{Status: StatusOK, Value: []byte("hello"), CAS: cas, TTL: -1, Flags: 7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.req
			r.Command, r.Key = Get, "k"
			require.Equal(t, tt.want, do1(t, p, r))
			r.Key = "missing"
			require.Equal(t, Response{Status: StatusMiss}, do1(t, p, r))
		})
	}
	t.Run("zero-length value", func(t *testing.T) {
		set(t, p, "empty", "", 0)
		r := do1(t, p, Request{Command: Get, Key: "empty", ReturnValue: true})
		require.Equal(t, StatusOK, r.Status)
		require.NotNil(t, r.Value, "a hit with an empty value is not a nil value")
		require.Empty(t, r.Value)
	})
}

func TestGetTouch(t *testing.T) {
	proc := mcproc.NewProcess(t)
	p := newPool(t, proc.Addr(), Config{})
	mc := proc.Client()
	future := int32(time.Now().Unix() + 3600)
	tests := []struct {
		name    string
		ttl     int32
		wantTTL int32 // after the touch; -1: never expires
		gone    bool  // expired at once
	}{
		{"relative", 100, 100, false},
		{"zero means never", 0, -1, false},
		{"30 days is relative", 30 * 24 * 3600, 30 * 24 * 3600, false},
		{"unix time", future, 3600, false},
		{"negative expires at once", -1, 0, true},
		{"unix time in the past expires at once", future - 7200, 0, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := "touch" + string(rune('a'+i))
			r := do1(t, p, Request{Command: Set, Key: key, Value: []byte("v"), TTL: 50, ReturnCAS: true})
			cas := r.CAS
			// One round trip: value, CAS, TTL after the touch, flags.
			got := do1(t, p, Request{Command: Get, Key: key, Touch: true, TTL: tt.ttl,
				ReturnValue: true, ReturnCAS: true, ReturnTTL: true, ReturnFlags: true})
			require.Equal(t, StatusOK, got.Status)
			require.Equal(t, "v", string(got.Value))
			require.Equal(t, cas, got.CAS, "a touch keeps the CAS")
			// memcached applies the flags in order: "t" comes before "T",
			// so it tells the TTL from before the touch.
			requireTTL(t, 50, got.TTL)

			after := do1(t, p, Request{Command: Get, Key: key, ReturnTTL: true, ReturnCAS: true})
			if tt.gone {
				require.Equal(t, StatusMiss, after.Status)
				_, err := mc.Get(key)
				require.ErrorIs(t, err, memcache.ErrCacheMiss)
				return
			}
			require.Equal(t, StatusOK, after.Status)
			require.Equal(t, cas, after.CAS)
			requireTTL(t, tt.wantTTL, after.TTL)
		})
	}
	t.Run("without flags", func(t *testing.T) {
		set(t, p, "bare", "v", 0)
		require.Equal(t, Response{Status: StatusOK}, do1(t, p, Request{Command: Get, Key: "bare", Touch: true, TTL: 100}))
		requireTTL(t, 100, do1(t, p, Request{Command: Get, Key: "bare", ReturnTTL: true}).TTL)
	})
	t.Run("missing", func(t *testing.T) {
		require.Equal(t, Response{Status: StatusMiss}, do1(t, p, Request{Command: Get, Key: "nope", Touch: true, TTL: 100, ReturnValue: true}))
	})
}

// TestSetModes runs every storage mode over a present and an absent item
// and checks the answer and what memcached then holds.
func TestSetModes(t *testing.T) {
	proc := mcproc.NewProcess(t)
	p := newPool(t, proc.Addr(), Config{})
	mc := proc.Client()
	const wrongCAS = 1 << 60
	tests := []struct {
		name    string
		exists  bool
		mode    SetMode
		cas     int // 0: none, 1: the item's CAS, -1: a wrong one
		want    Status
		applied bool
	}{
		{"set absent", false, ModeSet, 0, StatusOK, true},
		{"set present", true, ModeSet, 0, StatusOK, true},
		{"add absent", false, ModeAdd, 0, StatusOK, true},
		{"add present", true, ModeAdd, 0, StatusNotStored, false},
		{"replace absent", false, ModeReplace, 0, StatusNotStored, false},
		{"replace present", true, ModeReplace, 0, StatusOK, true},
		{"cas match", true, ModeSet, 1, StatusOK, true},
		{"cas mismatch", true, ModeSet, -1, StatusExists, false},
		{"cas absent", false, ModeSet, -1, StatusNotFound, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := "mode" + string(rune('a'+i))
			var oldCAS uint64
			if tt.exists {
				oldCAS = set(t, p, key, "old", 1)
			}
			req := Request{Command: Set, Key: key, Value: []byte("new"), Mode: tt.mode, TTL: 100, Flags: 2, ReturnCAS: true}
			switch tt.cas {
			case 1:
				req.CAS = oldCAS
			case -1:
				req.CAS = wrongCAS
			}
			r := do1(t, p, req)
			require.Equal(t, tt.want, r.Status)
			require.NoError(t, r.Err)

			it, err := mc.Get(key)
			switch {
			case tt.applied:
				require.NoError(t, err)
				require.Equal(t, "new", string(it.Value))
				require.Equal(t, uint32(2), it.Flags)
				require.NotZero(t, r.CAS)
				require.NotEqual(t, oldCAS, r.CAS, "a store gives a new CAS")
				require.Equal(t, it.CasID, r.CAS, "the CAS returned by ms c is the item's")
				got := getAll(t, p, key)
				require.Equal(t, r.CAS, got.CAS, "and a later mg c returns it")
				requireTTL(t, 100, got.TTL)
			case tt.exists:
				require.NoError(t, err)
				require.Equal(t, "old", string(it.Value))
				require.Equal(t, uint32(1), it.Flags)
				require.Equal(t, oldCAS, it.CasID)
				require.Zero(t, r.CAS, "no CAS with a failure")
			default:
				require.ErrorIs(t, err, memcache.ErrCacheMiss)
			}
		})
	}
}

func TestSetClientFlags(t *testing.T) {
	proc := mcproc.NewProcess(t)
	p := newPool(t, proc.Addr(), Config{})
	mc := proc.Client()
	for _, flags := range []uint32{0, 1, 255, 1 << 16, 1 << 31, 1<<32 - 2, 1<<32 - 1} {
		set(t, p, "flags", "v", flags)
		require.Equal(t, Response{Status: StatusOK, Flags: flags}, do1(t, p, Request{Command: Get, Key: "flags", ReturnFlags: true}))
		it, err := mc.Get("flags")
		require.NoError(t, err)
		require.Equal(t, flags, it.Flags)

		// And flags stored by another client read back.
		require.NoError(t, mc.Set(&memcache.Item{Key: "other", Value: []byte("v"), Flags: flags}))
		require.Equal(t, flags, do1(t, p, Request{Command: Get, Key: "other", ReturnFlags: true}).Flags)
	}
}

func TestSetTTL(t *testing.T) {
	proc := mcproc.NewProcess(t)
	p := newPool(t, proc.Addr(), Config{})
	now := time.Now().Unix()
	tests := []struct {
		name    string
		ttl     int32
		wantTTL int32
		gone    bool
	}{
		{"zero never expires", 0, -1, false},
		{"relative", 100, 100, false},
		{"30 days is still relative", 2592000, 2592000, false},
		{"over 30 days is a unix time", int32(now + 7200), 7200, false},
		{"negative expires at once", -1, 0, true},
		{"unix time in the past expires at once", int32(now - 3600), 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do1(t, p, Request{Command: Set, Key: "ttl", Value: []byte("v"), TTL: tt.ttl})
			require.Equal(t, StatusOK, r.Status)
			got := do1(t, p, Request{Command: Get, Key: "ttl", ReturnTTL: true})
			if tt.gone {
				require.Equal(t, StatusMiss, got.Status)
				return
			}
			require.Equal(t, StatusOK, got.Status)
			requireTTL(t, tt.wantTTL, got.TTL)
		})
	}
}

func TestDeleteModes(t *testing.T) {
	proc := mcproc.NewProcess(t)
	p := newPool(t, proc.Addr(), Config{})
	mc := proc.Client()
	tests := []struct {
		name   string
		exists bool
		cas    int // 0: none, 1: the item's CAS, -1: a wrong one
		want   Status
	}{
		{"present", true, 0, StatusOK},
		{"absent", false, 0, StatusNotFound},
		{"cas match", true, 1, StatusOK},
		{"cas mismatch", true, -1, StatusExists},
		{"cas absent", false, -1, StatusNotFound},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := "del" + string(rune('a'+i))
			var cas uint64
			if tt.exists {
				cas = set(t, p, key, "v", 0)
			}
			req := Request{Command: Delete, Key: key}
			switch tt.cas {
			case 1:
				req.CAS = cas
			case -1:
				req.CAS = cas + 1000
			}
			require.Equal(t, Response{Status: tt.want}, do1(t, p, req))
			_, err := mc.Get(key)
			if tt.want == StatusExists {
				require.NoError(t, err, "a CAS mismatch deletes nothing")
			} else {
				require.ErrorIs(t, err, memcache.ErrCacheMiss)
			}
		})
	}
}

func TestNoOp(t *testing.T) {
	proc := mcproc.NewProcess(t)
	p := newPool(t, proc.Addr(), Config{})
	require.Equal(t, []Response{{Status: StatusNoOp}}, do(t, p, Request{Command: NoOp}))
	out := do(t, p, Request{Command: NoOp}, Request{Command: Get, Key: "k"}, Request{Command: NoOp})
	require.Equal(t, []Response{{Status: StatusNoOp}, {Status: StatusMiss}, {Status: StatusNoOp}}, out)
}

// TestSetValueTooLarge checks that a SERVER_ERROR answer (a value over the
// item size limit) is reported for its request alone and that the
// connection stays in step: the rest of the batch and the next batch are
// answered on the same connection.
func TestSetValueTooLarge(t *testing.T) {
	tests := []struct {
		name string
		opts mcproc.Options
		size int
	}{
		// -I 64k needs a smaller slab_chunk_max than its default of 512 KiB.
		{"small item size limit", mcproc.Options{MaxItemSize: "64k", ExtraArgs: []string{"-o", "slab_chunk_max=16384"}}, 100 << 10},
		{"default 1 MiB limit", mcproc.Options{}, 2 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proc := startProcess(t, tt.opts)
			p := newPool(t, proc.Addr(), Config{})
			set(t, p, "present", "old", 0)
			big := bytes.Repeat([]byte("x"), tt.size)
			out := do(t, p,
				Request{Command: Get, Key: "present", ReturnValue: true},
				Request{Command: Set, Key: "big", Value: big, ReturnCAS: true},
				Request{Command: Set, Key: "present", Value: big},
				Request{Command: Set, Key: "after", Value: []byte("a\r\nb"), Quiet: true},
				Request{Command: Get, Key: "after", ReturnValue: true},
				Request{Command: NoOp},
			)
			require.Equal(t, Response{Status: StatusOK, Value: []byte("old")}, out[0])
			for _, r := range out[1:3] {
				require.Equal(t, StatusServerError, r.Status)
				require.ErrorIs(t, r.Err, ErrServer)
				require.ErrorContains(t, r.Err, "object too large for cache")
				require.Zero(t, r.CAS)
			}
			require.Equal(t, Response{Status: StatusOK}, out[3])
			require.Equal(t, Response{Status: StatusOK, Value: []byte("a\r\nb")}, out[4])
			require.Equal(t, Response{Status: StatusNoOp}, out[5])

			// memcached drops the item a too-large set would have replaced.
			require.Equal(t, StatusMiss, do1(t, p, Request{Command: Get, Key: "present"}).Status)
			require.Equal(t, StatusMiss, do1(t, p, Request{Command: Get, Key: "big"}).Status)
			st := p.Stats()
			require.Equal(t, uint64(1), st.Dials, "one connection served every batch")
			require.Zero(t, st.Broken)
		})
	}
}

// TestSetValueTooLargeQuiet: a SERVER_ERROR carries no opaque, so after a
// quiet request its owner is unknown: the batch fails (ErrProtocol,
// ErrUnknownOutcome), the connection is dropped and the next batch works.
func TestSetValueTooLargeQuiet(t *testing.T) {
	proc := startProcess(t, mcproc.Options{MaxItemSize: "64k", ExtraArgs: []string{"-o", "slab_chunk_max=16384"}})
	p := newPool(t, proc.Addr(), Config{})
	_, err := p.Do(testCtx(t),
		Request{Command: Set, Key: "big", Value: bytes.Repeat([]byte("x"), 100<<10), Quiet: true},
		Request{Command: NoOp})
	require.ErrorIs(t, err, ErrUnknownOutcome)
	require.ErrorIs(t, err, ErrProtocol)
	require.ErrorIs(t, err, ErrServer)
	require.Equal(t, uint64(1), p.Stats().Broken)
	require.Equal(t, 0, p.Stats().Open)
	require.Equal(t, []Response{{Status: StatusOK}, {Status: StatusNoOp}},
		do(t, p, Request{Command: Set, Key: "small", Value: []byte("v")}, Request{Command: NoOp}))
}

// TestClientErrorAnswers sends memcached, on a raw connection, bytes that
// the encoder never produces and feeds its real answers to readAnswers:
// CLIENT_ERROR and ERROR give an error wrapping ErrClient.
func TestClientErrorAnswers(t *testing.T) {
	proc := mcproc.NewProcess(t)
	tests := []struct {
		name string
		raw  string
		reqs []Request
		// want are the answers read before the error.
		want []Response
	}{
		{"unknown command", "bogus\r\n", []Request{{Command: NoOp}}, nil},
		{"value longer than declared", "ms k 2 T0\r\nhiXX\r\n", []Request{{Command: Set, Key: "k"}}, nil},
		{"key of 251 bytes", "mg " + key250 + "k v\r\n", []Request{{Command: Get, Key: "k", ReturnValue: true}}, nil},
		{"bad value size", "ms k abc T0\r\n", []Request{{Command: Set, Key: "k"}}, nil},
		{"bad flag", "ms k 1 T0 Fx\r\nv\r\n", []Request{{Command: Set, Key: "k"}}, nil},
		{"after good answers", "mn\r\nmg k\r\nbogus\r\nmn\r\n",
			[]Request{{Command: NoOp}, {Command: Get, Key: "k"}, {Command: NoOp}, {Command: NoOp}},
			[]Response{{Status: StatusNoOp}, {Status: StatusMiss}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := rawExchange(t, proc.Addr(), tt.raw)
			out := make([]Response, len(tt.reqs))
			err := readAnswers(c.br, tt.reqs, out, DefaultMaxValueSize)
			require.ErrorIs(t, err, ErrClient)
			for i, want := range tt.want {
				require.Equal(t, want, out[i])
			}
		})
	}
}

// injectConn is a connection to a real memcached that slips extra bytes in
// front of its first write: a way to make the server answer ERROR to a
// batch sent by Do.
type injectConn struct {
	net.Conn
	inject []byte
}

func (c *injectConn) Write(b []byte) (int, error) {
	if c.inject != nil {
		extra := len(c.inject)
		n, err := c.Conn.Write(append(c.inject, b...))
		c.inject = nil
		return max(0, n-extra), err
	}
	return c.Conn.Write(b)
}

// TestDoClientError checks that Do reports an ERROR answer as ErrClient
// with ErrUnknownOutcome and drops the connection, which is out of step.
func TestDoClientError(t *testing.T) {
	proc := mcproc.NewProcess(t)
	var d net.Dialer
	first := true
	p := newPool(t, proc.Addr(), Config{MaxConns: 1, Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := d.DialContext(ctx, network, addr)
		if err != nil || !first {
			return nc, err
		}
		first = false
		return &injectConn{Conn: nc, inject: []byte("bogus\r\n")}, nil
	}})
	_, err := p.Do(testCtx(t), Request{Command: Set, Key: "k", Value: []byte("v")}, Request{Command: NoOp})
	require.ErrorIs(t, err, ErrClient)
	require.ErrorIs(t, err, ErrUnknownOutcome)
	require.Equal(t, uint64(1), p.Stats().Broken)
	require.Equal(t, []Response{{Status: StatusOK, Value: []byte("v")}},
		do(t, p, Request{Command: Get, Key: "k", ReturnValue: true}),
		"the set was applied although its batch failed: the outcome was unknown")
	require.Equal(t, uint64(2), p.Stats().Dials)
}

// TestValueRoundTrip stores values through the transport and through
// gomemcache and reads each back with the other.
func TestValueRoundTrip(t *testing.T) {
	proc := mcproc.NewProcess(t)
	p := newPool(t, proc.Addr(), Config{})
	mc := proc.Client()
	rng := rand.New(rand.NewSource(1))
	random := func(n int) []byte {
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	tests := []struct {
		name  string
		value []byte
	}{
		{"empty", []byte{}},
		{"one byte", []byte("x")},
		{"CRLF only", []byte("\r\n")},
		{"CRLF inside", []byte("a\r\nb\r\n\r\nc")},
		{"looks like answers", []byte("HD\r\nVA 3 c1\r\nabc\r\nEN\r\nMN\r\nSERVER_ERROR x\r\n")},
		{"looks like commands", []byte("\r\nmd k\r\nms k 1 T0\r\nx\r\nmn\r\n")},
		{"every byte", all},
		{"NUL and high bytes", []byte{0, 0xff, 0, '\r', 0, '\n', 0x80}},
		{"random 64 KiB", random(64 << 10)},
		{"random 1000 KiB", random(1000 * 1024)},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := "val" + string(rune('a'+i))
			set(t, p, key, string(tt.value), uint32(i))
			got := do1(t, p, Request{Command: Get, Key: key, ReturnValue: true, ReturnFlags: true})
			require.Equal(t, StatusOK, got.Status)
			require.True(t, bytes.Equal(tt.value, got.Value), "value read back differs")
			require.Equal(t, uint32(i), got.Flags)
			it, err := mc.Get(key)
			require.NoError(t, err)
			require.True(t, bytes.Equal(tt.value, it.Value), "gomemcache reads another value")

			require.NoError(t, mc.Set(&memcache.Item{Key: key + "-gm", Value: tt.value}))
			got = do1(t, p, Request{Command: Get, Key: key + "-gm", ReturnValue: true})
			require.True(t, bytes.Equal(tt.value, got.Value), "value stored by gomemcache differs")
		})
	}
	t.Run("several large values in one batch", func(t *testing.T) {
		var reqs []Request
		values := make([][]byte, 4)
		for i := range values {
			values[i] = random(1000 * 1024)
			k := "bigbatch" + string(rune('a'+i))
			reqs = append(reqs, Request{Command: Set, Key: k, Value: values[i]},
				Request{Command: Get, Key: k, ReturnValue: true})
		}
		out := do(t, p, reqs...)
		for i := range values {
			require.Equal(t, StatusOK, out[2*i].Status)
			require.True(t, bytes.Equal(values[i], out[2*i+1].Value))
		}
	})
}

// TestLargeBatchBothWays sends a batch whose requests and answers both
// exceed the sockets' buffers (32 sets and 32 gets of 1000 KiB): memcached
// stops reading while its answers wait, so the batch must be read while it
// is written. Before that fix it hung until the timeout.
func TestLargeBatchBothWays(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 64 MB over loopback")
	}
	proc := mcproc.NewProcess(t)
	p := newPool(t, proc.Addr(), Config{Timeout: 20 * time.Second})
	value := bytes.Repeat([]byte("0123456789abcdef"), 1000*1024/16)
	var reqs []Request
	for i := range 32 {
		k := fmt.Sprintf("large%d", i)
		v := append([]byte{byte(i)}, value[1:]...)
		reqs = append(reqs, Request{Command: Set, Key: k, Value: v}, Request{Command: Get, Key: k, ReturnValue: true})
	}
	out := do(t, p, reqs...)
	for i := range 32 {
		require.Equal(t, Response{Status: StatusOK}, out[2*i])
		require.Equal(t, StatusOK, out[2*i+1].Status)
		require.Equal(t, byte(i), out[2*i+1].Value[0])
		require.True(t, bytes.Equal(value[1:], out[2*i+1].Value[1:]))
	}
	require.Zero(t, p.Stats().Broken)
	// The connection is in step for the next (small) batch.
	require.Equal(t, []Response{{Status: StatusNoOp}}, do(t, p, Request{Command: NoOp}))
	require.Equal(t, uint64(1), p.Stats().Dials)
}

func TestKeys(t *testing.T) {
	proc := mcproc.NewProcess(t)
	p := newPool(t, proc.Addr(), Config{})
	mc := proc.Client()
	for _, key := range []string{key250, "k", "ключ", "a:b/c?d=e&f#g", strings.Repeat("é", 125)} {
		require.Len(t, key, min(len(key), MaxKeyLen))
		set(t, p, key, "v-"+key, 0)
		require.Equal(t, "v-"+key, string(do1(t, p, Request{Command: Get, Key: key, ReturnValue: true}).Value))
		it, err := mc.Get(key)
		require.NoError(t, err)
		require.Equal(t, "v-"+key, string(it.Value))
		require.Equal(t, StatusOK, do1(t, p, Request{Command: Delete, Key: key}).Status)
		require.Equal(t, StatusMiss, do1(t, p, Request{Command: Get, Key: key}).Status)
	}
}

// TestQuietMode checks that quiet successes get no answer and are reported
// as StatusOK (StatusMiss for a Get), and that the failures memcached still
// answers are matched to their own request by opaque.
func TestQuietMode(t *testing.T) {
	proc := mcproc.NewProcess(t)
	p := newPool(t, proc.Addr(), Config{})
	const wrongCAS = 1 << 60
	q := func(r Request) Request { r.Quiet = true; return r }
	tests := []struct {
		name  string
		setup map[string]string
		reqs  []Request
		want  []Response
		after map[string]string // "" = absent
	}{
		{
			name:  "every quiet answer",
			setup: map[string]string{"a": "A"},
			reqs: []Request{
				q(Request{Command: Delete, Key: "b"}),                                           // NF
				q(Request{Command: Set, Key: "a", Value: []byte("A2"), ReturnCAS: true}),        // silent
				q(Request{Command: Get, Key: "b", ReturnValue: true}),                           // silent miss
				q(Request{Command: Get, Key: "a", ReturnValue: true, ReturnFlags: true}),        // VA
				q(Request{Command: Set, Key: "a", Value: []byte("x"), Mode: ModeAdd}),           // NS
				q(Request{Command: Set, Key: "b", Value: []byte("x"), Mode: ModeReplace}),       // NS
				q(Request{Command: Set, Key: "a", Value: []byte("x"), CAS: wrongCAS}),           // EX
				q(Request{Command: Set, Key: "b", Value: []byte("x"), CAS: wrongCAS}),           // NF
				q(Request{Command: Delete, Key: "a", CAS: wrongCAS}),                            // EX
				q(Request{Command: Get, Key: "a"}),                                              // HD
				q(Request{Command: Delete, Key: "a"}),                                           // silent
				q(Request{Command: Set, Key: "c", Value: []byte("C"), Mode: ModeAdd, Flags: 3}), // silent
				{Command: NoOp},
			},
			want: []Response{
				{Status: StatusNotFound},
				{Status: StatusOK},
				{Status: StatusMiss},
				{Status: StatusOK, Value: []byte("A2")},
				{Status: StatusNotStored},
				{Status: StatusNotStored},
				{Status: StatusExists},
				{Status: StatusNotFound},
				{Status: StatusExists},
				{Status: StatusOK},
				{Status: StatusOK},
				{Status: StatusOK},
				{Status: StatusNoOp},
			},
			after: map[string]string{"a": "", "b": "", "c": "C"},
		},
		{
			name: "all quiet successes then a get",
			reqs: []Request{
				q(Request{Command: Set, Key: "x", Value: []byte("X")}),
				q(Request{Command: Set, Key: "y", Value: []byte("Y")}),
				q(Request{Command: Delete, Key: "x"}),
				q(Request{Command: Get, Key: "x", ReturnValue: true}),
				{Command: Get, Key: "y", ReturnValue: true},
			},
			want: []Response{{Status: StatusOK}, {Status: StatusOK}, {Status: StatusOK}, {Status: StatusMiss},
				{Status: StatusOK, Value: []byte("Y")}},
			after: map[string]string{"x": "", "y": "Y"},
		},
		{
			name:  "quiet failures between loud requests",
			setup: map[string]string{"l": "L"},
			reqs: []Request{
				{Command: Get, Key: "l", ReturnValue: true},
				q(Request{Command: Delete, Key: "nope"}),
				{Command: Get, Key: "nope"},
				q(Request{Command: Set, Key: "l", Value: []byte("x"), Mode: ModeAdd}),
				q(Request{Command: Delete, Key: "nope2"}),
				{Command: Delete, Key: "nope3"},
			},
			want: []Response{{Status: StatusOK, Value: []byte("L")}, {Status: StatusNotFound}, {Status: StatusMiss},
				{Status: StatusNotStored}, {Status: StatusNotFound}, {Status: StatusNotFound}},
			after: map[string]string{"l": "L"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.setup {
				set(t, p, k, v, 0)
			}
			require.Equal(t, tt.want, do(t, p, tt.reqs...))
			for k, v := range tt.after {
				r := do1(t, p, Request{Command: Get, Key: k, ReturnValue: true})
				if v == "" {
					require.Equal(t, StatusMiss, r.Status, k)
				} else {
					require.Equal(t, v, string(r.Value), k)
				}
			}
		})
	}
	require.Zero(t, p.Stats().Broken)
	require.Equal(t, uint64(1), p.Stats().Dials)
}
