package meta

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Config fields left at their zero value.
const (
	// DefaultTimeout bounds a batch (write and answers) and the wait for a
	// connection, unless ctx has an earlier deadline.
	DefaultTimeout = 500 * time.Millisecond
	// DefaultDialTimeout bounds connecting to the node.
	DefaultDialTimeout = 500 * time.Millisecond
	// DefaultMaxConns bounds the connections open to one node; a batch that
	// finds them all busy waits for one (counted in Stats.Waits).
	DefaultMaxConns = 256
	// DefaultMaxIdle is how many idle connections are kept for reuse.
	DefaultMaxIdle = 128
)

// Errors of the pool.
var (
	// ErrUnknownOutcome wraps a failure after (part of) a batch may have
	// reached the server: a timeout or a broken connection while writing
	// or reading answers. Its requests may or may not have been applied;
	// they are never retried automatically.
	ErrUnknownOutcome = errors.New("meta: outcome unknown")
	// ErrNotSent wraps a failure before any byte of the batch was sent
	// (dial failure, no free connection in time): nothing was applied.
	ErrNotSent = errors.New("meta: not sent")
	// ErrClosed is returned by Do after Close.
	ErrClosed = errors.New("meta: pool closed")
	// ErrPoolTimeout is wrapped (with ErrNotSent and
	// context.DeadlineExceeded) when every connection stayed busy until the
	// batch's deadline: the node is overloaded, not down.
	ErrPoolTimeout = errors.New("meta: no free connection within the timeout")
	// ErrTLS wraps (with ErrNotSent) a failed TLS handshake with the node:
	// a certificate that does not verify, a node that does not speak TLS,
	// a client certificate the node refused. The tls or x509 error is in
	// the chain.
	ErrTLS = errors.New("meta: TLS handshake failed")
	// errWouldWait is get's answer without wait when it would have to wait.
	errWouldWait = errors.New("meta: would wait for a connection")
)

// DialFunc opens a connection; a *tls.Dialer's DialContext or a
// net.Dialer's fit.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Config configures a Pool. Only Addr is required.
type Config struct {
	// Addr is the node's "host:port".
	Addr string
	// Dial opens connections. Default: a net.Dialer with DialTimeout over
	// "tcp".
	Dial DialFunc
	// TLS, when not nil, makes each connection Dial opens a TLS client
	// connection to the node. The handshake is part of the dial and
	// bounded by its deadline; under TLS 1.3, where a node that refuses
	// the client's certificate says so only after the client's handshake
	// ended, the dial also waits for the answer to one no-op, so that a
	// refusal is a dial error (nothing sent) too. An empty ServerName is
	// taken from Addr's host. Default nil: plaintext.
	TLS *tls.Config
	// Timeout bounds each batch and the wait for a free connection; ctx
	// may shorten it. Default DefaultTimeout (500 ms).
	Timeout time.Duration
	// DialTimeout bounds a dial. Default DefaultDialTimeout (500 ms).
	DialTimeout time.Duration
	// MaxConns bounds the open connections. Default DefaultMaxConns (256).
	MaxConns int
	// MaxIdle is how many idle connections are kept; more are closed when
	// returned. Default DefaultMaxIdle (128), at most MaxConns.
	MaxIdle int
	// MaxValueSize is the largest value sent (a larger one is refused
	// with ErrBadRequest, nothing sent) or accepted in an answer (a larger
	// one is a protocol error). Default DefaultMaxValueSize (64 MiB).
	MaxValueSize int
}

// Stats is a snapshot of a Pool's connections and events.
type Stats struct {
	// Open is the number of connections open now, idle or in use.
	Open int
	// Idle is the number of idle connections now.
	Idle int
	// Dials counts connections opened; DialErrors counts failed dials.
	Dials, DialErrors uint64
	// Waits counts batches that found every connection busy and waited.
	Waits uint64
	// Timeouts counts batches and waits that ran past their deadline.
	Timeouts uint64
	// Stale counts idle connections found closed by the server and dropped
	// before use (a node that restarted leaves them).
	Stale uint64
	// Broken counts connections closed after a failed batch.
	Broken uint64
	// Batches counts batches sent; Requests counts the requests in them.
	Batches, Requests uint64
}

// Pool is a set of connections to one memcached node. It is safe for
// concurrent use.
type Pool struct {
	cfg   Config
	slots chan struct{} // one token per open connection
	done  chan struct{}
	once  sync.Once

	// idle is a stack: the most recently used connection is reused first
	// (as database/sql and gomemcache do), so a few hot connections serve
	// a steady load and the others stay idle. ready wakes a batch waiting
	// for a connection when one is put back.
	mu    sync.Mutex
	idle  []*conn
	ready chan struct{}

	dials, dialErrors, waits, timeouts, stale, broken, batches, requests atomic.Uint64
}

type conn struct {
	nc    net.Conn
	br    *bufio.Reader
	wbuf  []byte
	check *connChecker
	used  bool // a batch was answered on it
}

// NewPool returns a pool for cfg.Addr with cfg's defaults filled in. It
// does not connect.
func NewPool(cfg Config) *Pool {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxIdle <= 0 {
		cfg.MaxIdle = DefaultMaxIdle
	}
	cfg.MaxIdle = min(cfg.MaxIdle, cfg.MaxConns)
	if cfg.MaxValueSize <= 0 {
		cfg.MaxValueSize = DefaultMaxValueSize
	}
	if cfg.Dial == nil {
		d := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
		cfg.Dial = d.DialContext
	}
	if cfg.TLS != nil && cfg.TLS.ServerName == "" {
		cfg.TLS = cfg.TLS.Clone()
		if host, _, err := net.SplitHostPort(cfg.Addr); err == nil {
			cfg.TLS.ServerName = host
		}
	}
	return &Pool{
		cfg:   cfg,
		slots: make(chan struct{}, cfg.MaxConns),
		ready: make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
}

// Addr returns the node's address.
func (p *Pool) Addr() string { return p.cfg.Addr }

// Stats returns a snapshot of the pool.
func (p *Pool) Stats() Stats {
	return Stats{
		Open: len(p.slots), Idle: p.idleCount(),
		Dials: p.dials.Load(), DialErrors: p.dialErrors.Load(), Waits: p.waits.Load(),
		Timeouts: p.timeouts.Load(), Stale: p.stale.Load(), Broken: p.broken.Load(),
		Batches: p.batches.Load(), Requests: p.requests.Load(),
	}
}

// Close closes the idle connections and makes later calls fail with
// ErrClosed; connections in use are closed when they are returned.
func (p *Pool) Close() error {
	p.once.Do(func() { close(p.done) })
	p.drainIdle()
	return nil
}

// CloseIdle closes the idle connections (the pool stays usable).
func (p *Pool) CloseIdle() { p.drainIdle() }

func (p *Pool) drainIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, c := range idle {
		p.closeConn(c)
	}
}

func (p *Pool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// pop takes the most recently returned idle connection, or nil. When
// more are idle, it passes the wake-up on to another waiting batch.
func (p *Pool) pop() *conn {
	p.mu.Lock()
	n := len(p.idle)
	if n == 0 {
		p.mu.Unlock()
		return nil
	}
	c := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	more := n > 1
	p.mu.Unlock()
	if more {
		p.signal()
	}
	return c
}

// signal wakes one batch waiting for a connection, if any.
func (p *Pool) signal() {
	select {
	case p.ready <- struct{}{}:
	default:
	}
}

func (p *Pool) closed() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Do sends reqs as one batch (one write) on one connection and returns
// their answers in order. The batch must not end with a quiet request.
//
// The error is nil when every answer was read; each Response then tells
// its request's outcome. Otherwise it wraps ErrBadRequest (nothing sent),
// ErrNotSent (nothing reached the server: ctx already done, dial failure,
// no free connection in time; with ErrClosed after Close), or
// ErrUnknownOutcome (a timeout or broken connection after sending began:
// some requests may have been applied). The batch is
// bounded by Config.Timeout and ctx's deadline; a ctx canceled during the
// batch takes effect at that deadline. A connection that fails is closed,
// never reused with unread answers.
func (p *Pool) Do(ctx context.Context, reqs ...Request) ([]Response, error) {
	out := make([]Response, len(reqs))
	return out, p.DoInto(ctx, reqs, out)
}

// DoInto is Do with the answers written to out, which must be as long as
// reqs.
func (p *Pool) DoInto(ctx context.Context, reqs []Request, out []Response) error {
	var call Call
	p.Start(ctx, reqs, out, &call)
	return call.Finish()
}

// Call is a batch in flight: sent by Pool.Start, its answers read by
// Finish. The zero value is ready for Start.
type Call struct {
	p        *Pool
	c        *conn // nil when Start finished the batch (or failed)
	n        int   // bytes written
	reqs     []Request
	out      []Response
	err      error
	deadline time.Time // the batch's deadline, set on its connection
}

// finishGrace is how long Finish still reads the answers of a batch whose
// deadline passed while the caller was reading another node's answers
// (see Finish).
const finishGrace = 10 * time.Millisecond

// Start sends reqs as one batch on a connection of its own and returns
// without reading the answers, so that batches to several nodes are in
// flight at once (one round trip for all, and no goroutine); call.Finish
// reads the answers into out. Every Start must be followed by Finish. A
// batch larger than 64 KiB is done in full by Start. Errors are those of
// Do, returned by Finish.
func (p *Pool) Start(ctx context.Context, reqs []Request, out []Response, call *Call) {
	p.start(ctx, reqs, out, call, true)
}

// TryStart is Start that does not wait for a connection: when every one
// is busy and MaxConns are open, it sends nothing and returns false (call
// is then unused). A caller that holds connections of other pools (the
// batches of Start it has not finished) must not wait for one: two such
// callers holding each other's last connection would wait until their
// deadline. It finishes those first, then calls Start.
func (p *Pool) TryStart(ctx context.Context, reqs []Request, out []Response, call *Call) bool {
	return p.start(ctx, reqs, out, call, false)
}

// start is Start; without wait it returns false instead of waiting for a
// connection.
func (p *Pool) start(ctx context.Context, reqs []Request, out []Response, call *Call, wait bool) bool {
	*call = Call{p: p, reqs: reqs, out: out}
	if len(reqs) == 0 || len(out) != len(reqs) {
		call.err = fmt.Errorf("%w: %d requests, room for %d answers", ErrBadRequest, len(reqs), len(out))
		return true
	}
	for i := range reqs {
		if err := reqs[i].check(); err != nil {
			call.err = fmt.Errorf("meta: %s: request %d: %w", p.cfg.Addr, i, err)
			return true
		}
		if len(reqs[i].Value) > p.cfg.MaxValueSize {
			// memcached would read the bytes of a value it refuses this
			// early as commands.
			call.err = fmt.Errorf("meta: %s: request %d: %w: value of %d bytes over the limit of %d",
				p.cfg.Addr, i, ErrBadRequest, len(reqs[i].Value), p.cfg.MaxValueSize)
			return true
		}
	}
	if reqs[len(reqs)-1].Quiet {
		call.err = fmt.Errorf("meta: %s: %w: the last request of a batch must not be quiet", p.cfg.Addr, ErrBadRequest)
		return true
	}
	if err := ctx.Err(); err != nil {
		call.err = fmt.Errorf("meta: %s: %w: %w", p.cfg.Addr, ErrNotSent, err)
		return true
	}
	deadline := time.Now().Add(p.cfg.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c, err := p.get(ctx, deadline, wait)
	if errors.Is(err, errWouldWait) {
		return false
	}
	if err != nil {
		call.err = fmt.Errorf("meta: %s: %w: %w", p.cfg.Addr, ErrNotSent, err)
		return true
	}
	p.batches.Add(1)
	p.requests.Add(uint64(len(reqs)))
	if err := c.nc.SetDeadline(deadline); err != nil {
		p.discard(c, err)
		call.err = fmt.Errorf("meta: %s: %w: %w", p.cfg.Addr, ErrNotSent, err)
		return true
	}
	b := c.wbuf[:0]
	for i := range reqs {
		opaque := -1
		if reqs[i].Quiet {
			opaque = i
		}
		b = reqs[i].appendTo(b, opaque)
	}
	if cap(b) <= 64<<10 {
		c.wbuf = b
	} else {
		c.wbuf = nil // do not keep a large value's buffer
	}
	if len(b) > syncWriteMax {
		n, werr, rerr := p.writeWhileReading(c, b, reqs, out)
		call.err = p.settle(c, n, werr, rerr)
		return true
	}
	n, werr := c.nc.Write(b)
	if werr != nil {
		call.err = p.settle(c, n, werr, nil)
		return true
	}
	call.c, call.n, call.deadline = c, n, deadline
	return true
}

// Finish reads the answers of a batch sent by Start and returns Do's error.
func (call *Call) Finish() error {
	c := call.c
	if c == nil {
		return call.err
	}
	call.c = nil
	p := call.p
	if now := time.Now(); !now.Before(call.deadline) {
		// The time ran out while the caller read the answers of another
		// batch sent at the same time (a node that hung): this node's
		// answers may be waiting in the socket. Read them with a short
		// grace rather than fail a healthy node for a hung one.
		_ = c.nc.SetReadDeadline(now.Add(finishGrace))
	}
	call.err = p.settle(c, call.n, nil, readAnswers(c.br, call.reqs, call.out, p.cfg.MaxValueSize))
	return call.err
}

// settle returns the connection of a batch to the pool, or closes it after
// a failure, and returns the batch's error.
func (p *Pool) settle(c *conn, n int, werr, rerr error) error {
	if !c.used {
		werr, rerr = p.plaintextHint(c, werr), p.plaintextHint(c, rerr)
	}
	switch {
	case werr != nil && n == 0:
		p.discard(c, werr)
		return fmt.Errorf("meta: %s: %w: %w", p.cfg.Addr, ErrNotSent, werr)
	case rerr != nil:
		p.discard(c, rerr)
		return fmt.Errorf("meta: %s: %w: %w", p.cfg.Addr, ErrUnknownOutcome, rerr)
	case werr != nil:
		p.discard(c, werr)
		return fmt.Errorf("meta: %s: %w: write: %w", p.cfg.Addr, ErrUnknownOutcome, werr)
	}
	p.put(c)
	return nil
}

// plaintextHint adds a hint to err, the failure of the first batch on a
// plaintext connection, when the node closed the connection: that is what
// a memcached serving TLS (-Z) does with a plaintext client's first
// command.
func (p *Pool) plaintextHint(c *conn, err error) error {
	if err == nil || isTLS(c.nc) || isTimeout(err) {
		return err
	}
	var ne *net.OpError
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne) {
		return fmt.Errorf("%w (the node closed a new connection without answering, as a memcached serving TLS does with a plaintext client)", err)
	}
	return err
}

func isTLS(nc net.Conn) bool {
	_, ok := nc.(*tls.Conn)
	return ok
}

// syncWriteMax is the largest batch written before its answers are read.
// The kernel's socket buffers take that much even when the server does not
// read; a larger batch is written while its answers are read (see
// writeWhileReading).
const syncWriteMax = 64 << 10

// writeWhileReading writes a large batch from a second goroutine while
// reading its answers. memcached stops reading a connection while its
// answers wait to be sent: with sets of large values and gets of large
// values in one batch, a writer that read nothing until its write ended
// would wait for the server, and the server for it, until the deadline.
func (p *Pool) writeWhileReading(c *conn, b []byte, reqs []Request, out []Response) (n int, werr, rerr error) {
	type written struct {
		n   int
		err error
	}
	wc := make(chan written, 1)
	go func() {
		n, err := c.nc.Write(b)
		wc <- written{n, err}
	}()
	rerr = readAnswers(c.br, reqs, out, p.cfg.MaxValueSize)
	if rerr != nil {
		// Unblock a write still in progress; discard closes it again.
		closeNetConn(c.nc)
	}
	w := <-wc
	return w.n, w.err, rerr
}

// get returns a connection: an idle one that is still open, a new one
// when fewer than MaxConns are open, or the first one returned before
// deadline.
func (p *Pool) get(ctx context.Context, deadline time.Time, wait bool) (*conn, error) {
	if p.closed() {
		return nil, ErrClosed
	}
	for c := p.pop(); c != nil; c = p.pop() {
		if p.usable(c) {
			return c, nil
		}
	}
	select {
	case p.slots <- struct{}{}:
		return p.dial(ctx, deadline)
	default:
	}
	if !wait {
		return nil, errWouldWait
	}
	p.waits.Add(1)
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		for c := p.pop(); c != nil; c = p.pop() {
			if p.usable(c) {
				return c, nil
			}
		}
		select {
		case <-p.ready:
		case p.slots <- struct{}{}:
			return p.dial(ctx, deadline)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.done:
			return nil, ErrClosed
		case <-timer.C:
			p.timeouts.Add(1)
			return nil, fmt.Errorf("%w (%d open): %w", ErrPoolTimeout, p.cfg.MaxConns, context.DeadlineExceeded)
		}
	}
}

// usable reports whether an idle connection is still open and holds no
// unread bytes (in its reader or its socket); any other one is dropped
// (its slot freed).
func (p *Pool) usable(c *conn) bool {
	if c.br.Buffered() > 0 || c.check.check() != nil {
		p.stale.Add(1)
		p.closeConn(c)
		return false
	}
	return true
}

// dial opens a connection in a slot the caller took.
func (p *Pool) dial(ctx context.Context, deadline time.Time) (*conn, error) {
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	p.dials.Add(1)
	nc, err := p.cfg.Dial(dctx, "tcp", p.cfg.Addr)
	if err != nil {
		err = fmt.Errorf("dial: %w", err)
	} else if p.cfg.TLS != nil {
		nc, err = handshake(dctx, nc, p.cfg.TLS)
	}
	if err != nil {
		<-p.slots
		p.dialErrors.Add(1)
		return nil, err
	}
	return &conn{nc: nc, br: bufio.NewReaderSize(nc, maxLine), wbuf: make([]byte, 0, 1024), check: newConnChecker(nc)}, nil
}

// handshake runs the TLS handshake of a client connection over raw, within
// ctx's deadline, and under TLS 1.3 one no-op round trip (see
// Config.TLS). On failure it closes raw and returns an error wrapping
// ErrTLS.
func handshake(ctx context.Context, raw net.Conn, cfg *tls.Config) (net.Conn, error) {
	tc := tls.Client(raw, cfg)
	err := tc.HandshakeContext(ctx)
	if err == nil && tc.ConnectionState().Version >= tls.VersionTLS13 {
		err = confirm(ctx, tc)
	}
	if err == nil {
		return tc, nil
	}
	_ = raw.Close()
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return nil, fmt.Errorf("%w: %w (the node does not speak TLS: memcached serves TLS with -Z)", ErrTLS, err)
	}
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return nil, fmt.Errorf("%w: %w", ErrTLS, err)
}

// confirm sends a no-op on a new TLS 1.3 connection and reads its answer,
// within ctx's deadline: a node that refuses the client's certificate
// answers with an alert instead.
func confirm(ctx context.Context, tc *tls.Conn) error {
	if d, ok := ctx.Deadline(); ok {
		if err := tc.SetDeadline(d); err != nil {
			return err
		}
	}
	stop := context.AfterFunc(ctx, func() { _ = tc.NetConn().SetDeadline(time.Unix(1, 0)) })
	defer stop()
	_, werr := tc.Write([]byte("mn\r\n"))
	var ans [4]byte
	if _, err := io.ReadFull(tc, ans[:]); err != nil {
		// A node that closed the connection after its alert makes the
		// write fail with a reset; the alert may still be read.
		if werr != nil && !isRemoteAlert(err) {
			return werr
		}
		return err
	}
	if string(ans[:]) != "MN\r\n" {
		return fmt.Errorf("unexpected answer %q to a no-op", ans[:])
	}
	return nil
}

// put returns a healthy connection to the idle set, or closes it when
// enough are idle or the pool is closed.
func (p *Pool) put(c *conn) {
	c.used = true
	p.mu.Lock()
	if p.closed() || len(p.idle) >= p.cfg.MaxIdle {
		p.mu.Unlock()
		p.closeConn(c)
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
	if p.closed() {
		// Close ran after the check above: drain what it missed.
		p.drainIdle()
		return
	}
	p.signal()
}

// discard closes a connection after a failed batch.
func (p *Pool) discard(c *conn, err error) {
	if isTimeout(err) {
		p.timeouts.Add(1)
	}
	p.broken.Add(1)
	p.closeConn(c)
}

func (p *Pool) closeConn(c *conn) {
	closeNetConn(c.nc)
	<-p.slots
}

// isRemoteAlert reports whether err is a TLS alert the node sent.
func isRemoteAlert(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error"
}

// closeNetConn closes nc; a TLS connection's socket is closed without
// sending close_notify, which could wait (up to 5 s) for a node that
// stopped reading or for a write in progress.
func closeNetConn(nc net.Conn) {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	_ = nc.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
