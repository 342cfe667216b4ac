package meta

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
)

// fuzzLimit is the value size limit of FuzzReadAnswers: small, so that
// "VA <n>" over it is exercised as often as under it.
const fuzzLimit = 64

// fuzzRequests turns spec into a request list: one request per byte (at
// most 8; an empty spec is one NoOp). The low 2 bits choose the command
// (mg, ms, md, mn), then 4: quiet, 8: v, 16: c, 32: t, 64: f. As in Do, a
// NoOp and the last request are never quiet, unless bit 128 is set: then
// the list may be one Do would refuse, which must not break the parser
// either.
func fuzzRequests(spec []byte) []Request {
	if len(spec) == 0 {
		return []Request{{Command: NoOp}}
	}
	spec = spec[:min(len(spec), 8)]
	reqs := make([]Request, len(spec))
	for i, b := range spec {
		r := Request{Command: Command(b&3 + 1), Key: "k", Quiet: b&4 != 0,
			ReturnValue: b&8 != 0, ReturnCAS: b&16 != 0, ReturnTTL: b&32 != 0, ReturnFlags: b&64 != 0}
		if b&128 == 0 && (r.Command == NoOp || i == len(spec)-1) {
			r.Quiet = false
		}
		reqs[i] = r
	}
	return reqs
}

// doAccepts reports whether Do would send reqs (the parser's contract):
// the last request is not quiet, nor is any NoOp.
func doAccepts(reqs []Request) bool {
	for _, r := range reqs {
		if r.check() != nil {
			return false
		}
	}
	return !reqs[len(reqs)-1].Quiet
}

// fits reports whether st can answer a request with command c.
func fits(c Command, st Status) bool {
	switch st {
	case StatusOK, StatusServerError:
		return c != NoOp
	case StatusMiss:
		return c == Get
	case StatusNotFound, StatusExists:
		return c == Set || c == Delete
	case StatusNotStored:
		return c == Set
	case StatusNoOp:
		return c == NoOp
	}
	return false
}

// declared reports whether stream holds a "VA <size>" whose size is n.
func declared(stream []byte, n int) bool {
	for rest := stream; ; {
		i := bytes.Index(rest, []byte("VA "))
		if i < 0 {
			return false
		}
		rest = rest[i+3:]
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		if size, err := strconv.ParseUint(string(rest[:j]), 10, 64); err == nil && size == uint64(n) {
			return true
		}
	}
}

// FuzzReadAnswers feeds arbitrary bytes to the answer parser as the
// server's answer stream. It must not panic, must end (the stream is
// finite), must never return a value longer than its VA size or the limit,
// and must either fill every response consistently or return an error of a
// known kind.
func FuzzReadAnswers(f *testing.F) {
	f.Add([]byte{8}, []byte("VA 3 c1\r\nabc\r\n"))
	f.Fuzz(func(t *testing.T, spec, stream []byte) {
		reqs := fuzzRequests(spec)
		br := bufio.NewReaderSize(bytes.NewReader(stream), maxLine)
		out := make([]Response, len(reqs))
		err := readAnswers(br, reqs, out, fuzzLimit)

		for i, r := range out {
			if r.Value == nil {
				continue
			}
			if len(r.Value) > fuzzLimit || cap(r.Value) != len(r.Value) {
				t.Fatalf("response %d: value of %d bytes (cap %d), limit %d", i, len(r.Value), cap(r.Value), fuzzLimit)
			}
			if err == nil && reqs[i].Command != Get {
				// After an error, out is unspecified: the answer that did
				// not fit may be in it.
				t.Fatalf("response %d: a value for %s", i, reqs[i].Command)
			}
			if !declared(stream, len(r.Value)) || !bytes.Contains(stream, r.Value) {
				t.Fatalf("response %d: value %q is not a declared VA block of the stream", i, r.Value)
			}
		}
		if err != nil {
			if !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrClient) &&
				!errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("error of an unknown kind: %v", err)
			}
			return
		}
		for i, r := range out {
			if r.Status == 0 {
				t.Fatalf("no error, but response %d was not filled", i)
			}
		}
		if !doAccepts(reqs) {
			return // only robustness is asked of the parser then
		}
		for i, r := range out {
			if !fits(reqs[i].Command, r.Status) {
				t.Fatalf("response %d: status %s for %s", i, r.Status, reqs[i].Command)
			}
			if (r.Status == StatusServerError) != (r.Err != nil) || r.Err != nil && !errors.Is(r.Err, ErrServer) {
				t.Fatalf("response %d: status %s with Err %v", i, r.Status, r.Err)
			}
			if r.Status == StatusOK && reqs[i].Command == Get && reqs[i].ReturnValue && r.Value == nil {
				t.Fatalf("response %d: a hit without the value asked for", i)
			}
		}
	})
}

// TestFuzzRequests pins the decoding of the fuzz spec.
func TestFuzzRequests(t *testing.T) {
	tests := []struct {
		spec []byte
		want []Request
	}{
		{nil, []Request{{Command: NoOp}}},
		{[]byte{0x78}, []Request{{Command: Get, Key: "k", ReturnValue: true, ReturnCAS: true, ReturnTTL: true, ReturnFlags: true}}},
		{[]byte{1 | 4, 3 | 4, 2 | 4}, []Request{{Command: Set, Key: "k", Quiet: true}, {Command: NoOp, Key: "k"}, {Command: Delete, Key: "k"}}},
		{[]byte{3 | 4 | 128}, []Request{{Command: NoOp, Key: "k", Quiet: true}}},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, fuzzRequests(tt.spec), "%x", tt.spec)
	}
	require.Len(t, fuzzRequests(make([]byte, 20)), 8)
}

var updateFuzzSeeds = flag.Bool("update-fuzz-seeds", false,
	"rewrite the captured_* seeds of testdata/fuzz/FuzzReadAnswers with the answers of a real memcached")

// seedDir holds FuzzReadAnswers' seed corpus.
const seedDir = "testdata/fuzz/FuzzReadAnswers"

// capture is a batch whose real answers are a seed of FuzzReadAnswers.
type capture struct {
	name string
	// spec is the seed's first argument: the requests the parser expects
	// (fuzzRequests).
	spec []byte
	// setup prepares the items before the batch (may be nil).
	setup func(t *testing.T, p *Pool)
	// adjust changes what the parser does not look at before the batch is
	// sent: keys, values, CAS, mode, touch (may be nil).
	adjust func(reqs []Request)
	// raw, when set, is sent instead of the encoded requests.
	raw string
	// wantErr is readAnswers' error on the real answers.
	wantErr error
}

// setK stores "hello" under k with client flags 7 and a TTL of 1000 s.
func setK(t *testing.T, p *Pool) {
	do(t, p, Request{Command: Set, Key: "k", Value: []byte("hello"), Flags: 7, TTL: 1000})
}

// deleteK removes k.
func deleteK(t *testing.T, p *Pool) { do(t, p, Request{Command: Delete, Key: "k"}) }

// captures are the real batches behind the captured_* seeds: every answer
// code, flags, values with CRLF inside, a mixed quiet pipeline, errors.
var captures = []capture{
	{name: "mg_hit_all_flags", spec: []byte{0x78}, setup: setK},
	{name: "mg_hit_no_value", spec: []byte{0x70}, setup: setK},
	{name: "mg_miss", spec: []byte{0x78}, setup: deleteK},
	{name: "mg_touch", spec: []byte{0x28}, setup: setK, adjust: func(r []Request) { r[0].Touch, r[0].TTL = true, 60 }},
	{name: "mg_no_expiry", spec: []byte{0x68}, setup: func(t *testing.T, p *Pool) {
		do(t, p, Request{Command: Set, Key: "k", Value: []byte("forever")})
	}},
	{name: "mg_ttl_past", spec: []byte{0x20}, setup: setK, raw: "mg k T-1 t\r\n"},
	{name: "mg_binary_value", spec: []byte{0x18}, setup: func(t *testing.T, p *Pool) {
		do(t, p, Request{Command: Set, Key: "k", Value: []byte("\x00\r\n\xff\r\nVA 1\r\n")})
	}},
	{name: "mg_empty_value", spec: []byte{0x08}, setup: func(t *testing.T, p *Pool) {
		do(t, p, Request{Command: Set, Key: "k", Value: []byte{}})
	}},
	{name: "quiet_mg_hit_mn", spec: []byte{0x0c, 0x03}, setup: setK},
	{name: "quiet_mg_miss_mn", spec: []byte{0x0c, 0x03}, setup: deleteK},
	{name: "ms_return_cas", spec: []byte{0x11}, adjust: func(r []Request) { r[0].Value = []byte("v") }},
	{name: "ms_cas_mismatch", spec: []byte{0x01}, setup: setK, adjust: func(r []Request) { r[0].CAS = 1 }},
	{name: "ms_cas_missing", spec: []byte{0x01}, setup: deleteK, adjust: func(r []Request) { r[0].CAS = 1 }},
	{name: "ms_add_exists", spec: []byte{0x01}, setup: setK, adjust: func(r []Request) { r[0].Mode = ModeAdd }},
	{name: "ms_too_large", spec: []byte{0x01}, adjust: func(r []Request) { r[0].Value = make([]byte, 2<<20) }},
	{name: "quiet_ms_too_large_mn", spec: []byte{0x05, 0x03}, wantErr: ErrProtocol,
		adjust: func(r []Request) { r[0].Value = make([]byte, 2<<20) }},
	{name: "md_hit", spec: []byte{0x02}, setup: setK},
	{name: "md_miss", spec: []byte{0x02}, setup: deleteK},
	{name: "mixed_quiet_pipeline", spec: []byte{0x15, 0x06, 0x78, 0x0c, 0x01, 0x03}, setup: setK,
		adjust: func(r []Request) {
			r[0].Key, r[0].Value = "s", []byte("saved")
			r[1].Key = "missing"
			r[4].Key, r[4].Mode = "k", ModeAdd
		}},
	{name: "client_error_bad_chunk", spec: []byte{0x01}, raw: "ms k 2 T0\r\nhiXX\r\n", wantErr: ErrClient},
	{name: "error_unknown_command", spec: []byte{0x03}, raw: "bogus\r\nmn\r\n", wantErr: ErrClient},
}

// TestFuzzReadAnswersCaptured sends the batches of captures to a real
// memcached and checks how readAnswers takes its answers, and that each
// has its captured_* seed. With -update-fuzz-seeds it rewrites the seeds
// with the answers it got:
//
//	go test ./internal/meta -run FuzzReadAnswersCaptured -update-fuzz-seeds
func TestFuzzReadAnswersCaptured(t *testing.T) {
	proc := mcproc.NewProcess(t)
	p := newPool(t, proc.Addr(), Config{})
	for _, c := range captures {
		t.Run(c.name, func(t *testing.T) {
			if c.setup != nil {
				c.setup(t, p)
			}
			reqs := fuzzRequests(c.spec)
			expect := slices.Clone(reqs)
			if c.adjust != nil {
				c.adjust(reqs)
			}
			raw := []byte(c.raw)
			if c.raw == "" {
				for i := range reqs {
					opaque := -1
					if reqs[i].Quiet {
						opaque = i
					}
					raw = reqs[i].appendTo(raw, opaque)
				}
			}
			nc, err := net.DialTimeout("tcp", proc.Addr(), 5*time.Second)
			require.NoError(t, err)
			defer nc.Close()
			require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))
			_, err = nc.Write(raw)
			require.NoError(t, err)
			var stream bytes.Buffer
			br := bufio.NewReaderSize(io.TeeReader(nc, &stream), maxLine)
			err = readAnswers(br, expect, make([]Response, len(expect)), DefaultMaxValueSize)
			if c.wantErr == nil {
				require.NoError(t, err, "%q", stream.Bytes())
			} else {
				require.ErrorIs(t, err, c.wantErr, "%q", stream.Bytes())
			}

			file := filepath.Join(seedDir, "captured_"+c.name)
			if *updateFuzzSeeds {
				seed := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n[]byte(%q)\n", c.spec, stream.Bytes())
				require.NoError(t, os.WriteFile(file, []byte(seed), 0o644))
				return
			}
			require.FileExists(t, file, "run with -update-fuzz-seeds to capture it")
		})
	}
}
