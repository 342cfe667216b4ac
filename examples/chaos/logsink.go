package chaos

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
)

// breakerLine is the message the library logs when a node's circuit
// breaker changes state (replica, "memcached node breaker changed state"
// with node, from and to).
const breakerLine = `msg="memcached node breaker changed state"`

// LogSink receives an app server's log (its standard error): it appends
// every line to a file and counts the circuit breaker trips (changes to
// "open") per node. It is safe for concurrent use.
type LogSink struct {
	mu      sync.Mutex
	f       *os.File
	w       *bufio.Writer
	partial []byte
	trips   map[string]int
	path    string
}

// NewLogSink opens path for appending (creating it).
func NewLogSink(path string) (*LogSink, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("chaos: app log: %w", err)
	}
	return &LogSink{f: f, w: bufio.NewWriter(f), trips: map[string]int{}, path: path}, nil
}

// Path returns the log file's path.
func (s *LogSink) Path() string { return s.path }

// Write appends p to the file and counts the complete lines in it.
func (s *LogSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return len(p), nil
	}
	_, _ = s.w.Write(p)
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		s.line(string(s.partial[:i]))
		s.partial = s.partial[i+1:]
	}
	if len(s.partial) > 64<<10 { // a line that never ends is not counted
		s.partial = s.partial[:0]
	}
	return len(p), nil
}

// line counts one log line.
func (s *LogSink) line(l string) {
	if strings.Contains(l, breakerLine) && strings.Contains(l, " to=open") {
		s.trips[field(l, "node")]++
	}
}

// field returns the value of key=value in a slog text line ("" if absent).
func field(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	v := line[i+len(key)+2:]
	if strings.HasPrefix(v, `"`) {
		if j := strings.Index(v[1:], `"`); j >= 0 {
			return v[1 : j+1]
		}
		return v[1:]
	}
	if j := strings.IndexByte(v, ' '); j >= 0 {
		return v[:j]
	}
	return v
}

// Trips returns the breaker trips counted so far, per node.
func (s *LogSink) Trips() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.trips))
	for k, v := range s.trips {
		out[k] = v
	}
	return out
}

// Flush writes what is buffered to the file.
func (s *LogSink) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f != nil {
		_ = s.w.Flush()
	}
}

// Close flushes and closes the file; later writes are dropped.
func (s *LogSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.w.Flush()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	s.f = nil
	return err
}

// Grep returns the lines of the log files that contain any of words, at
// most max lines, each prefixed with the file's base name.
func Grep(paths []string, words []string, max int) []string {
	var out []string
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		base := p[strings.LastIndexByte(p, '/')+1:]
		for _, l := range strings.Split(string(data), "\n") {
			for _, w := range words {
				if w != "" && strings.Contains(l, w) {
					if len(out) >= max {
						return out
					}
					out = append(out, base+": "+l)
					break
				}
			}
		}
	}
	return out
}
