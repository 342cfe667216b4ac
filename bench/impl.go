package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// Every implementation serves the same application, so that only the
// session layer differs:
//
//	POST /new        creates a session: user, csrf, counter=0, last=0
//	GET  /read       reads user and counter, writes them in the body
//	POST /write?v=N  sets last=N (one attribute changed)
//	POST /incr       counter++ and writes the new value
//	GET  /count      writes counter (used to check for lost updates)
//
// A request without a session on /read, /write, /incr or /count gets 404.

// impl is one implementation under test, served by its own net/http server
// on 127.0.0.1.
type impl struct {
	name    string
	desc    string
	handler http.Handler
	close   func()
	// scenarios lists the scenarios the implementation runs in; nil means
	// all of them.
	scenarios []string
	// settle, when set, waits for the background work of the requests
	// served so far (idle-timeout refreshes, queued asynchronous writes).
	// It runs after the set-up, the warm-up and every measured window, so
	// that one implementation's leftovers never run during another's
	// window.
	settle func(context.Context)

	srv  *http.Server
	base string
}

// serve starts the implementation's HTTP server on a free loopback port.
func (im *impl) serve() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	im.srv = &http.Server{Handler: im.handler, ReadHeaderTimeout: 5 * time.Second, ErrorLog: quietLog}
	im.base = "http://" + ln.Addr().String()
	go func() { _ = im.srv.Serve(ln) }()
	return nil
}

// runs reports whether the implementation runs in scenario sc.
func (im *impl) runs(sc string) bool {
	return im.scenarios == nil || slices.Contains(im.scenarios, sc)
}

// settleBackground runs the implementation's settle, bounded by a few
// seconds.
func (im *impl) settleBackground(ctx context.Context) {
	if im.settle == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	im.settle(ctx)
}

func (im *impl) shutdown() {
	if im.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = im.srv.Shutdown(ctx)
	}
	if im.close != nil {
		im.close()
	}
}

// The session's contents at creation, the same for every implementation.
const (
	userPrefix = "user-"
	sessionTTL = 30 * time.Minute // idle timeout, where the implementation has one
)

// newUser returns a user name of fixed length and a 32-character CSRF token.
func newUser() (user, csrf string) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	csrf = hex.EncodeToString(b[:])
	return userPrefix + csrf[:8], csrf
}

// randomID returns 32 lowercase hex characters from crypto/rand.
func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// mcClient returns the gomemcache client the peers and the floor use: one
// node, the same idle-connection pool size as mcsession's per-node clients.
func mcClient(addr string, maxIdle int) *memcache.Client {
	mc := memcache.New(addr)
	mc.MaxIdleConns = maxIdle
	mc.Timeout = 500 * time.Millisecond // replica.DefaultTimeout
	return mc
}

// writeInt writes n and a newline.
func writeInt(w http.ResponseWriter, n int) {
	var b [24]byte
	buf := strconv.AppendInt(b[:0], int64(n), 10)
	buf = append(buf, '\n')
	_, _ = w.Write(buf)
}

// writeRead writes the body of /read.
func writeRead(w http.ResponseWriter, user string, counter int) {
	buf := make([]byte, 0, 48)
	buf = append(buf, user...)
	buf = append(buf, ' ')
	buf = strconv.AppendInt(buf, int64(counter), 10)
	buf = append(buf, '\n')
	_, _ = w.Write(buf)
}

var okBody = []byte("ok\n")

func parseV(r *http.Request) (int, error) {
	v, err := strconv.Atoi(r.URL.Query().Get("v"))
	if err != nil {
		return 0, fmt.Errorf("bad v: %w", err)
	}
	return v, nil
}
