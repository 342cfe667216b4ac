package meta

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
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
