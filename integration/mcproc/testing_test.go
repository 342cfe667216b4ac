package mcproc

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMissingBinaryAction(t *testing.T) {
	tests := []struct {
		ci   string
		want string
	}{
		{ci: "true", want: "fatal"},
		{ci: "", want: "skip"},
		{ci: "false", want: "skip"},
		{ci: "1", want: "skip"},
		{ci: "TRUE", want: "skip"},
	}
	for _, tt := range tests {
		t.Run("CI="+tt.ci, func(t *testing.T) {
			require.Equal(t, tt.want, missingBinaryAction(tt.ci))
		})
	}
}

func TestRequireBinary(t *testing.T) {
	want, err := FindBinary()
	if err != nil {
		t.Skipf("memcached not installed: %v", err)
	}
	require.Equal(t, want, RequireBinary(t))
}

func TestClientSettings(t *testing.T) {
	p := NewProcess(t)
	c := p.Client()
	require.Equal(t, 4, c.MaxIdleConns)
	require.Equal(t, "1s", c.Timeout.String())
	require.NoError(t, c.Ping())
}
