package chaos

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine describes where a run took place, for the reports: "2-vCPU
// Intel(R) Xeon(R) ..., Linux 6.1, go1.26.8, memcached 1.6.18, commit
// abc1234".
func Machine(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	parts := []string{runtime.Version()}
	if cpu := cpuModel(); cpu != "" {
		parts = append([]string{cpu}, parts...)
	}
	if out, err := exec.CommandContext(ctx, "memcached", "-V").Output(); err == nil {
		parts = append(parts, strings.TrimSpace(string(out)))
	}
	if out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		parts = append(parts, "commit "+strings.TrimSpace(string(out)))
	}
	return strings.Join(parts, ", ")
}

// cpuModel returns "N-vCPU MODEL" from /proc/cpuinfo, "" when unknown.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.Join([]string{strconv.Itoa(runtime.NumCPU()) + "-vCPU", strings.TrimSpace(v)}, " ")
		}
	}
	return ""
}
