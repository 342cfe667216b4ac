package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

// mcVariant is one configuration of mcsession under test.
type mcVariant struct {
	locking httpsession.LockMode
	sticky  bool // store.Config.Sticky: local cache, in-process lock
	trust   bool // store.Config.TrustSticky: no version probe
	async   bool // store.Config.AsyncWrites
	// scenarios the variant runs in; nil: all of them.
	scenarios []string
}

// mcVariants are the mcsession implementations, by name. Every one is
// served by one net/http server in this process, i.e. one app server:
// for the sticky variants that is what a sticky load balancer gives,
// every request of a session reaching the same app server.
var mcVariants = map[string]mcVariant{
	"mcsession-none": {locking: httpsession.LockNone},
	"mcsession-all":  {locking: httpsession.LockAll},
	"mcsession-auto": {locking: httpsession.LockAuto},
	"mcsession-none-async": {locking: httpsession.LockNone, async: true,
		scenarios: []string{"write", "new"}},
	"mcsession-sticky": {locking: httpsession.LockAll, sticky: true,
		scenarios: []string{"read", "write", "shared-counter", "throughput"}},
	"mcsession-sticky-trust": {locking: httpsession.LockAll, sticky: true, trust: true,
		scenarios: []string{"read", "write", "shared-counter", "throughput"}},
}

func (v mcVariant) desc() string {
	s := fmt.Sprintf("mcsession httpsession, Locking=%s", v.locking)
	switch {
	case v.sticky && v.trust:
		s += ", sticky mode with TrustSticky (sessions served from this app server's cache without asking memcached; in-process lock)"
	case v.sticky:
		s += ", sticky mode (sessions served from this app server's cache after a version probe, `mg <key> c f`, no body; in-process lock)"
	}
	if v.async {
		if v.sticky {
			s += ", AsyncWrites (the whole write queued)"
		} else {
			s += ", AsyncWrites (primary written before the response, backup copy queued)"
		}
	}
	return s + ", 3 nodes with primary+backup writes"
}

// newMcsession builds an mcsession implementation: its own replica.Cluster
// over all 3 nodes (primary + backup on every save), a store.Store with
// defaults (CBOR codec, 30 min idle timeout, 24 h lifetime) plus the
// variant's sticky and asynchronous-write settings, and the httpsession
// middleware in the variant's locking mode.
func newMcsession(name string, v mcVariant, spec string, maxIdle int) (*impl, error) {
	nodes, err := replica.ParseNodes(spec)
	if err != nil {
		return nil, err
	}
	cl, err := replica.New(replica.Config{Nodes: nodes, MaxIdleConns: maxIdle})
	if err != nil {
		return nil, err
	}
	st, err := store.New(store.Config{Cluster: cl, Sticky: v.sticky, TrustSticky: v.trust, AsyncWrites: v.async})
	if err != nil {
		_ = cl.Close()
		return nil, err
	}
	discard := slog.New(slog.DiscardHandler)
	m, err := httpsession.New(st, httpsession.Options{Locking: v.locking, Logger: discard})
	if err != nil {
		_ = cl.Close()
		return nil, err
	}
	// existing returns the request's session when it has one; otherwise it
	// answers 404 itself. An error loading the session has been answered by
	// the middleware's ErrorHandler (503, 409 ...): nothing more to write.
	existing := func(w http.ResponseWriter, r *http.Request) (*httpsession.Session, string, bool) {
		s := m.Session(r)
		var user string
		ok, err := s.Get("user", &user)
		if err != nil {
			return nil, "", false
		}
		if !ok {
			http.Error(w, "no session", http.StatusNotFound)
			return nil, "", false
		}
		return s, user, true
	}
	fail := func(w http.ResponseWriter, err error) {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /new", func(w http.ResponseWriter, r *http.Request) {
		s := m.Session(r)
		user, csrf := newUser()
		for _, kv := range [...]struct {
			k string
			v any
		}{{"user", user}, {"csrf", csrf}, {"counter", 0}, {"last", 0}} {
			if err := s.Set(kv.k, kv.v); err != nil {
				fail(w, err)
				return
			}
		}
		_, _ = w.Write(okBody)
	})
	mux.HandleFunc("GET /read", func(w http.ResponseWriter, r *http.Request) {
		s, user, ok := existing(w, r)
		if !ok {
			return
		}
		var n int
		if _, err := s.Get("counter", &n); err != nil {
			fail(w, err)
			return
		}
		writeRead(w, user, n)
	})
	mux.HandleFunc("POST /write", func(w http.ResponseWriter, r *http.Request) {
		v, err := parseV(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s, _, ok := existing(w, r)
		if !ok {
			return
		}
		if err := s.Set("last", v); err != nil {
			fail(w, err)
			return
		}
		_, _ = w.Write(okBody)
	})
	mux.HandleFunc("POST /incr", func(w http.ResponseWriter, r *http.Request) {
		s, _, ok := existing(w, r)
		if !ok {
			return
		}
		var n int
		if _, err := s.Get("counter", &n); err != nil {
			fail(w, err)
			return
		}
		n++
		if err := s.Set("counter", n); err != nil {
			fail(w, err)
			return
		}
		writeInt(w, n)
	})
	mux.HandleFunc("GET /count", func(w http.ResponseWriter, r *http.Request) {
		s, _, ok := existing(w, r)
		if !ok {
			return
		}
		var n int
		if _, err := s.Get("counter", &n); err != nil {
			fail(w, err)
			return
		}
		writeInt(w, n)
	})
	return &impl{
		name:      name,
		desc:      v.desc(),
		handler:   m.Middleware(mux),
		scenarios: v.scenarios,
		settle: func(ctx context.Context) {
			m.Wait()          // background touches
			_ = st.Flush(ctx) // queued writes (AsyncWrites)
		},
		close: func() {
			// After the HTTP server stopped: the background touches and
			// the queued writes, then the connections (a Manager made by
			// New leaves the store and the cluster to their owner).
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = m.Shutdown(ctx)
			_ = st.Shutdown(ctx)
			_ = cl.Close()
		},
	}, nil
}
