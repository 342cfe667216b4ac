package routers_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gorilla/mux"

	"github.com/mcsession/mcsession/examples/routers"
	"github.com/mcsession/mcsession/httpsession"
)

// browser is an HTTP client with a cookie jar, like a browser.
type browser struct{ *http.Client }

func newBrowser() browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		log.Fatal(err)
	}
	return browser{&http.Client{Jar: jar, Timeout: 10 * time.Second}}
}

// do sends a request and returns the body, preceded by the status when it
// is not 200 OK.
func (b browser) do(method, url string) string {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		log.Fatal(err)
	}
	resp, err := b.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return strings.TrimSpace(string(body))
}

// visit logs in at base and reads the items 1 to 4, printing the answers.
func visit(base string) {
	b := newBrowser()
	b.do(http.MethodPost, base+"/login")
	for i := 1; i <= 4; i++ {
		fmt.Println(b.do(http.MethodGet, fmt.Sprintf("%s/items/%d", base, i)))
	}
}

// With chi, install the session middleware with the router's Use: chi's
// routing state, which ChiRoute reads, is shared by the requests of all
// its middlewares and complete by the time the handler uses the session.
// After three read-only requests of GET /items/{id} (Options.AutoThreshold),
// LockAuto runs that route without the session lock, whatever the id.
func ExampleChiRoute() {
	sessions, err := httpsession.Open(nodeList, httpsession.Options{
		Locking: httpsession.LockAuto,
		Route:   routers.ChiRoute,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sessions.Close() // after the server stopped

	r := chi.NewRouter()
	r.Use(sessions.Middleware)
	r.Post("/login", func(w http.ResponseWriter, r *http.Request) {
		_ = httpsession.FromContext(r.Context()).Set("user", "ann")
	})
	r.Get("/items/{id}", func(w http.ResponseWriter, r *http.Request) {
		s := httpsession.FromContext(r.Context())
		user, _, err := httpsession.Get[string](s, "user")
		if err != nil { // memcached down: the middleware answers 503 instead
			http.Error(w, "session error", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "%s reads item %s, locked: %t", user, chi.URLParam(r, "id"), s.Locked())
	})
	srv := httptest.NewServer(r) // http.ListenAndServe(addr, r) in production
	defer srv.Close()

	visit(srv.URL)
	fmt.Println("unlocked requests:", sessions.Stats().AutoUnlocked)
	// Output:
	// ann reads item 1, locked: true
	// ann reads item 2, locked: true
	// ann reads item 3, locked: true
	// ann reads item 4, locked: false
	// unlocked requests: 1
}

// When the chi router runs inside the session middleware (for example
// because the middleware wraps the whole application), the middleware's
// request predates chi's routing: handlers must reach the session with
// Manager.Session(r), so that ChiRoute is asked with the routed request.
// With httpsession.FromContext every concrete path would stay its own
// route.
func ExampleChiRoute_routerInside() {
	sessions, err := httpsession.Open(nodeList, httpsession.Options{
		Locking: httpsession.LockAuto,
		Route:   routers.ChiRoute,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sessions.Close()

	r := chi.NewRouter()
	r.Post("/login", func(w http.ResponseWriter, r *http.Request) {
		_ = sessions.Session(r).Set("user", "ann")
	})
	r.Get("/items/{id}", func(w http.ResponseWriter, r *http.Request) {
		s := sessions.Session(r) // not FromContext(r.Context())
		user, _, err := httpsession.Get[string](s, "user")
		if err != nil {
			return
		}
		fmt.Fprintf(w, "%s reads item %s, locked: %t", user, chi.URLParam(r, "id"), s.Locked())
	})
	srv := httptest.NewServer(sessions.Middleware(r))
	defer srv.Close()

	visit(srv.URL)
	fmt.Println("unlocked requests:", sessions.Stats().AutoUnlocked)
	// Output:
	// ann reads item 1, locked: true
	// ann reads item 2, locked: true
	// ann reads item 3, locked: true
	// ann reads item 4, locked: false
	// unlocked requests: 1
}

// With gorilla/mux, install the session middleware with the router's Use:
// gorilla/mux matches the route before it runs its middlewares, so the
// middleware's request carries the route MuxRoute reads. Routes of
// subrouters have their full template ("/api/items/{id}").
func ExampleMuxRoute() {
	sessions, err := httpsession.Open(nodeList, httpsession.Options{
		Locking: httpsession.LockAuto,
		Route:   routers.MuxRoute,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sessions.Close()

	r := mux.NewRouter()
	r.Use(sessions.Middleware)
	r.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		_ = httpsession.FromContext(r.Context()).Set("user", "ann")
	}).Methods(http.MethodPost)
	r.HandleFunc("/items/{id}", func(w http.ResponseWriter, r *http.Request) {
		s := httpsession.FromContext(r.Context())
		user, _, err := httpsession.Get[string](s, "user")
		if err != nil {
			return
		}
		fmt.Fprintf(w, "%s reads item %s, locked: %t", user, mux.Vars(r)["id"], s.Locked())
	}).Methods(http.MethodGet)
	srv := httptest.NewServer(r)
	defer srv.Close()

	visit(srv.URL)
	fmt.Println("unlocked requests:", sessions.Stats().AutoUnlocked)
	// Output:
	// ann reads item 1, locked: true
	// ann reads item 2, locked: true
	// ann reads item 3, locked: true
	// ann reads item 4, locked: false
	// unlocked requests: 1
}

// With the gorilla/mux router inside the session middleware, handlers
// reach the session with Manager.Session(r), as with chi. Unlike Use, this
// also gives a session to the requests no route matched (the router's
// NotFoundHandler), since gorilla/mux runs the middlewares of its Use only
// for matched routes.
func ExampleMuxRoute_routerInside() {
	sessions, err := httpsession.Open(nodeList, httpsession.Options{
		Locking: httpsession.LockAuto,
		Route:   routers.MuxRoute,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sessions.Close()

	r := mux.NewRouter()
	r.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		_ = sessions.Session(r).Set("user", "ann")
	}).Methods(http.MethodPost)
	r.HandleFunc("/items/{id}", func(w http.ResponseWriter, r *http.Request) {
		s := sessions.Session(r)
		user, _, err := httpsession.Get[string](s, "user")
		if err != nil {
			return
		}
		fmt.Fprintf(w, "%s reads item %s, locked: %t", user, mux.Vars(r)["id"], s.Locked())
	}).Methods(http.MethodGet)
	srv := httptest.NewServer(sessions.Middleware(r))
	defer srv.Close()

	visit(srv.URL)
	fmt.Println("unlocked requests:", sessions.Stats().AutoUnlocked)
	// Output:
	// ann reads item 1, locked: true
	// ann reads item 2, locked: true
	// ann reads item 3, locked: true
	// ann reads item 4, locked: false
	// unlocked requests: 1
}
