package mcproc

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeM stands for *testing.M: it records its run and returns code.
type fakeM struct {
	code int
	ran  int
	run  func()
}

func (m *fakeM) Run() int {
	m.ran++
	if m.run != nil {
		m.run()
	}
	return m.code
}

func missing() (string, error) {
	return "", fmt.Errorf("%w: exec: \"memcached\": not found", ErrNotInstalled)
}

func TestRunMainMissingBinary(t *testing.T) {
	tests := []struct {
		ci       string
		wantCode int
		wantMsg  string
	}{
		{ci: "true", wantCode: 1, wantMsg: "FAIL: mcproc: memcached binary not found"},
		{ci: "", wantCode: 0, wantMsg: "SKIP: mcproc: memcached binary not found"},
		{ci: "false", wantCode: 0, wantMsg: "SKIP: mcproc: memcached binary not found"},
	}
	for _, tt := range tests {
		t.Run("CI="+tt.ci, func(t *testing.T) {
			m := &fakeM{}
			used := false
			var out bytes.Buffer
			code := runMain(m, 2, func(*Cluster) { used = true }, missing, tt.ci, &out)
			require.Equal(t, tt.wantCode, code)
			require.Zero(t, m.ran, "nothing runs without memcached")
			require.False(t, used)
			require.Contains(t, out.String(), tt.wantMsg)
			require.Contains(t, out.String(), "make deps")
		})
	}
}

func TestRunMain(t *testing.T) {
	bin := RequireBinary(t)
	var c *Cluster
	m := &fakeM{code: 3}
	m.run = func() {
		require.NotNil(t, c, "use runs before the tests")
		require.Len(t, c.Nodes, 2)
		for _, n := range c.Nodes {
			require.True(t, n.Running(), n.ID)
			require.NoError(t, n.Client().Ping())
		}
	}
	var out bytes.Buffer
	code := runMain(m, 2, func(got *Cluster) { c = got }, func() (string, error) { return bin, nil }, "true", &out)
	require.Equal(t, 3, code, "the tests' exit code")
	require.Equal(t, 1, m.ran)
	require.Empty(t, out.String())
	for _, n := range c.Nodes {
		require.False(t, n.Running(), "%s stopped after the tests", n.ID)
		requireDown(t, n.Addr())
	}
}

func TestRunMainNilUse(t *testing.T) {
	bin := RequireBinary(t)
	m := &fakeM{}
	var out bytes.Buffer
	require.Equal(t, 0, runMain(m, 1, nil, func() (string, error) { return bin, nil }, "", &out))
	require.Equal(t, 1, m.ran)
}

func TestRunMainStartFailure(t *testing.T) {
	bin := RequireBinary(t)
	m := &fakeM{}
	var out bytes.Buffer
	code := runMain(m, 0, nil, func() (string, error) { return bin, nil }, "", &out)
	require.Equal(t, 1, code)
	require.Zero(t, m.ran)
	require.Contains(t, out.String(), "FAIL: mcproc: start cluster")
}

func TestRunMainPanicStopsNodes(t *testing.T) {
	bin := RequireBinary(t)
	var c *Cluster
	m := &fakeM{}
	require.PanicsWithValue(t, "boom", func() {
		runMain(m, 1, func(got *Cluster) { c = got; panic("boom") }, func() (string, error) { return bin, nil }, "", &bytes.Buffer{})
	})
	require.Zero(t, m.ran)
	require.False(t, c.Nodes[0].Running())
}
