package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// A tiny, self-contained memcached meta-protocol client for floor-meta:
// a pool of connections to one node, commands appended to a per-connection
// buffer and sent with one write per batch (pipelined), answers read back
// in order. It deliberately imports nothing from the library: floor-meta
// is the independent physical limit.

// metaPool keeps idle connections to one memcached node in a buffered
// channel; a connection is taken for one round trip and given back.
type metaPool struct {
	addr    string
	timeout time.Duration // dial timeout and deadline of each round trip
	idle    chan *metaConn
}

// metaConn is one connection with its read buffer and its pending batch.
type metaConn struct {
	nc  net.Conn
	r   *bufio.Reader
	buf []byte // commands not sent yet
}

func newMetaPool(addr string, maxIdle int, timeout time.Duration) *metaPool {
	return &metaPool{addr: addr, timeout: timeout, idle: make(chan *metaConn, maxIdle)}
}

// get returns an idle connection or dials a new one.
func (p *metaPool) get() (*metaConn, error) {
	select {
	case c := <-p.idle:
		return c, nil
	default:
	}
	nc, err := net.DialTimeout("tcp", p.addr, p.timeout)
	if err != nil {
		return nil, err
	}
	return &metaConn{nc: nc, r: bufio.NewReaderSize(nc, 4096), buf: make([]byte, 0, 512)}, nil
}

// put gives a healthy connection (every answer of its last batch read)
// back to the pool, or closes it when the pool is full.
func (p *metaPool) put(c *metaConn) {
	c.buf = c.buf[:0]
	select {
	case p.idle <- c:
	default:
		_ = c.nc.Close()
	}
}

// close closes the idle connections.
func (p *metaPool) close() {
	for {
		select {
		case c := <-p.idle:
			_ = c.nc.Close()
		default:
			return
		}
	}
}

// discard closes a connection after an I/O or protocol error: its stream
// can no longer be trusted.
func (c *metaConn) discard() { _ = c.nc.Close() }

// flush sends the pending batch in one write and sets the deadline of the
// round trip (the write and every read of its answers).
func (c *metaConn) flush(timeout time.Duration) error {
	if err := c.nc.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	_, err := c.nc.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

// ms appends "ms <key> <len> [M<mode>] [C<cas>] T<ttl> [c]" and the data.
// mode 0 is set; cas 0 is no compare.
func (c *metaConn) ms(key string, data []byte, mode byte, cas uint64, ttl int, retCAS bool) {
	b := append(c.buf, "ms "...)
	b = append(b, key...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(len(data)), 10)
	if mode != 0 {
		b = append(b, ' ', 'M', mode)
	}
	if cas != 0 {
		b = append(b, " C"...)
		b = strconv.AppendUint(b, cas, 10)
	}
	b = append(b, " T"...)
	b = strconv.AppendInt(b, int64(ttl), 10)
	if retCAS {
		b = append(b, " c"...)
	}
	b = append(b, "\r\n"...)
	b = append(b, data...)
	c.buf = append(b, "\r\n"...)
}

// mg appends "mg <key> v [c]".
func (c *metaConn) mg(key string, retCAS bool) {
	b := append(c.buf, "mg "...)
	b = append(b, key...)
	b = append(b, " v"...)
	if retCAS {
		b = append(b, " c"...)
	}
	c.buf = append(b, "\r\n"...)
}

// mdq appends "md <key> C<cas> q": the success (HD) is not answered.
func (c *metaConn) mdq(key string, cas uint64) {
	b := append(c.buf, "md "...)
	b = append(b, key...)
	b = append(b, " C"...)
	b = strconv.AppendUint(b, cas, 10)
	c.buf = append(b, " q\r\n"...)
}

// mn appends "mn", answered MN: the end of a batch of quiet commands.
func (c *metaConn) mn() { c.buf = append(c.buf, "mn\r\n"...) }

// metaCode is the status of one meta answer.
type metaCode uint8

const (
	mcHD metaCode = iota + 1 // stored / deleted
	mcVA                     // value follows
	mcEN                     // miss (mg)
	mcNS                     // not stored (ms add mode: the key exists)
	mcEX                     // CAS mismatch
	mcNF                     // not found (CAS / md)
	mcMN                     // end of a quiet batch
)

func (m metaCode) String() string {
	if m >= mcHD && m <= mcMN {
		return [...]string{"HD", "VA", "EN", "NS", "EX", "NF", "MN"}[m-1]
	}
	return "??"
}

// metaReply is one answer: its code, the c<cas> flag when present and, for
// VA, the value (a fresh slice owned by the caller).
type metaReply struct {
	code metaCode
	cas  uint64
	data []byte
}

// errMetaProtocol is an answer that is none of the expected ones; the
// connection must be discarded.
var errMetaProtocol = errors.New("memcached meta: unexpected answer")

// read reads one answer: "HD|EN|NS|EX|NF|MN [flags]" or
// "VA <len> [flags]\r\n<data>\r\n". Flags other than c<cas> are ignored.
func (c *metaConn) read() (metaReply, error) {
	var rep metaReply
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return rep, err
	}
	if len(line) < 4 || line[len(line)-2] != '\r' {
		return rep, fmt.Errorf("%w: %q", errMetaProtocol, line)
	}
	line = line[:len(line)-2]
	switch string(line[:2]) {
	case "HD":
		rep.code = mcHD
	case "VA":
		rep.code = mcVA
	case "EN":
		rep.code = mcEN
	case "NS":
		rep.code = mcNS
	case "EX":
		rep.code = mcEX
	case "NF":
		rep.code = mcNF
	case "MN":
		rep.code = mcMN
	default:
		return rep, fmt.Errorf("%w: %q", errMetaProtocol, line)
	}
	if len(line) > 2 && line[2] != ' ' {
		return rep, fmt.Errorf("%w: %q", errMetaProtocol, line)
	}
	n := -1
	rest := line[2:]
	for first := true; len(rest) > 0; first = false {
		for len(rest) > 0 && rest[0] == ' ' {
			rest = rest[1:]
		}
		j := 0
		for j < len(rest) && rest[j] != ' ' {
			j++
		}
		tok := rest[:j]
		rest = rest[j:]
		if len(tok) == 0 {
			break
		}
		if rep.code == mcVA && first {
			v, ok := parseDigits(tok)
			if !ok || v > 1<<30 {
				return rep, fmt.Errorf("%w: %q", errMetaProtocol, line)
			}
			n = int(v)
			continue
		}
		if tok[0] == 'c' {
			v, ok := parseDigits(tok[1:])
			if !ok {
				return rep, fmt.Errorf("%w: %q", errMetaProtocol, line)
			}
			rep.cas = v
		}
	}
	if rep.code != mcVA {
		return rep, nil
	}
	if n < 0 {
		return rep, fmt.Errorf("%w: VA without a length", errMetaProtocol)
	}
	data := make([]byte, n+2)
	if _, err := io.ReadFull(c.r, data); err != nil {
		return rep, err
	}
	if data[n] != '\r' || data[n+1] != '\n' {
		return rep, fmt.Errorf("%w: value not followed by \\r\\n", errMetaProtocol)
	}
	rep.data = data[:n]
	return rep, nil
}

// parseDigits parses a non-empty run of decimal digits.
func parseDigits(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var v uint64
	for _, ch := range b {
		if ch < '0' || ch > '9' {
			return 0, false
		}
		v = v*10 + uint64(ch-'0')
	}
	return v, true
}
