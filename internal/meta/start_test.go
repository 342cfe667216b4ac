package meta

import (
	"errors"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
)

// TestStartFinishOverlapsBatches sends batches to two nodes with Start
// before reading either answer with Finish, and checks each batch gets its
// own answers; a batch to a dead node fails on its own.
func TestStartFinishOverlapsBatches(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	pools := make([]*Pool, 3)
	for i, n := range c.Nodes {
		pools[i] = newPool(t, n.Addr(), Config{})
	}
	ctx := testCtx(t)
	require.NoError(t, c.Nodes[2].Kill())
	reqs := make([][]Request, 3)
	outs := make([][]Response, 3)
	calls := make([]Call, 3)
	for i := range pools {
		v := []byte{'a' + byte(i)}
		reqs[i] = []Request{
			{Command: Set, Key: "k", Value: v, TTL: 60, ReturnCAS: true},
			{Command: Get, Key: "k", ReturnValue: true},
		}
		outs[i] = make([]Response, 2)
		pools[i].Start(ctx, reqs[i], outs[i], &calls[i])
	}
	for i := range pools[:2] {
		require.NoError(t, calls[i].Finish())
		require.Equal(t, StatusOK, outs[i][0].Status)
		require.NotZero(t, outs[i][0].CAS)
		require.Equal(t, []byte{'a' + byte(i)}, outs[i][1].Value, "node %d got its own answers", i)
		require.Equal(t, 1, pools[i].Stats().Idle, "connection returned")
	}
	err := calls[2].Finish()
	require.ErrorIs(t, err, ErrNotSent)
	require.True(t, errors.Is(err, syscall.ECONNREFUSED))
	require.ErrorIs(t, calls[2].Finish(), ErrNotSent, "Finish again returns the same error")

	// A bad request fails in Start; Finish reports it, nothing was sent.
	var bad Call
	pools[0].Start(ctx, []Request{{Command: Get, Key: "has space"}}, make([]Response, 1), &bad)
	require.ErrorIs(t, bad.Finish(), ErrBadRequest)
	require.Equal(t, uint64(1), pools[0].Stats().Batches)
}
