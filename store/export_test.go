package store

// SessionExptime is the store's rule for the memcached exptime of a
// session's items (ttl), for the storage-format vectors of package
// store_test.
var SessionExptime = ttl

// ManualFences makes st re-read the fences only when RefreshFences is
// called, never by itself while it serves loads: tests that count
// memcached commands use it.
func ManualFences(st *Store) { st.fences.manual = true }
