package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/store"
)

// LockStats reports the lock the store uses: in process in sticky mode,
// in memcached otherwise.
func TestLockStats(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	ctx := context.Background()
	for _, sticky := range []bool{false, true} {
		st := newStore(t, c, func(cfg *store.Config) { cfg.Sticky = sticky })
		id := saved(t, st, map[string]any{"n": 1}).ID()
		for range 3 {
			s, err := st.LoadLocked(ctx, id)
			require.NoError(t, err)
			require.NoError(t, st.SaveAndRelease(ctx, s))
		}
		ls := st.LockStats()
		require.Equal(t, uint64(3), ls.Acquired, "sticky=%v", sticky)
		require.Equal(t, uint64(3), ls.Released, "sticky=%v", sticky)
		require.Equal(t, uint64(3), ls.AcquireLatency.Count, "sticky=%v", sticky)
		if sticky {
			require.Zero(t, st.Locker().Stats().Acquired, "the memcached lock is unused in sticky mode")
		} else {
			require.Equal(t, st.Locker().Stats().Acquired, ls.Acquired)
		}
	}
}
