//go:build unix

package mcproc_test

import (
	"net"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
)

func TestPauseResume(t *testing.T) {
	p := mcproc.NewProcess(t)
	c := p.Client()
	require.NoError(t, c.Set(&memcache.Item{Key: "k", Value: []byte("v")}))
	require.NoError(t, p.Pause())

	mc := memcache.New(p.Addr())
	mc.Timeout = 200 * time.Millisecond
	start := time.Now()
	_, err := mc.Get("k")
	require.Error(t, err, "a paused node answers nothing")
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout(), "a timeout, not a refused connection: %v", err)
	require.Less(t, time.Since(start), 2*time.Second)

	require.NoError(t, p.Resume())
	it, err := c.Get("k")
	require.NoError(t, err)
	require.Equal(t, "v", string(it.Value), "the data survived the pause")

	require.NoError(t, p.Pause())
	require.NoError(t, p.Kill(), "a paused node can be killed")
	require.Error(t, p.Resume())
}
