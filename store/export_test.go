package store

// SessionExptime is the store's rule for the memcached exptime of a
// session's items (ttl), for the storage-format vectors of package
// store_test.
var SessionExptime = ttl
