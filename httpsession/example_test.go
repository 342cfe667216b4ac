package httpsession_test

import (
	"fmt"
	"log"
	"net/http"
	"regexp"

	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

// newStore builds a store on two local memcached nodes.
func exampleStore() *store.Store {
	nodes, err := replica.ParseNodes("n1=127.0.0.1:11211,n2=127.0.0.1:11212")
	if err != nil {
		log.Fatal(err)
	}
	cluster, err := replica.New(replica.Config{Nodes: nodes})
	if err != nil {
		log.Fatal(err)
	}
	st, err := store.New(store.Config{Cluster: cluster})
	if err != nil {
		log.Fatal(err)
	}
	return st
}

func ExampleManager_Middleware() {
	m, err := httpsession.New(exampleStore(), httpsession.Options{
		Locking: httpsession.LockAuto,
		Ignore:  []*regexp.Regexp{regexp.MustCompile(`^/static/`)},
	})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /visit", func(w http.ResponseWriter, r *http.Request) {
		s := httpsession.FromContext(r.Context())
		n, _, err := httpsession.Get[int](s, "visits")
		if err != nil {
			return // the middleware answers with Options.ErrorHandler
		}
		if err := s.Set("visits", n+1); err != nil {
			return
		}
		fmt.Fprintf(w, "visit %d\n", n+1)
	})
	mux.Handle("/static/", http.FileServer(http.Dir(".")))
	log.Fatal(http.ListenAndServe(":8080", m.Middleware(mux)))
}

func ExampleSession_RenewID() {
	login := func(w http.ResponseWriter, r *http.Request) {
		s := httpsession.FromContext(r.Context())
		// New id against session fixation, then remember the user.
		if err := s.RenewID(r.Context()); err != nil {
			return
		}
		if err := s.Set("user", r.FormValue("user")); err != nil {
			return
		}
		http.Redirect(w, r, "/", http.StatusSeeOther)
	}
	logout := func(w http.ResponseWriter, r *http.Request) {
		_ = httpsession.FromContext(r.Context()).Destroy(r.Context())
		http.Redirect(w, r, "/", http.StatusSeeOther)
	}
	http.HandleFunc("POST /login", login)
	http.HandleFunc("POST /logout", logout)
}

func ExampleForceLock() {
	m, err := httpsession.New(exampleStore(), httpsession.Options{Locking: httpsession.LockNone})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	// Only the checkout needs to be serialised with the other requests of
	// its session.
	mux.Handle("POST /checkout", httpsession.ForceLock(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := httpsession.FromContext(r.Context())
		cart, _, err := httpsession.Get[[]string](s, "cart")
		if err != nil {
			return
		}
		_ = s.Remove("cart")
		fmt.Fprintf(w, "ordered %d items\n", len(cart))
	})))
	log.Fatal(http.ListenAndServe(":8080", m.Middleware(mux)))
}

func ExampleSession_Lock() {
	handler := func(w http.ResponseWriter, r *http.Request) {
		s := httpsession.FromContext(r.Context())
		if r.Method == http.MethodPost {
			// Lock lazily, only when this request turns out to modify.
			if err := s.Lock(r.Context()); err != nil {
				return
			}
			_ = s.Set("seen", true)
		}
		seen, _, _ := httpsession.Get[bool](s, "seen")
		fmt.Fprintln(w, seen)
	}
	http.HandleFunc("/", handler)
}

func ExampleOverrideLocking() {
	handler := func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("readonly") {
			// Before the first use of the session.
			_ = httpsession.OverrideLocking(r, httpsession.SkipLocking)
		}
		user, _, _ := httpsession.Get[string](httpsession.FromContext(r.Context()), "user")
		fmt.Fprintln(w, user)
	}
	http.HandleFunc("/", handler)
}
