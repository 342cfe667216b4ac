package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/mcsession/mcsession/integration/mcproc"
)

func TestMetaRead(t *testing.T) {
	in := "HD c12\r\nNS c0\r\nEN\r\nVA 5 c2\r\nhello\r\nVA 0\r\n\r\nEX\r\nNF\r\nMN\r\nHD\r\n"
	c := &metaConn{r: bufio.NewReader(strings.NewReader(in))}
	want := []struct {
		code metaCode
		cas  uint64
		data string
	}{{mcHD, 12, ""}, {mcNS, 0, ""}, {mcEN, 0, ""}, {mcVA, 2, "hello"}, {mcVA, 0, ""}, {mcEX, 0, ""}, {mcNF, 0, ""}, {mcMN, 0, ""}, {mcHD, 0, ""}}
	for i, w := range want {
		rep, err := c.read()
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		if rep.code != w.code || rep.cas != w.cas || string(rep.data) != w.data {
			t.Fatalf("answer %d: got %v c%d %q, want %v c%d %q", i, rep.code, rep.cas, rep.data, w.code, w.cas, w.data)
		}
	}
	if _, err := c.read(); err != io.EOF {
		t.Fatalf("at the end: %v, want EOF", err)
	}
	for _, bad := range []string{"ERROR\r\n", "SERVER_ERROR out of memory\r\n", "CLIENT_ERROR bad\r\n", "HDX\r\n", "HD\n",
		"VA\r\n", "VA x\r\n", "VA 5\r\nhelloXY", "HD cx\r\n"} {
		c := &metaConn{r: bufio.NewReader(strings.NewReader(bad))}
		if _, err := c.read(); !errors.Is(err, errMetaProtocol) {
			t.Errorf("%q: %v, want errMetaProtocol", bad, err)
		}
	}
	c = &metaConn{r: bufio.NewReader(strings.NewReader("VA 5\r\nhel"))}
	if _, err := c.read(); err == nil {
		t.Error("truncated value: no error")
	}
}

func TestMetaCommands(t *testing.T) {
	c := &metaConn{}
	c.ms("fm:lock:x", []byte("tok"), 'E', 0, 10, true)
	c.mg("fm:x", true)
	c.ms("fm:x", []byte("abc"), 0, 42, 1800, false)
	c.mdq("fm:lock:x", 7)
	c.mn()
	want := "ms fm:lock:x 3 ME T10 c\r\ntok\r\nmg fm:x v c\r\nms fm:x 3 C42 T1800\r\nabc\r\nmd fm:lock:x C7 q\r\nmn\r\n"
	if string(c.buf) != want {
		t.Fatalf("got %q\nwant %q", c.buf, want)
	}
}

// TestFloorMeta runs the application on a real memcached: create, read,
// write, concurrent increments with no update lost, a taken lock.
func TestFloorMeta(t *testing.T) {
	p := mcproc.NewProcess(t)
	im := newFloorMeta(p.Addr(), 8)
	defer im.close()
	srv := httptest.NewServer(im.handler)
	defer srv.Close()

	do := func(method, path, cookie string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var sc string
		for _, c := range resp.Cookies() {
			sc = c.Name + "=" + c.Value
		}
		return resp.StatusCode, string(b), sc
	}
	code, _, cookie := do("POST", "/new", "")
	if code != 200 || cookie == "" {
		t.Fatalf("new: %d %q", code, cookie)
	}
	if code, body, _ := do("GET", "/read", cookie); code != 200 || !strings.HasPrefix(body, userPrefix) || !strings.HasSuffix(body, " 0\n") {
		t.Fatalf("read: %d %q", code, body)
	}
	if code, _, _ := do("POST", "/write?v=7", cookie); code != 200 {
		t.Fatalf("write: %d", code)
	}
	if code, _, _ := do("GET", "/read", "sid=0123456789abcdef0123456789abcdef"); code != 404 {
		t.Fatalf("read of a missing session: %d, want 404", code)
	}

	const workers, each = 8, 25
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := 0
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if code, _, _ := do("POST", "/incr", cookie); code == 200 {
					mu.Lock()
					acked++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	_, body, _ := do("GET", "/count", cookie)
	if n, _ := strconv.Atoi(strings.TrimSpace(body)); n != acked || acked != workers*each {
		t.Fatalf("count %q, acked %d of %d", body, acked, workers*each)
	}

	// A save whose record changed under the lock (written by somebody
	// who ignores it): 409, and the lock is released.
	id := strings.TrimPrefix(cookie, floorCookie+"=")
	mc := p.Client()
	req := httptest.NewRequest("POST", "/write?v=1", nil)
	req.Header.Set("Cookie", cookie)
	w := httptest.NewRecorder()
	f := &floorMeta{pool: newMetaPool(p.Addr(), 2, time.Second), timeout: time.Second}
	defer f.pool.close()
	key, lockKey, rec, cas, lockCAS, ok := f.lockedLoad(w, req, true)
	if !ok {
		t.Fatalf("lockedLoad: %d", w.Code)
	}
	if err := mc.Set(&memcache.Item{Key: key, Value: rec.encode(), Expiration: 60}); err != nil {
		t.Fatal(err)
	}
	if f.saveRelease(w, key, lockKey, &rec, cas, lockCAS) || w.Code != 409 {
		t.Fatalf("save after a concurrent change: %d, want 409", w.Code)
	}
	if _, err := mc.Get(lockKey); err != memcache.ErrCacheMiss {
		t.Fatalf("lock after the 409: %v, want released", err)
	}

	// A lock held by somebody else: 503 after floorWait.
	if err := mc.Set(&memcache.Item{Key: floorMetaPrefix + "lock:" + id, Value: []byte("other"), Expiration: 10}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if code, _, _ := do("POST", "/incr", cookie); code != 503 || time.Since(start) < floorWait {
		t.Fatalf("incr under a taken lock: %d after %v, want 503 after %v", code, time.Since(start), floorWait)
	}
}

// TestFloorMetaBadAnswer checks that an unexpected answer gives 500 and
// closes the connection instead of pooling it.
func TestFloorMetaBadAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closed := make(chan struct{}, 4)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				r := bufio.NewReader(nc)
				_, _ = r.ReadString('\n')
				_, _ = r.ReadString('\n')
				_, _ = nc.Write([]byte("SERVER_ERROR out of memory storing object\r\n"))
				_, _ = io.Copy(io.Discard, r) // until the client closes
				closed <- struct{}{}
				nc.Close()
			}()
		}
	}()
	im := newFloorMeta(ln.Addr().String(), 8)
	defer im.close()
	rec := httptest.NewRecorder()
	im.handler.ServeHTTP(rec, httptest.NewRequest("POST", "/new", nil))
	if rec.Code != 500 {
		t.Fatalf("new: %d, want 500", rec.Code)
	}
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Fatal("the connection was not closed after a bad answer")
	}
}
