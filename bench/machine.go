package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// machine describes where the numbers were measured.
type machine struct {
	CPU        string
	NProc      int
	GOMAXPROCS int
	Memory     string
	Kernel     string
	Go         string
	Memcached  string
	Commit     string // the library's git commit, "+ local changes" when dirty
	LoadStart  string // /proc/loadavg when the run started
	LoadEnd    string // and when it ended
	// Foreign is the share of all CPU time during the run used by other
	// processes than the bench and its memcached nodes; ForeignOK is
	// false when it could not be measured.
	Foreign   float64
	ForeignOK bool
}

// loadavg returns the 1, 5 and 15 minute load averages, "" if unknown.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func describeMachine() machine {
	m := machine{
		CPU: "unknown", NProc: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
		Memory: "unknown", Kernel: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version(), Memcached: "unknown",
		LoadStart: loadavg(),
	}
	if v := procField("/proc/cpuinfo", "model name"); v != "" {
		m.CPU = v
	}
	if v := procField("/proc/meminfo", "MemTotal"); v != "" {
		kb, err := strconv.ParseFloat(strings.TrimSuffix(v, " kB"), 64)
		if err == nil {
			m.Memory = fmt.Sprintf("%.1f GiB", kb/1024/1024)
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = fmt.Sprintf("Linux %s (%s)", strings.TrimSpace(string(b)), runtime.GOARCH)
	}
	if out, err := exec.Command("git", "-C", "..", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "-C", "..", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
			m.Commit += " + uncommitted changes"
		}
	}
	if out, err := exec.Command("memcached", "-V").Output(); err == nil {
		m.Memcached = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "memcached "))
	}
	return m
}

// procField returns the value of the first "name : value" line of a
// /proc file.
func procField(path, name string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// cpuSample is the machine's CPU time so far, split into what this process
// and the memcached nodes used and everything else.
type cpuSample struct {
	busy, total float64 // all CPUs, seconds (from /proc/stat)
	own         float64 // this process, user + system seconds
	nodes       float64 // the memcached nodes, user + system seconds
	ok          bool
}

// sampleCPU reads the CPU counters; nodesCPU returns the memcached
// nodes' rusage.
func sampleCPU(nodesCPU func() float64) cpuSample {
	var s cpuSample
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return s
	}
	const hz = 100 // USER_HZ on Linux
	var v [8]float64
	for i := range v {
		v[i], _ = strconv.ParseFloat(f[i+1], 64)
		s.total += v[i] / hz
	}
	// user + nice + system + steal: idle and iowait are not busy, and irq
	// and softirq are mostly the bench's own loopback traffic, charged to
	// no process.
	s.busy = (v[0] + v[1] + v[2] + v[7]) / hz
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return s
	}
	s.own = tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
	s.nodes = nodesCPU()
	s.ok = true
	return s
}

func tvSeconds(tv syscall.Timeval) float64 {
	return float64(tv.Sec) + float64(tv.Usec)/1e6
}

// foreignShare returns the share of the machine's CPU time between a and b
// used by processes other than this one and its memcached nodes.
func foreignShare(a, b cpuSample) (float64, bool) {
	if !a.ok || !b.ok || b.total <= a.total {
		return 0, false
	}
	other := (b.busy - a.busy) - (b.own - a.own) - (b.nodes - a.nodes)
	return max(other, 0) / (b.total - a.total), true
}
