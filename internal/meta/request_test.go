package meta

import (
	"context"
	"strings"
	"testing"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/stretchr/testify/require"
)

// TestAppendTo pins the wire form of every command and flag.
func TestAppendTo(t *testing.T) {
	tests := []struct {
		name   string
		req    Request
		opaque int
		want   string
	}{
		{"mg bare", Request{Command: Get, Key: "k"}, -1, "mg k\r\n"},
		{"mg all flags", Request{Command: Get, Key: "k", ReturnValue: true, ReturnCAS: true, ReturnTTL: true, ReturnFlags: true}, -1, "mg k v c t f\r\n"},
		{"mg touch", Request{Command: Get, Key: "k", Touch: true, TTL: 60}, -1, "mg k T60\r\n"},
		{"mg touch zero", Request{Command: Get, Key: "k", Touch: true}, -1, "mg k T0\r\n"},
		{"mg touch negative", Request{Command: Get, Key: "k", Touch: true, TTL: -1}, -1, "mg k T-1\r\n"},
		{"mg TTL without touch", Request{Command: Get, Key: "k", TTL: 60}, -1, "mg k\r\n"},
		{"mg quiet", Request{Command: Get, Key: "k", ReturnValue: true, Quiet: true}, 7, "mg k v q O7\r\n"},
		{"ms plain", Request{Command: Set, Key: "k", Value: []byte("abc")}, -1, "ms k 3 T0\r\nabc\r\n"},
		{"ms empty", Request{Command: Set, Key: "k"}, -1, "ms k 0 T0\r\n\r\n"},
		{"ms add", Request{Command: Set, Key: "k", Value: []byte("v"), Mode: ModeAdd, TTL: 10}, -1, "ms k 1 ME T10\r\nv\r\n"},
		{"ms replace", Request{Command: Set, Key: "k", Value: []byte("v"), Mode: ModeReplace, TTL: -1}, -1, "ms k 1 MR T-1\r\nv\r\n"},
		{"ms cas flags return", Request{Command: Set, Key: "k", Value: []byte("v"), CAS: 1<<64 - 1, TTL: 5, Flags: 1<<32 - 1, ReturnCAS: true}, -1,
			"ms k 1 C18446744073709551615 T5 F4294967295 c\r\nv\r\n"},
		{"ms value with CRLF", Request{Command: Set, Key: "k", Value: []byte("a\r\nb")}, -1, "ms k 4 T0\r\na\r\nb\r\n"},
		{"ms quiet", Request{Command: Set, Key: "k", Value: []byte("v"), Quiet: true}, 0, "ms k 1 T0 q O0\r\nv\r\n"},
		{"md", Request{Command: Delete, Key: "k"}, -1, "md k\r\n"},
		{"md cas quiet", Request{Command: Delete, Key: "k", CAS: 42, Quiet: true}, 12, "md k C42 q O12\r\n"},
		{"mn", Request{Command: NoOp}, -1, "mn\r\n"},
		{"mn ignores key", Request{Command: NoOp, Key: "k"}, -1, "mn\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, tt.req.check())
			got := tt.req.appendTo([]byte("prefix:"), tt.opaque)
			require.Equal(t, "prefix:"+tt.want, string(got))
		})
	}
}

func TestValidKey(t *testing.T) {
	tests := []struct {
		key  string
		want bool
	}{
		{"k", true},
		{key250, true},
		{"ключ", true}, // bytes >= 0x80 are allowed
		{"a:b-c_d.e/f", true},
		{"", false},
		{key250 + "k", false},
		{"a b", false},
		{"a\tb", false},
		{"a\r\nb", false},
		{"a\nb", false},
		{"a\x00b", false},
		{"\x01", false},
		{"a\x7f", false},
		{" k", false},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, validKey(tt.key), "%q", tt.key)
	}
}

// TestDoRefusesBadRequests checks that a batch with a request that cannot
// be encoded is refused with ErrBadRequest and that nothing is sent: no
// connection is opened and memcached sees no command.
func TestDoRefusesBadRequests(t *testing.T) {
	proc := mcproc.NewProcess(t)
	ok := Request{Command: Set, Key: "good", Value: []byte("v")}
	tests := []struct {
		name string
		reqs []Request
	}{
		{"empty batch", nil},
		{"empty key", []Request{{Command: Get}}},
		{"key of 251 bytes", []Request{{Command: Get, Key: key250 + "k"}}},
		{"key with space", []Request{ok, {Command: Set, Key: "a b", Value: []byte("v")}}},
		{"key with tab", []Request{{Command: Delete, Key: "a\tb"}}},
		{"key with CRLF", []Request{ok, {Command: Get, Key: "a\r\nmd good"}}},
		{"key with NUL", []Request{{Command: Get, Key: "a\x00"}}},
		{"key with DEL", []Request{{Command: Get, Key: "a\x7f"}}},
		{"unknown command 0", []Request{{Key: "k"}}},
		{"unknown command 9", []Request{{Command: 9, Key: "k"}}},
		{"unknown set mode", []Request{{Command: Set, Key: "k", Mode: 3}}},
		{"quiet noop", []Request{{Command: NoOp, Quiet: true}, {Command: Get, Key: "k"}}},
		{"last request quiet", []Request{ok, {Command: Delete, Key: "k", Quiet: true}}},
		{"only request quiet", []Request{{Command: Get, Key: "k", Quiet: true}}},
	}
	p := newPool(t, proc.Addr(), Config{})
	before := stat(t, proc, "total_connections")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := p.Do(testCtx(t), tt.reqs...)
			require.ErrorIs(t, err, ErrBadRequest)
			require.NotErrorIs(t, err, ErrUnknownOutcome)
			require.Len(t, out, len(tt.reqs))
			for _, r := range out {
				require.Zero(t, r)
			}
		})
	}
	t.Run("DoInto with a short out", func(t *testing.T) {
		err := p.DoInto(testCtx(t), []Request{ok, ok}, make([]Response, 1))
		require.ErrorIs(t, err, ErrBadRequest)
	})
	st := p.Stats()
	require.Zero(t, st.Dials)
	require.Zero(t, st.Batches)
	require.Zero(t, st.Requests)
	// The only new connection is the one asking for the stats.
	require.Equal(t, before+1, stat(t, proc, "total_connections"), "no connection reached memcached")
	require.Zero(t, stat(t, proc, "cmd_set"))
	require.Zero(t, stat(t, proc, "cmd_get"))
}

// TestDoCanceledContext checks that a ctx already done sends nothing, on a
// fresh pool (no dial) and on a pool with an idle connection (it stays
// idle and usable).
func TestDoCanceledContext(t *testing.T) {
	proc := mcproc.NewProcess(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	set := Request{Command: Set, Key: "k", Value: []byte("v")}

	p := newPool(t, proc.Addr(), Config{})
	_, err := p.Do(ctx, set)
	require.ErrorIs(t, err, ErrNotSent)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, Stats{}, p.Stats())

	do(t, p, Request{Command: NoOp})
	_, err = p.Do(ctx, set)
	require.ErrorIs(t, err, ErrNotSent)
	st := p.Stats()
	require.Equal(t, uint64(1), st.Batches)
	require.Equal(t, 1, st.Idle)
	require.Zero(t, stat(t, proc, "cmd_set"))
	require.Equal(t, StatusMiss, do1(t, p, Request{Command: Get, Key: "k"}).Status)
	require.Equal(t, uint64(1), p.Stats().Dials, "the idle connection was reused")
}

func TestStatusAndCommandStrings(t *testing.T) {
	for s, want := range map[Status]string{StatusOK: "HD", StatusMiss: "EN", StatusNotFound: "NF",
		StatusNotStored: "NS", StatusExists: "EX", StatusNoOp: "MN", StatusServerError: "SERVER_ERROR", 0: "status(0)"} {
		require.Equal(t, want, s.String())
	}
	for c, want := range map[Command]string{Get: "mg", Set: "ms", Delete: "md", NoOp: "mn", 0: "command(0)"} {
		require.Equal(t, want, c.String())
	}
	require.True(t, strings.HasPrefix(ErrBadRequest.Error(), "meta: "))
}

func TestDoRefusesAValueOverTheLimit(t *testing.T) {
	p := NewPool(Config{Addr: "127.0.0.1:1", MaxValueSize: 8})
	t.Cleanup(func() { _ = p.Close() })
	_, err := p.Do(context.Background(), Request{Command: Set, Key: "k", Value: make([]byte, 9)})
	require.ErrorIs(t, err, ErrBadRequest)
	require.Zero(t, p.Stats().Dials, "nothing dialled, nothing sent")
}
