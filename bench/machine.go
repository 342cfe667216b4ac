package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
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
	LoadStart  string // /proc/loadavg when the run started
	LoadEnd    string // and when it ended
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
