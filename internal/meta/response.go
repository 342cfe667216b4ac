package meta

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// Status is the outcome of one request, from the answer's two-letter code.
type Status uint8

const (
	// StatusOK is a success: HD, or VA for a Get that asked for the value.
	StatusOK Status = iota + 1
	// StatusMiss is a Get of a missing item (EN).
	StatusMiss
	// StatusNotFound is a Set with CAS, or a Delete, of a missing item (NF).
	StatusNotFound
	// StatusNotStored is an add over an existing item or a replace of a
	// missing one (NS).
	StatusNotStored
	// StatusExists is a CAS mismatch (EX).
	StatusExists
	// StatusNoOp is the answer to NoOp (MN).
	StatusNoOp
	// StatusServerError is a SERVER_ERROR answer (for example "object too
	// large for cache" or "out of memory"); Response.Err tells the message.
	StatusServerError
)

// String returns the wire code of s.
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "HD"
	case StatusMiss:
		return "EN"
	case StatusNotFound:
		return "NF"
	case StatusNotStored:
		return "NS"
	case StatusExists:
		return "EX"
	case StatusNoOp:
		return "MN"
	case StatusServerError:
		return "SERVER_ERROR"
	}
	return "status(" + strconv.Itoa(int(s)) + ")"
}

// Response is the answer to one Request.
type Response struct {
	// Status is the outcome.
	Status Status
	// Value is the item data of a Get that asked for it (nil otherwise).
	// It is owned by the caller.
	Value []byte
	// CAS is the item's CAS id, when asked for (Get) or returned by a Set
	// with ReturnCAS.
	CAS uint64
	// TTL is the item's remaining time to live in seconds, when asked for;
	// -1 means it never expires, 0 that it expires now. A Get with Touch
	// returns the TTL the item had before the touch (memcached applies the
	// flags in order and "T" is sent last).
	TTL int32
	// Flags are the item's client flags, when asked for.
	Flags uint32
	// Err is the server's message for StatusServerError.
	Err error
}

// Errors of the protocol layer.
var (
	// ErrProtocol is an answer that does not fit the protocol or the
	// request it answers. The connection is closed.
	ErrProtocol = errors.New("meta: protocol error")
	// ErrServer is wrapped by Response.Err for a SERVER_ERROR answer.
	ErrServer = errors.New("meta: server error")
	// ErrClient is a CLIENT_ERROR or ERROR answer: the server could not
	// parse a command, so the connection is out of step and is closed.
	ErrClient = errors.New("meta: client error")
)

// Limits of the answer parser.
const (
	// maxLine bounds an answer line (its flags included); a longer line is
	// a protocol error, so a broken stream cannot make the reader grow.
	maxLine = 4096
	// DefaultMaxValueSize bounds a value the reader accepts (64 MiB).
	DefaultMaxValueSize = 64 << 20
)

// header is a parsed answer line.
type header struct {
	code   [2]byte
	size   int // value size of VA
	cas    uint64
	ttl    int32
	flags  uint32
	opaque int // -1 when absent
	err    error
}

// readHeader reads and parses one answer line.
func readHeader(br *bufio.Reader, h *header) error {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return fmt.Errorf("%w: answer line longer than %d bytes", ErrProtocol, br.Size())
		}
		if errors.Is(err, io.EOF) && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return fmt.Errorf("%w: answer line %q does not end in CRLF", ErrProtocol, clip(line))
	}
	line = line[:len(line)-2]
	*h = header{opaque: -1}
	switch {
	case bytes.HasPrefix(line, []byte("SERVER_ERROR")):
		h.err = fmt.Errorf("%w: %s", ErrServer, clip(bytes.TrimSpace(line[len("SERVER_ERROR"):])))
		return nil
	case bytes.HasPrefix(line, []byte("CLIENT_ERROR")), bytes.Equal(line, []byte("ERROR")):
		return fmt.Errorf("%w: %s", ErrClient, clip(line))
	}
	if len(line) < 2 || len(line) > 2 && line[2] != ' ' {
		return fmt.Errorf("%w: unexpected answer %q", ErrProtocol, clip(line))
	}
	h.code = [2]byte{line[0], line[1]}
	rest := line[2:]
	if h.code == [2]byte{'V', 'A'} {
		rest = bytes.TrimPrefix(rest, []byte{' '})
		tok, tail, _ := bytes.Cut(rest, []byte{' '})
		n, err := strconv.ParseUint(string(tok), 10, 31)
		if err != nil {
			return fmt.Errorf("%w: bad value size in %q", ErrProtocol, clip(line))
		}
		h.size, rest = int(n), tail
	}
	for len(rest) > 0 {
		var tok []byte
		tok, rest, _ = bytes.Cut(rest, []byte{' '})
		if len(tok) == 0 {
			continue
		}
		v := tok[1:]
		var err error
		switch tok[0] {
		case 'c':
			h.cas, err = strconv.ParseUint(string(v), 10, 64)
		case 't':
			h.ttl, err = parseTTL(v)
		case 'f':
			var f uint64
			f, err = strconv.ParseUint(string(v), 10, 32)
			h.flags = uint32(f)
		case 'O':
			var o uint64
			o, err = strconv.ParseUint(string(v), 10, 31)
			h.opaque = int(o)
		}
		if err != nil {
			return fmt.Errorf("%w: bad flag %q in %q", ErrProtocol, clip(tok), clip(line))
		}
	}
	return nil
}

// parseTTL parses the value of a "t" flag. memcached prints the remaining
// time as an unsigned 32-bit difference, so an item whose expiry is already
// past shows a number above math.MaxInt32 (e.g. "t4294967232" for
// "mg <key> T-1 t", a touch to the past applied before "t"; the encoder
// sends "T" last, so it gets the TTL from before the touch): it expires
// now, read as 0.
func parseTTL(v []byte) (int32, error) {
	t, err := strconv.ParseInt(string(v), 10, 64)
	switch {
	case err != nil:
		return 0, err
	case t < math.MinInt32 || t > math.MaxUint32:
		return 0, strconv.ErrRange
	case t > math.MaxInt32:
		return 0, nil
	}
	return int32(t), nil
}

// clip shortens b for an error message.
func clip(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}

// readValue reads the data block of a VA answer: size bytes and CRLF.
func readValue(br *bufio.Reader, size, limit int) ([]byte, error) {
	if size > limit {
		return nil, fmt.Errorf("%w: value of %d bytes is over the limit of %d", ErrProtocol, size, limit)
	}
	buf := make([]byte, size+2)
	if _, err := io.ReadFull(br, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if buf[size] != '\r' || buf[size+1] != '\n' {
		return nil, fmt.Errorf("%w: value of %d bytes not followed by CRLF", ErrProtocol, size)
	}
	return buf[:size:size], nil
}

// readAnswers reads the answers to reqs, in order, into out. A quiet
// request that got no answer succeeded (StatusOK, or StatusMiss for a
// Get). Any error leaves the connection out of step: the caller closes it.
func readAnswers(br *bufio.Reader, reqs []Request, out []Response, limit int) error {
	var h header
	for i := 0; i < len(reqs); {
		if err := readHeader(br, &h); err != nil {
			return err
		}
		var value []byte
		if h.code == [2]byte{'V', 'A'} {
			v, err := readValue(br, h.size, limit)
			if err != nil {
				return err
			}
			value = v
		}
		// Quiet requests before this answer's owner succeeded silently.
		for reqs[i].Quiet && h.opaque != i {
			if h.err != nil {
				// A SERVER_ERROR carries no opaque: it may answer this
				// quiet request or a later one.
				return fmt.Errorf("%w: %w after a quiet request, owner unknown", ErrProtocol, h.err)
			}
			out[i] = silent(reqs[i].Command)
			i++
			if i == len(reqs) {
				return fmt.Errorf("%w: answer with opaque %d matches no request", ErrProtocol, h.opaque)
			}
		}
		if !reqs[i].Quiet && h.opaque >= 0 {
			return fmt.Errorf("%w: answer with opaque %d for request %d, which sent none", ErrProtocol, h.opaque, i)
		}
		r := &out[i]
		*r = Response{Value: value, CAS: h.cas, TTL: h.ttl, Flags: h.flags}
		if h.err != nil {
			if reqs[i].Command == NoOp {
				return fmt.Errorf("%w: %w answering mn", ErrProtocol, h.err)
			}
			r.Status, r.Err = StatusServerError, h.err
			i++
			continue
		}
		st, ok := status(reqs[i].Command, h.code)
		if !ok {
			return fmt.Errorf("%w: answer %q does not fit request %d (%s)", ErrProtocol, h.code[:], i, reqs[i].Command)
		}
		if st == StatusOK && reqs[i].Command == Get && reqs[i].ReturnValue && value == nil {
			return fmt.Errorf("%w: HD without the value asked for", ErrProtocol)
		}
		r.Status = st
		i++
	}
	return nil
}

// silent is the outcome of a quiet request that got no answer.
func silent(c Command) Response {
	if c == Get {
		return Response{Status: StatusMiss}
	}
	return Response{Status: StatusOK}
}

// status maps an answer code to a Status, checking it can answer c.
func status(c Command, code [2]byte) (Status, bool) {
	switch string(code[:]) {
	case "HD":
		return StatusOK, c == Get || c == Set || c == Delete
	case "VA":
		return StatusOK, c == Get
	case "EN":
		return StatusMiss, c == Get
	case "NF":
		return StatusNotFound, c == Set || c == Delete
	case "NS":
		return StatusNotStored, c == Set
	case "EX":
		return StatusExists, c == Set || c == Delete
	case "MN":
		return StatusNoOp, c == NoOp
	}
	return 0, false
}

// String returns the wire name of c.
func (c Command) String() string {
	switch c {
	case Get:
		return "mg"
	case Set:
		return "ms"
	case Delete:
		return "md"
	case NoOp:
		return "mn"
	}
	return "command(" + strconv.Itoa(int(c)) + ")"
}
