package meta

import (
	"bufio"
	"bytes"
	"github.com/bradfitz/gomemcache/memcache"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/stretchr/testify/require"
)

// readStream runs readAnswers over a fixed answer stream, with the reader
// size the pool uses.
// It also returns how many bytes were left unread.
func readStream(reqs []Request, stream string, limit int) ([]Response, int, error) {
	br := bufio.NewReaderSize(strings.NewReader(stream), maxLine)
	out := make([]Response, len(reqs))
	err := readAnswers(br, reqs, out, limit)
	rest, _ := io.ReadAll(br)
	return out, len(rest), err
}

var (
	rGet  = Request{Command: Get, Key: "k"}
	rGetV = Request{Command: Get, Key: "k", ReturnValue: true}
	rGetQ = Request{Command: Get, Key: "k", ReturnValue: true, Quiet: true}
	rSet  = Request{Command: Set, Key: "k"}
	rSetQ = Request{Command: Set, Key: "k", Quiet: true}
	rDel  = Request{Command: Delete, Key: "k"}
	rDelQ = Request{Command: Delete, Key: "k", Quiet: true}
	rNoOp = Request{Command: NoOp}
)

// TestReadAnswersSynthetic feeds the parser hand-written answer streams:
// well-formed ones, and the truncated, malformed or mismatched ones that
// real memcached does not produce.
func TestReadAnswersSynthetic(t *testing.T) {
	long := strings.Repeat("x", 10000)
	tests := []struct {
		name    string
		reqs    []Request
		stream  string
		want    []Response // when no error
		wantErr error      // errors.Is target
		rest    int        // bytes left unread
		limit   int        // value size limit; default 100,000
	}{
		{name: "VA with flags and CRLF in the value", reqs: []Request{rGetV},
			stream: "VA 4 c12 t-1 f7\r\na\r\nb\r\n",
			want:   []Response{{Status: StatusOK, Value: []byte("a\r\nb"), CAS: 12, TTL: -1, Flags: 7}}},
		{name: "VA empty value", reqs: []Request{rGetV}, stream: "VA 0\r\n\r\n",
			want: []Response{{Status: StatusOK, Value: []byte{}}}},
		{name: "VA value longer than the reader", reqs: []Request{rGetV}, stream: "VA 10000\r\n" + long + "\r\n",
			want: []Response{{Status: StatusOK, Value: []byte(long)}}},
		{name: "HD with c t f and unknown flags", reqs: []Request{rGet},
			stream: "HD c18446744073709551615 t100 f4294967295 kfoo b W X Z s5\r\n",
			want:   []Response{{Status: StatusOK, CAS: 1<<64 - 1, TTL: 100, Flags: 1<<32 - 1}}},
		{name: "HD with extra spaces", reqs: []Request{rGet}, stream: "HD  c5  \r\n",
			want: []Response{{Status: StatusOK, CAS: 5}}},
		{name: "t past expiry as unsigned", reqs: []Request{rGet}, stream: "HD t4294967232\r\n",
			want: []Response{{Status: StatusOK, TTL: 0}}},
		{name: "every code", reqs: []Request{rGet, rSet, rSet, rDel, rSet, rDel, rNoOp},
			stream: "EN\r\nHD c3\r\nNS\r\nNF\r\nEX\r\nHD\r\nMN\r\n",
			want: []Response{{Status: StatusMiss}, {Status: StatusOK, CAS: 3}, {Status: StatusNotStored},
				{Status: StatusNotFound}, {Status: StatusExists}, {Status: StatusOK}, {Status: StatusNoOp}}},
		{name: "quiet answers by opaque", reqs: []Request{rSetQ, rDelQ, rGetQ, rDelQ, rNoOp},
			stream: "VA 1 O2\r\nv\r\nNF O3\r\nMN\r\n",
			want:   []Response{{Status: StatusOK}, {Status: StatusOK}, {Status: StatusOK, Value: []byte("v")}, {Status: StatusNotFound}, {Status: StatusNoOp}}},
		{name: "quiet get miss is silent", reqs: []Request{rGetQ, rGet}, stream: "EN\r\n",
			want: []Response{{Status: StatusMiss}, {Status: StatusMiss}}},
		{name: "server error for a loud request", reqs: []Request{rSet, rNoOp},
			stream: "SERVER_ERROR out of memory storing object\r\nMN\r\n",
			want:   []Response{{Status: StatusServerError}, {Status: StatusNoOp}}},
		{name: "answers past the batch are left", reqs: []Request{rNoOp}, stream: "MN\r\nMN\r\n",
			want: []Response{{Status: StatusNoOp}}, rest: 4},

		{name: "empty stream", reqs: []Request{rNoOp}, stream: "", wantErr: io.EOF},
		{name: "stream ends between answers", reqs: []Request{rNoOp, rNoOp}, stream: "MN\r\n", wantErr: io.EOF},
		{name: "truncated line", reqs: []Request{rNoOp}, stream: "MN", wantErr: io.ErrUnexpectedEOF},
		{name: "truncated value", reqs: []Request{rGetV}, stream: "VA 10\r\nabc", wantErr: io.ErrUnexpectedEOF},
		{name: "value without its CRLF", reqs: []Request{rGetV}, stream: "VA 3\r\nabc", wantErr: io.ErrUnexpectedEOF},
		{name: "value followed by other bytes", reqs: []Request{rGetV}, stream: "VA 3\r\nabcd\r\n", wantErr: ErrProtocol},
		{name: "value at the limit", reqs: []Request{rGetV}, stream: "VA 100\r\n" + strings.Repeat("x", 100) + "\r\n", limit: 100,
			want: []Response{{Status: StatusOK, Value: []byte(strings.Repeat("x", 100))}}},
		{name: "value over the limit", reqs: []Request{rGetV}, stream: "VA 101\r\n" + strings.Repeat("x", 101) + "\r\n", limit: 100, wantErr: ErrProtocol},
		{name: "huge value size", reqs: []Request{rGetV}, stream: "VA 2147483647\r\n", wantErr: ErrProtocol},
		{name: "value size out of range", reqs: []Request{rGetV}, stream: "VA 99999999999\r\n", wantErr: ErrProtocol},
		{name: "negative value size", reqs: []Request{rGetV}, stream: "VA -1\r\n", wantErr: ErrProtocol},
		{name: "VA without size", reqs: []Request{rGetV}, stream: "VA\r\n", wantErr: ErrProtocol},
		{name: "line without CR", reqs: []Request{rNoOp}, stream: "MN\n", wantErr: ErrProtocol},
		{name: "empty line", reqs: []Request{rNoOp}, stream: "\r\n", wantErr: ErrProtocol},
		{name: "one letter", reqs: []Request{rNoOp}, stream: "M\r\n", wantErr: ErrProtocol},
		{name: "code glued to text", reqs: []Request{rNoOp}, stream: "MNX\r\n", wantErr: ErrProtocol},
		{name: "unknown code", reqs: []Request{rGet}, stream: "XY\r\n", wantErr: ErrProtocol},
		{name: "END of the text protocol", reqs: []Request{rGet}, stream: "END\r\n", wantErr: ErrProtocol},
		{name: "line longer than the reader", reqs: []Request{rGet}, stream: "HD " + strings.Repeat("k", maxLine) + "\r\n", wantErr: ErrProtocol},
		{name: "bad CAS", reqs: []Request{rGet}, stream: "HD cX\r\n", wantErr: ErrProtocol},
		{name: "empty CAS", reqs: []Request{rGet}, stream: "HD c\r\n", wantErr: ErrProtocol},
		{name: "negative flags", reqs: []Request{rGet}, stream: "HD f-1\r\n", wantErr: ErrProtocol},
		{name: "flags over 32 bits", reqs: []Request{rGet}, stream: "HD f4294967296\r\n", wantErr: ErrProtocol},
		{name: "TTL over 32 bits", reqs: []Request{rGet}, stream: "HD t4294967296\r\n", wantErr: ErrProtocol},
		{name: "bad opaque", reqs: []Request{rDelQ, rNoOp}, stream: "NF O-1\r\nMN\r\n", wantErr: ErrProtocol},
		{name: "HD for a get that asked for the value", reqs: []Request{rGetV}, stream: "HD\r\n", wantErr: ErrProtocol},
		{name: "EN for a set", reqs: []Request{rSet}, stream: "EN\r\n", wantErr: ErrProtocol},
		{name: "NS for a delete", reqs: []Request{rDel}, stream: "NS\r\n", wantErr: ErrProtocol},
		{name: "VA for a set", reqs: []Request{rSet}, stream: "VA 1\r\nx\r\n", wantErr: ErrProtocol},
		{name: "HD for mn", reqs: []Request{rNoOp}, stream: "HD\r\n", wantErr: ErrProtocol},
		{name: "MN for a get", reqs: []Request{rGet}, stream: "MN\r\n", wantErr: ErrProtocol},
		{name: "opaque on a loud request", reqs: []Request{rGet}, stream: "EN O0\r\n", wantErr: ErrProtocol},
		{name: "opaque past the batch", reqs: []Request{rDelQ, rNoOp}, stream: "NF O9\r\nMN\r\n", wantErr: ErrProtocol},
		{name: "opaque of an earlier request", reqs: []Request{rDelQ, rDelQ, rNoOp}, stream: "NF O1\r\nNF O0\r\nMN\r\n", wantErr: ErrProtocol},
		{name: "quiet success answered", reqs: []Request{rSetQ, rNoOp}, stream: "HD\r\nMN\r\n", wantErr: ErrProtocol},
		{name: "server error after a quiet request", reqs: []Request{rSetQ, rNoOp},
			stream: "SERVER_ERROR object too large for cache\r\nMN\r\n", wantErr: ErrServer},
		{name: "server error for mn", reqs: []Request{rNoOp}, stream: "SERVER_ERROR busy\r\n", wantErr: ErrServer},
		{name: "client error", reqs: []Request{rSet}, stream: "CLIENT_ERROR bad data chunk\r\n", wantErr: ErrClient},
		{name: "error", reqs: []Request{rNoOp}, stream: "ERROR\r\n", wantErr: ErrClient},
		{name: "ERROR with text is not ERROR", reqs: []Request{rNoOp}, stream: "ERRORS\r\n", wantErr: ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limit := tt.limit
			if limit == 0 {
				limit = 100_000
			}
			out, rest, err := readStream(tt.reqs, tt.stream, limit)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				if tt.wantErr == ErrServer && tt.name != "server error for a loud request" {
					require.ErrorIs(t, err, ErrProtocol, "a SERVER_ERROR without its owner is a protocol error")
				}
				return
			}
			require.NoError(t, err)
			for i := range out {
				if tt.want[i].Status == StatusServerError {
					require.ErrorIs(t, out[i].Err, ErrServer)
					require.ErrorContains(t, out[i].Err, "out of memory storing object")
					out[i].Err = nil
				}
			}
			require.Equal(t, tt.want, out)
			require.Equal(t, tt.rest, rest)
		})
	}
}

// TestReadAnswersValueIsCopied: a Value is the caller's: its capacity ends
// with it (an append cannot overwrite the CRLF or the next value).
func TestReadAnswersValueIsCopied(t *testing.T) {
	out, _, err := readStream([]Request{rGetV, rGetV}, "VA 2\r\nab\r\nVA 2\r\ncd\r\n", 100)
	require.NoError(t, err)
	require.Equal(t, 2, cap(out[0].Value))
	_ = append(out[0].Value, 'X')
	require.Equal(t, "cd", string(out[1].Value))
}

// TestTouchPastTTLAnswer feeds the parser real memcached bytes: "mg k T-1
// t" (touch to the past before "t", which the encoder never sends) makes
// memcached 1.6.18 print the remaining time as an unsigned wrap-around.
func TestTouchPastTTLAnswer(t *testing.T) {
	proc := mcproc.NewProcess(t)
	c := rawExchange(t, proc.Addr(), "ms k 2 T100\r\nhi\r\nmg k T-1 t v\r\nmg k v\r\n")
	line, err := c.br.Peek(len("HD\r\nVA 2 t4294"))
	require.NoError(t, err)
	require.Contains(t, string(line), "VA 2 t4294", "memcached's own answer")
	out := make([]Response, 3)
	require.NoError(t, readAnswers(c.br, []Request{rSet, rGetV, rGetV}, out, 100))
	require.Equal(t, []Response{{Status: StatusOK}, {Status: StatusOK, Value: []byte("hi"), TTL: 0}, {Status: StatusMiss}}, out)
}

// TestMaxValueSize: a value larger than Config.MaxValueSize is refused
// before it is read; the connection is dropped.
func TestMaxValueSize(t *testing.T) {
	proc := mcproc.NewProcess(t)
	p := newPool(t, proc.Addr(), Config{MaxValueSize: 100})
	do(t, p, Request{Command: Set, Key: "small", Value: bytes.Repeat([]byte("s"), 100)})
	// The pool refuses to send the big value; another client stores it.
	require.NoError(t, proc.Client().Set(&memcache.Item{Key: "big", Value: bytes.Repeat([]byte("b"), 101)}))
	require.Len(t, do1(t, p, Request{Command: Get, Key: "small", ReturnValue: true}).Value, 100)
	_, err := p.Do(testCtx(t), Request{Command: Get, Key: "big", ReturnValue: true})
	require.ErrorIs(t, err, ErrProtocol)
	require.ErrorIs(t, err, ErrUnknownOutcome)
	require.ErrorContains(t, err, "over the limit of 100")
	require.Equal(t, uint64(1), p.Stats().Broken)
	require.Equal(t, Response{Status: StatusOK}, do1(t, p, Request{Command: Get, Key: "big"}))
}

// fakeServerForParserEdgeCases is NOT memcached: a loopback listener that
// reads one request line and writes a canned answer, then closes. It only
// gives Do the broken streams real memcached never sends.
func fakeServerForParserEdgeCases(t *testing.T, answer string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = bufio.NewReader(c).ReadString('\n')
			_, _ = c.Write([]byte(answer))
			_ = c.Close()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		<-done
	})
	return l.Addr().String()
}

// TestDoBrokenAnswers: an answer stream that breaks off or makes no sense
// fails the batch with ErrUnknownOutcome and drops the connection.
func TestDoBrokenAnswers(t *testing.T) {
	tests := []struct {
		name    string
		answer  string
		wantErr error
	}{
		{"garbage", "hello world\r\n", ErrProtocol},
		{"closed without answer", "", io.EOF},
		{"truncated line", "VA 5 c", io.ErrUnexpectedEOF},
		{"truncated value", "VA 5\r\nab", io.ErrUnexpectedEOF},
		{"endless line", strings.Repeat("A", 2*maxLine), ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPool(t, fakeServerForParserEdgeCases(t, tt.answer), Config{})
			_, err := p.Do(testCtx(t), Request{Command: Get, Key: "k", ReturnValue: true})
			require.ErrorIs(t, err, ErrUnknownOutcome)
			require.ErrorIs(t, err, tt.wantErr)
			require.Equal(t, uint64(1), p.Stats().Broken)
			require.Equal(t, 0, p.Stats().Open)
		})
	}
}
