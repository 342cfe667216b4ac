package httpsession_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"time"

	"github.com/mcsession/mcsession/codec"
	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

// browser is a client with a cookie jar, like a browser.
type browser struct{ *http.Client }

func newBrowser() browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		log.Fatal(err)
	}
	return browser{&http.Client{Jar: jar, Timeout: 10 * time.Second}}
}

// do sends a request and returns the status and body, as "200 body".
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
	return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
}

// cookie returns the session cookie the browser holds for srv.
func (b browser) cookie(srv *httptest.Server) string {
	u, _ := url.Parse(srv.URL)
	for _, c := range b.Jar.Cookies(u) {
		if c.Name == httpsession.DefaultCookieName {
			return c.Value
		}
	}
	return ""
}

// The whole setup: Open the sessions on the memcached nodes, wrap the
// handlers with the middleware, Close at shutdown.
func Example() {
	sessions, err := httpsession.Open(nodeList, httpsession.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer sessions.Close()

	mux := http.NewServeMux()
	mux.HandleFunc("POST /visit", func(w http.ResponseWriter, r *http.Request) {
		s := httpsession.FromContext(r.Context())
		n, _, err := httpsession.Get[int](s, "visits")
		if err == nil {
			err = s.Set("visits", n+1)
		}
		if err != nil { // memcached down: the middleware answers 503 instead
			http.Error(w, "session error", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "visit %d", n+1)
	})
	srv := httptest.NewServer(sessions.Middleware(mux)) // http.ListenAndServe in production
	defer srv.Close()

	b := newBrowser()
	for range 3 {
		fmt.Println(b.do("POST", srv.URL+"/visit"))
	}
	// Output:
	// 200 visit 1
	// 200 visit 2
	// 200 visit 3
}

// Open with the layers below configured: the store (key prefix, idle
// timeout, codec) and the cluster (node timeout).
func ExampleOpen() {
	sessions, err := httpsession.Open(nodeList, httpsession.Options{
		CookieName: "sid",
		Locking:    httpsession.LockAuto,
		Store: store.Config{
			KeyPrefix:   "shop:",
			IdleTimeout: 2 * time.Hour,
			Codec:       codec.NewJSON(),
		},
		Cluster: replica.Config{Timeout: 200 * time.Millisecond},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sessions.Close()

	opts := sessions.Options()
	fmt.Println(opts.CookieName, opts.Locking, sessions.Store().Cluster().NodeIDs())
	key, backup, lockKey := sessions.Store().MemcachedKeys("0123456789abcdef0123456789abcdef-n1")
	fmt.Println(key)
	fmt.Println(backup)
	fmt.Println(lockKey)
	// Output:
	// sid auto [n1 n2]
	// shop:0123456789abcdef0123456789abcdef-n1
	// shop:bak:0123456789abcdef0123456789abcdef-n1
	// shop:lock:0123456789abcdef0123456789abcdef-n1
}

// Typed values: any value the codec can encode, read back with Get.
func ExampleGet() {
	type Cart struct {
		Items []string
		Total float64
	}
	sessions, err := httpsession.Open(nodeList, httpsession.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer sessions.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /add", func(w http.ResponseWriter, r *http.Request) {
		s := httpsession.FromContext(r.Context())
		cart, _, err := httpsession.Get[Cart](s, "cart")
		if err != nil {
			return
		}
		cart.Items = append(cart.Items, r.URL.Query().Get("item"))
		cart.Total += 9.5
		_ = s.Set("cart", cart)
	})
	mux.HandleFunc("GET /cart", func(w http.ResponseWriter, r *http.Request) {
		cart, found, err := httpsession.Get[Cart](httpsession.FromContext(r.Context()), "cart")
		if err != nil {
			return
		}
		fmt.Fprintln(w, found, cart.Items, cart.Total)
	})
	srv := httptest.NewServer(sessions.Middleware(mux))
	defer srv.Close()

	b := newBrowser()
	fmt.Println(b.do("GET", srv.URL+"/cart"))
	b.do("POST", srv.URL+"/add?item=tea")
	b.do("POST", srv.URL+"/add?item=cake")
	fmt.Println(b.do("GET", srv.URL+"/cart"))
	// Output:
	// 200 false [] 0
	// 200 true [tea cake] 19
}

// Log in with a new session id (against session fixation) and log out by
// destroying the session: the old ids lead nowhere.
func ExampleSession_RenewID() {
	sessions, err := httpsession.Open(nodeList, httpsession.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer sessions.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		s := httpsession.FromContext(r.Context())
		if err := s.RenewID(r.Context()); err != nil {
			return
		}
		_ = s.Set("user", r.URL.Query().Get("user"))
	})
	mux.HandleFunc("POST /logout", func(w http.ResponseWriter, r *http.Request) {
		_ = httpsession.FromContext(r.Context()).Destroy(r.Context())
	})
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		user, ok, err := httpsession.Get[string](httpsession.FromContext(r.Context()), "user")
		if err == nil {
			fmt.Fprintf(w, "user=%q found=%v", user, ok)
		}
	})
	mux.HandleFunc("POST /prefs", func(w http.ResponseWriter, r *http.Request) {
		_ = httpsession.FromContext(r.Context()).Set("theme", "dark")
	})
	srv := httptest.NewServer(sessions.Middleware(mux))
	defer srv.Close()

	b := newBrowser()
	b.do("POST", srv.URL+"/prefs") // an anonymous session
	anonymous := b.cookie(srv)
	b.do("POST", srv.URL+"/login?user=ada")
	fmt.Println(b.do("GET", srv.URL+"/whoami"))
	fmt.Println("new id at login:", b.cookie(srv) != anonymous)
	loggedIn := b.cookie(srv)

	b.do("POST", srv.URL+"/logout")
	fmt.Println(b.do("GET", srv.URL+"/whoami"))
	fmt.Println("cookie after logout:", b.cookie(srv) == "")

	// Someone who kept the logged-in cookie finds nothing behind it.
	_, err = sessions.Store().Load(context.Background(), loggedIn)
	fmt.Println(errors.Is(err, store.ErrNotFound))
	// Output:
	// 200 user="ada" found=true
	// new id at login: true
	// 200 user="" found=false
	// cookie after logout: true
	// true
}

// Lock only the requests that need it: LockNone for the application, the
// lock forced for the checkout, which must not run twice at once.
func ExampleForceLock() {
	sessions, err := httpsession.Open(nodeList, httpsession.Options{Locking: httpsession.LockNone})
	if err != nil {
		log.Fatal(err)
	}
	defer sessions.Close()
	show := func(w http.ResponseWriter, r *http.Request) {
		s := httpsession.FromContext(r.Context())
		if err := s.Set("seen", true); err != nil {
			return
		}
		fmt.Fprint(w, "locked=", s.Locked())
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /browse", show)
	mux.Handle("POST /checkout", httpsession.ForceLock(http.HandlerFunc(show)))
	srv := httptest.NewServer(sessions.Middleware(mux))
	defer srv.Close()

	b := newBrowser()
	b.do("POST", srv.URL+"/browse") // creates the session (a new session needs no lock)
	fmt.Println(b.do("POST", srv.URL+"/browse"))
	fmt.Println(b.do("POST", srv.URL+"/checkout"))
	// Output:
	// 200 locked=false
	// 200 locked=true
}

// Decide per request, before the session is first used: here a query
// parameter makes a request skip the lock under LockAll.
func ExampleOverrideLocking() {
	sessions, err := httpsession.Open(nodeList, httpsession.Options{Locking: httpsession.LockAll})
	if err != nil {
		log.Fatal(err)
	}
	defer sessions.Close()
	handler := func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("readonly") {
			if err := httpsession.OverrideLocking(r, httpsession.SkipLocking); err != nil {
				return
			}
		}
		s := httpsession.FromContext(r.Context())
		if err := s.Set("n", 1); err != nil {
			return
		}
		fmt.Fprint(w, "locked=", s.Locked())
	}
	srv := httptest.NewServer(sessions.Middleware(http.HandlerFunc(handler)))
	defer srv.Close()

	b := newBrowser()
	b.do("POST", srv.URL+"/")
	fmt.Println(b.do("POST", srv.URL+"/"))
	fmt.Println(b.do("POST", srv.URL+"/?readonly"))
	// Output:
	// 200 locked=true
	// 200 locked=false
}

// Take the lock in the middle of a request, once the handler knows it
// will modify the session (useful under LockNone and LockAuto).
func ExampleSession_Lock() {
	sessions, err := httpsession.Open(nodeList, httpsession.Options{Locking: httpsession.LockNone})
	if err != nil {
		log.Fatal(err)
	}
	defer sessions.Close()
	handler := func(w http.ResponseWriter, r *http.Request) {
		s := httpsession.FromContext(r.Context())
		n, _, err := httpsession.Get[int](s, "n")
		if err != nil {
			return
		}
		if r.Method == http.MethodPost {
			// Locking reloads the session, so read again under the lock.
			if err := s.Lock(r.Context()); err != nil {
				return
			}
			if n, _, err = httpsession.Get[int](s, "n"); err != nil {
				return
			}
			n++
			if err := s.Set("n", n); err != nil {
				return
			}
		}
		fmt.Fprint(w, "n=", n, " locked=", s.Locked())
	}
	srv := httptest.NewServer(sessions.Middleware(http.HandlerFunc(handler)))
	defer srv.Close()

	b := newBrowser()
	b.do("POST", srv.URL+"/")
	fmt.Println(b.do("GET", srv.URL+"/"))
	fmt.Println(b.do("POST", srv.URL+"/"))
	// Output:
	// 200 n=1 locked=false
	// 200 n=2 locked=true
}

// Failure handling: when memcached cannot be reached the middleware
// replaces the response with the ErrorHandler's; StatusCode gives the
// status DefaultErrorHandler would use (503 here, with Retry-After).
func ExampleStatusCode() {
	sessions, err := httpsession.Open(deadNodeList, httpsession.Options{
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			code := httpsession.StatusCode(err)
			fmt.Println("session failed:", code, errors.Is(err, store.ErrUnavailable))
			http.Error(w, "try again in a moment", code)
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sessions.Close()
	handler := func(w http.ResponseWriter, r *http.Request) {
		if err := httpsession.FromContext(r.Context()).Set("n", 1); err != nil {
			return // the ErrorHandler answers
		}
		fmt.Fprint(w, "saved")
	}
	srv := httptest.NewServer(sessions.Middleware(http.HandlerFunc(handler)))
	defer srv.Close()

	fmt.Println(newBrowser().do("POST", srv.URL+"/"))
	// Output:
	// session failed: 503 true
	// 503 try again in a moment
}
