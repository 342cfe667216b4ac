package syncbuf

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestConcurrentWritesAndReads writes from several goroutines while
// reading (run with -race) and finds every write.
func TestConcurrentWritesAndReads(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 100 {
				_, _ = fmt.Fprintf(&b, "%d-%d\n", i, j)
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	require.Equal(t, 400, strings.Count(b.String(), "\n"))
}

// TestLines returns the lines holding a string, in order.
func TestLines(t *testing.T) {
	var b Buffer
	_, _ = b.Write([]byte("a x\nb\nc x\n"))
	require.Equal(t, []string{"a x", "c x"}, b.Lines("x"))
	require.Empty(t, b.Lines("none"))
}
