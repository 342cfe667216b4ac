package store_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/mcsession/mcsession/store"
)

// Log out everywhere: a user logs in from two devices (two sessions
// linked to the user with SetUser, each listed in the user's index by its
// save); any app server lists them and destroys them all.
func ExampleStore_DestroyUser() {
	st := openStore(store.Config{KeyPrefix: "example-users:"})
	defer st.Cluster().Close()
	ctx := context.Background()

	var ids []string
	for range 2 { // two logins of grace
		s, err := st.NewSession(ctx)
		if err != nil {
			log.Fatal(err)
		}
		if err := s.SetUser("grace"); err != nil {
			log.Fatal(err)
		}
		if err := st.Save(ctx, s); err != nil { // stores it, then lists it
			log.Fatal(err)
		}
		ids = append(ids, s.ID())
	}

	list, err := st.UserSessions(ctx, "grace")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("sessions:", len(list))

	n, err := st.DestroyUser(ctx, "grace")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("destroyed:", n)
	for _, id := range ids {
		_, err := st.Load(ctx, id)
		fmt.Println(errors.Is(err, store.ErrNotFound))
	}
	list, _ = st.UserSessions(ctx, "grace")
	fmt.Println("sessions:", len(list))
	// Output:
	// sessions: 2
	// destroyed: 2
	// true
	// true
	// sessions: 0
}
