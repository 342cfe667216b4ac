package replica

import (
	"math"
	"time"
)

// MaxRelativeExpiration is the largest exptime memcached reads as seconds
// from now (30 days); a larger value is read as an absolute Unix time.
const MaxRelativeExpiration = 30 * 24 * time.Hour

// Expiration converts a time to live into memcached's exptime. The TTL is
// rounded up to whole seconds; a TTL over 30 days becomes the absolute Unix
// time now+ttl, since memcached would read the plain number of seconds as a
// date in 1970 and expire the item at once. A TTL of zero or less returns -1,
// which expires the item at once: Expiration never returns 0, which memcached
// reads as "never expires". memcached's exptime is a 32-bit number, so an
// absolute time past January 2038 is clamped to the largest one (it never
// wraps to a date in the past, which would expire the item at once).
func Expiration(ttl time.Duration, now time.Time) int32 {
	if ttl <= 0 {
		return -1
	}
	secs := int64((ttl + time.Second - 1) / time.Second)
	if time.Duration(secs)*time.Second > MaxRelativeExpiration {
		return int32(min(now.Unix()+secs, math.MaxInt32))
	}
	return int32(secs)
}
