package main

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// newHTTPClient returns the one client every implementation is measured
// with: keep-alive connections, enough idle ones for every virtual client,
// no cookie jar (each virtual client keeps its own cookies).
func newHTTPClient() *http.Client {
	tr := &http.Transport{
		Proxy:               nil, // loopback only, never through a proxy
		MaxIdleConns:        2048,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// vclient is one virtual client: a browser with its own cookies.
type vclient struct {
	id      int
	hc      *http.Client
	base    string // http://127.0.0.1:PORT
	cookies map[string]string
	header  string // Cookie header built from cookies
	rng     *rand.Rand
	seq     int
	buf     bytes.Buffer
}

func newVClient(hc *http.Client, base string, id int) *vclient {
	return &vclient{
		id: id, hc: hc, base: base, cookies: make(map[string]string),
		rng: rand.New(rand.NewPCG(uint64(id)+1, 0x6d6373657373)),
	}
}

// copyCookiesFrom makes v present the same cookies as o.
func (v *vclient) copyCookiesFrom(o *vclient) {
	clear(v.cookies)
	for k, val := range o.cookies {
		v.cookies[k] = val
	}
	v.header = o.header
}

// do sends one request and returns the status code and, when keepBody is
// set, the body. The body is always read to the end so that the
// connection is reused. Set-Cookie headers update the client's cookies.
func (v *vclient) do(ctx context.Context, method, path string, keepBody bool) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, method, v.base+path, nil)
	if err != nil {
		return 0, "", err
	}
	if v.header != "" {
		req.Header["Cookie"] = []string{v.header}
	}
	resp, err := v.hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	var body string
	if keepBody {
		v.buf.Reset()
		_, err = v.buf.ReadFrom(resp.Body)
		body = v.buf.String()
	} else {
		_, err = io.Copy(io.Discard, resp.Body)
	}
	resp.Body.Close()
	if sc := resp.Header["Set-Cookie"]; len(sc) > 0 {
		v.setCookies(sc)
	}
	return resp.StatusCode, body, err
}

func (v *vclient) setCookies(lines []string) {
	changed := false
	for _, line := range lines {
		c, err := http.ParseSetCookie(line)
		if err != nil {
			continue
		}
		if c.MaxAge < 0 || c.Value == "" {
			if _, ok := v.cookies[c.Name]; ok {
				delete(v.cookies, c.Name)
				changed = true
			}
			continue
		}
		if v.cookies[c.Name] != c.Value {
			v.cookies[c.Name] = c.Value
			changed = true
		}
	}
	if !changed {
		return
	}
	var b strings.Builder
	for k, val := range v.cookies {
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(val)
	}
	v.header = b.String()
}

// Request kinds of the scenarios; every implementation serves the same
// routes (see impl.go).
func (v *vclient) newSession(ctx context.Context) (bool, error) {
	clear(v.cookies)
	v.header = ""
	code, _, err := v.do(ctx, http.MethodPost, "/new", false)
	return code == http.StatusOK, err
}

func (v *vclient) read(ctx context.Context) (bool, error) {
	code, _, err := v.do(ctx, http.MethodGet, "/read", false)
	return code == http.StatusOK, err
}

func (v *vclient) write(ctx context.Context) (bool, error) {
	v.seq++
	code, _, err := v.do(ctx, http.MethodPost, "/write?v="+strconv.Itoa(v.seq), false)
	return code == http.StatusOK, err
}

func (v *vclient) incr(ctx context.Context) (bool, error) {
	code, _, err := v.do(ctx, http.MethodPost, "/incr", false)
	return code == http.StatusOK, err
}

func (v *vclient) count(ctx context.Context) (int, error) {
	code, body, err := v.do(ctx, http.MethodGet, "/count", true)
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, &statusError{code: code, body: body}
	}
	return strconv.Atoi(strings.TrimSpace(body))
}

type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string {
	return "HTTP " + strconv.Itoa(e.code) + ": " + strings.TrimSpace(e.body)
}

// window is what one measured window of one implementation produced.
type window struct {
	h       hist
	ok      uint64 // requests answered 200
	errs    uint64 // other status codes and transport errors
	elapsed time.Duration
	mallocs uint64
}

// load runs op on every client in parallel until d has passed (or ctx is
// done) and records the latency of each successful request. Requests that
// fail are counted but not timed.
func load(ctx context.Context, clients []*vclient, d time.Duration, op opFunc) *window {
	w := &window{}
	hs := make([]hist, len(clients))
	oks := make([]uint64, len(clients))
	errs := make([]uint64, len(clients))
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for i, v := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := &hs[i]
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				ok, err := op(v, ctx)
				if ok && err == nil {
					h.record(time.Since(t0))
					oks[i]++
				} else {
					errs[i]++
				}
			}
		}()
	}
	wg.Wait()
	w.elapsed = time.Since(start)
	for i := range clients {
		w.h.merge(&hs[i])
		w.ok += oks[i]
		w.errs += errs[i]
	}
	return w
}
