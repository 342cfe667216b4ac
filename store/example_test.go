package store_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

// A Store over three memcached nodes: create a session, save it (primary
// and backup copy), load it on another request and change it under the
// session lock.
func Example() {
	nodes, err := replica.ParseNodes("n1=127.0.0.1:11211,n2=127.0.0.1:11212,n3=127.0.0.1:11213")
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
	ctx := context.Background()

	s, err := st.NewSession(ctx)
	if err != nil {
		log.Fatal(err)
	}
	_ = s.Set("user", "ada")
	if err := st.Save(ctx, s); err != nil {
		log.Fatal(err)
	}
	id := s.ID() // the cookie value

	// A later request, on any app server: lock, load, modify, save, unlock.
	s, err = st.LoadLocked(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return // expired, forged or unknown: start a fresh session
	}
	if err != nil {
		log.Fatal(err)
	}
	n, _, _ := store.Get[int](s, "visits")
	_ = s.Set("visits", n+1)
	if err := st.SaveAndRelease(ctx, s); err != nil {
		log.Fatal(err)
	}
	user, _, _ := store.Get[string](s, "user")
	fmt.Println(user, n+1)
}
