package store

import "github.com/mcsession/mcsession/lock"

// LockStats returns the statistics of the session lock this store uses:
// the in-process lock in sticky mode (Config.Sticky), the memcached lock
// (Locker().Stats()) otherwise.
func (st *Store) LockStats() lock.Stats {
	if st.local != nil {
		return st.local.Stats()
	}
	return st.locker.Stats()
}
