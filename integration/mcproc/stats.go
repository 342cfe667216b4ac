package mcproc

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// statsTimeout bounds a stats exchange when ctx has no earlier deadline.
const statsTimeout = 5 * time.Second

// maxStatLines bounds how many lines a stats answer may have.
const maxStatLines = 10000

// Stats sends "stats" to the node over a new TCP connection (TLS with
// Options.TLS) and returns the
// "STAT name value" lines of the answer as a map from name to value. It
// gives up when ctx is done or after 5s.
func (p *Process) Stats(ctx context.Context) (map[string]string, error) {
	var stats map[string]string
	err := withConn(ctx, p.addr, p.opts.clientTLS, statsTimeout, func(rw *bufio.ReadWriter) error {
		var err error
		stats, err = requestStats(rw)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("mcproc: stats %s: %w", p.addr, err)
	}
	return stats, nil
}

// Stat returns one numeric stat of the node, such as "cmd_set", "cmd_get",
// "curr_items" or "cmd_touch". It is an error if the node does not report
// the stat or its value is not an unsigned integer.
func (p *Process) Stat(ctx context.Context, name string) (uint64, error) {
	stats, err := p.Stats(ctx)
	if err != nil {
		return 0, err
	}
	v, ok := stats[name]
	if !ok {
		return 0, fmt.Errorf("mcproc: stat %s on %s: not reported", name, p.addr)
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("mcproc: stat %s on %s: %w", name, p.addr, err)
	}
	return n, nil
}

// probe checks that addr answers "version" with "VERSION" and returns its
// stats; with tlsCfg over TLS.
func probe(ctx context.Context, addr string, tlsCfg *tls.Config) (map[string]string, error) {
	var stats map[string]string
	err := withConn(ctx, addr, tlsCfg, probeTimeout, func(rw *bufio.ReadWriter) error {
		if _, err := rw.WriteString("version\r\n"); err != nil {
			return err
		}
		if err := rw.Flush(); err != nil {
			return err
		}
		line, err := readLine(rw.Reader)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(line, "VERSION") {
			return fmt.Errorf("unexpected answer to version: %q", line)
		}
		stats, err = requestStats(rw)
		return err
	})
	return stats, err
}

// withConn dials addr (with TLS when tlsCfg is not nil) and runs fn on the
// connection. The exchange, the TLS handshake included, ends when ctx is
// done or timeout has passed, whichever comes first.
func withConn(ctx context.Context, addr string, tlsCfg *tls.Config, timeout time.Duration, fn func(*bufio.ReadWriter) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := dial(ctx, addr, tlsCfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(dl); err != nil {
			return err
		}
	}
	// Wake blocked reads and writes when ctx is cancelled.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	err = fn(bufio.NewReadWriter(bufio.NewReader(conn), bufio.NewWriter(conn)))
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}

// dial connects to addr, over TLS with tlsCfg; the handshake is bounded
// by ctx.
func dial(ctx context.Context, addr string, tlsCfg *tls.Config) (net.Conn, error) {
	if tlsCfg == nil {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	d := tls.Dialer{Config: tlsCfg}
	return d.DialContext(ctx, "tcp", addr)
}

// requestStats sends "stats" and reads the answer.
func requestStats(rw *bufio.ReadWriter) (map[string]string, error) {
	if _, err := rw.WriteString("stats\r\n"); err != nil {
		return nil, err
	}
	if err := rw.Flush(); err != nil {
		return nil, err
	}
	return parseStats(rw.Reader)
}

// parseStats reads "STAT name value" lines up to "END".
func parseStats(r *bufio.Reader) (map[string]string, error) {
	stats := make(map[string]string)
	for range maxStatLines {
		line, err := readLine(r)
		if err != nil {
			return nil, err
		}
		if line == "END" {
			return stats, nil
		}
		name, value, ok := strings.Cut(strings.TrimPrefix(line, "STAT "), " ")
		if !strings.HasPrefix(line, "STAT ") || !ok || name == "" {
			return nil, fmt.Errorf("unexpected stats line %q", line)
		}
		stats[name] = value
	}
	return nil, fmt.Errorf("stats answer longer than %d lines", maxStatLines)
}

// readLine reads one "\r\n"-terminated line without its terminator.
func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}
