package chaos

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// README markers around the fault table.
const (
	FaultsBegin = "<!-- faults:begin -->"
	FaultsEnd   = "<!-- faults:end -->"
)

// ErrNoMarkers is returned by ReplaceBetween when the markers are missing
// or out of order.
var ErrNoMarkers = errors.New("chaos: markers not found (or not in order)")

// ReplaceBetween returns doc with what lies between the lines begin and end
// replaced by content (the markers stay).
func ReplaceBetween(doc, begin, end, content string) (string, error) {
	i := strings.Index(doc, begin)
	if i < 0 {
		return "", fmt.Errorf("%w: %s", ErrNoMarkers, begin)
	}
	j := strings.Index(doc[i:], end)
	if j < 0 {
		return "", fmt.Errorf("%w: %s", ErrNoMarkers, end)
	}
	j += i
	if !strings.HasSuffix(content, "\n") {
		content += "\n"
	}
	return doc[:i+len(begin)] + "\n" + content + doc[j:], nil
}

// MatrixTable is the fault table as Markdown.
func MatrixTable(rs []RowResult) string {
	var b strings.Builder
	b.WriteString("| fault | toxic on the node's proxy | requests during fault | 5xx during fault | p99 during fault | acknowledged | stored | unknown outcomes (landed) | lost | recover | all nodes up | relocations | breaker trips |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range rs {
		if r.Error != "" {
			fmt.Fprintf(&b, "| %s | %s | error: %s |||||||||||\n", r.Row.Name, r.Row.Toxic, oneLine(r.Error))
			continue
		}
		lost := fmt.Sprint(r.Check.LostUpdates)
		if !r.Check.OK() {
			lost = fmt.Sprintf("**%d (%s)**", r.Check.LostUpdates, r.Check.Failures())
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %.0f ms | %d | %d | %d (%d) | %s | %s | %s | %d | %d |\n",
			r.Row.Name, r.Row.Toxic, r.During.Requests, r.During.FiveXX(), r.During.P99,
			r.Check.Acked, r.Check.Stored, r.Check.Unknown, r.Check.Landed, lost,
			fmtMs(r.RecoverMs), fmtMs(r.NodesUpMs), r.Counters.Relocations, r.Counters.Trips())
	}
	return b.String()
}

// oneLine keeps the first line of s, without table separators.
func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return strings.ReplaceAll(s, "|", "/")
}

// WriteMatrixDetail writes the detailed Markdown report of a matrix run:
// the table, then each row's phases, counters and sessions.
func WriteMatrixDetail(w io.Writer, header string, rs []RowResult) {
	fmt.Fprintf(w, "# Fault matrix: detailed results\n\n%s\n\n", header)
	fmt.Fprint(w, MatrixTable(rs))
	for _, r := range rs {
		fmt.Fprintf(w, "\n## %s\n\n`%s` on the proxy of %s (%d of %d sessions had their primary there), %d clients: %s.\n\n",
			r.Row.Name, r.Row.Toxic, r.Node, r.SessionsOnNode, len(r.Sessions), r.Clients, r.Row.What)
		if r.Error != "" {
			fmt.Fprintf(w, "**Error:** %s\n", r.Error)
		}
		fmt.Fprintln(w, PhaseTable([]string{"before", "during the fault", "after removal"}, []Summary{r.Before, r.During, r.After}))
		fmt.Fprintf(w, "Load average %.1f at the end of the row; longest stall of the harness (clients and proxies): %.0f ms.\n\n", r.LoadAvg, r.MaxStallMs)
		fmt.Fprintf(w, "Toxic removed in %.0f ms; recovered in %s; all nodes up in %s. App servers: %d relocations, %d restores, %d conflicts, %d lock timeouts, %d backup write failures, %d single-copy saves, breaker trips %s.\n\n",
			r.RemoveMs, fmtMs(r.RecoverMs), fmtMs(r.NodesUpMs), r.Counters.Relocations, r.Counters.Restores, r.Counters.Conflicts,
			r.Counters.LockTimeouts, r.Counters.BackupFailures, r.Counters.SingleCopySaves, r.Counters.TripsString())
		fmt.Fprintf(w, "%s.\n\n", r.Check)
		fmt.Fprint(w, SessionTable(r.Sessions))
		if len(r.Diagnosis) > 0 {
			fmt.Fprintf(w, "\n```\n%s\n```\n", strings.Join(r.Diagnosis, "\n"))
		}
	}
}

// PhaseTable is a Markdown table of the answers of several periods.
func PhaseTable(names []string, ss []Summary) string {
	var b strings.Builder
	b.WriteString("| period | s | requests | 200 | 409 | 503 busy | 503 unavailable | other 5xx | transport errors | p50 ms | p99 ms | max ms |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for i, s := range ss {
		fmt.Fprintf(&b, "| %s | %.1f | %d | %d | %d | %d | %d | %d | %d | %.1f | %.1f | %.1f |\n",
			names[i], s.Seconds, s.Requests, s.OK, s.Conflicts, s.Busy, s.Unavailable, s.Other5xx, s.Transport, s.P50, s.P99, s.Max)
	}
	return b.String()
}

// SessionTable is a Markdown table of acknowledged against stored
// increments per session.
func SessionTable(rs []SessionResult) string {
	var b strings.Builder
	b.WriteString("| session | clients | acknowledged | stored | unknown | landed | refused | verdict |\n")
	b.WriteString("|--:|--:|--:|--:|--:|--:|--:|---|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %d | %d | %d | %d | %d | %d | %d | %s |\n",
			r.Index, r.Clients, r.Acked, r.Stored, r.Unknown, r.Landed, r.Refused, r.Verdict)
	}
	return b.String()
}

// WriteSessionLines prints one line per session (the soak's report).
func WriteSessionLines(w io.Writer, rs []SessionResult) {
	fmt.Fprintf(w, "%8s %7s %12s %8s %8s %7s %8s  %s\n", "session", "clients", "acknowledged", "stored", "unknown", "landed", "refused", "verdict")
	for _, r := range rs {
		fmt.Fprintf(w, "%8d %7d %12d %8d %8d %7d %8d  %s\n", r.Index, r.Clients, r.Acked, r.Stored, r.Unknown, r.Landed, r.Refused, r.Verdict)
	}
}
