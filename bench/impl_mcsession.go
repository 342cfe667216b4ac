package main

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

// newMcsession builds an mcsession implementation: its own replica.Cluster
// over all 3 nodes (primary + backup on every save), a store.Store with
// defaults (CBOR codec, 30 min idle timeout, 24 h lifetime) and the
// httpsession middleware in the given locking mode.
func newMcsession(name string, mode httpsession.LockMode, spec string, maxIdle int) (*impl, error) {
	nodes, err := replica.ParseNodes(spec)
	if err != nil {
		return nil, err
	}
	cl, err := replica.New(replica.Config{Nodes: nodes, MaxIdleConns: maxIdle})
	if err != nil {
		return nil, err
	}
	st, err := store.New(store.Config{Cluster: cl})
	if err != nil {
		return nil, err
	}
	discard := slog.New(slog.DiscardHandler)
	m, err := httpsession.New(st, httpsession.Options{Locking: mode, Logger: discard})
	if err != nil {
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
		name:    name,
		desc:    fmt.Sprintf("mcsession httpsession, Locking=%s, 3 nodes with primary+backup writes", mode),
		handler: m.Middleware(mux),
		close: func() {
			m.Wait() // background touches
			_ = cl.Close()
		},
	}, nil
}
