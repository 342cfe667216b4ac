package chaos

import (
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// stallTick is the period of a stallMeter.
const stallTick = 50 * time.Millisecond

// stallMeter measures how late a sleep of this process wakes up: the time
// the harness, and with it the in-process proxies, could not run (CPU
// starved by other processes, or paused). A stall of the proxies delays
// every node at once, as seen from the app servers.
type stallMeter struct {
	max  atomic.Int64 // nanoseconds, since the last TakeMax
	all  atomic.Int64 // nanoseconds, since the start
	done chan struct{}
}

// startStallMeter starts a meter; Stop ends it.
func startStallMeter() *stallMeter {
	m := &stallMeter{done: make(chan struct{})}
	go func() {
		for {
			start := time.Now()
			select {
			case <-m.done:
				return
			case <-time.After(stallTick):
			}
			late := int64(time.Since(start) - stallTick)
			for old := m.max.Load(); late > old && !m.max.CompareAndSwap(old, late); old = m.max.Load() {
			}
			for old := m.all.Load(); late > old && !m.all.CompareAndSwap(old, late); old = m.all.Load() {
			}
		}
	}()
	return m
}

// TakeMax returns the longest stall since the previous call.
func (m *stallMeter) TakeMax() time.Duration { return time.Duration(m.max.Swap(0)) }

// Max returns the longest stall since the start.
func (m *stallMeter) Max() time.Duration { return time.Duration(m.all.Load()) }

// Stop ends the meter.
func (m *stallMeter) Stop() { close(m.done) }

// LoadAvg returns the machine's 1-minute load average, -1 when unknown.
func LoadAvg() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}
