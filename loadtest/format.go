package loadtest

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes the result as indented JSON.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// FormatMicros renders a latency: 850µs, 1.24ms, 2.31s.
func FormatMicros(us int64) string {
	switch {
	case us < 1000:
		return fmt.Sprintf("%dµs", us)
	case us < 10_000:
		return fmt.Sprintf("%.2fms", float64(us)/1e3)
	case us < 1_000_000:
		return fmt.Sprintf("%.1fms", float64(us)/1e3)
	}
	return fmt.Sprintf("%.2fs", float64(us)/1e6)
}

func formatRate(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

func formatCPU(t *TargetResult, process string) string {
	v := t.CPUFor(process)
	if v < 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f", v)
}

func formatErrors(t *TargetResult) string {
	if t.ErrorTotal == 0 {
		return "0"
	}
	var parts []string
	for _, k := range sortedKeys(t.Errors) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, t.Errors[k]))
	}
	return fmt.Sprintf("%d (%s)", t.ErrorTotal, strings.Join(parts, " "))
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Summary is the one-line description of the run's shape.
func (r *Result) Summary() string {
	s := r.Settings
	var b strings.Builder
	fmt.Fprintf(&b, "workload %s", s.Workload)
	if s.Workload == "mixed" {
		fmt.Fprintf(&b, " (%s)", s.Mix)
	}
	if s.Loop == "open" {
		fmt.Fprintf(&b, ", open loop at %s req/s (at most %d in flight)", formatRate(s.Rate), s.Concurrency)
	} else {
		fmt.Fprintf(&b, ", closed loop with %d workers", s.Concurrency)
	}
	fmt.Fprintf(&b, ", %s documents", s.DocSize)
	if strings.Contains(s.Mix, "bulk") {
		fmt.Fprintf(&b, ", %d per bulk", s.BulkSize)
	}
	if s.Duration != "" {
		fmt.Fprintf(&b, ", %s per target in %d rounds", s.Duration, s.Rounds)
	} else {
		fmt.Fprintf(&b, ", %d requests per target in %d rounds", s.Requests, s.Rounds)
	}
	fmt.Fprintf(&b, ", upstream %s, seed %d", s.Upstream, s.Seed)
	if s.Engine != "" {
		fmt.Fprintf(&b, ", sidecars on the %s engine", s.Engine)
	}
	return b.String()
}

// WriteText writes the human-readable table.
func (r *Result) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "sidecrypt loadtest: %s\n", r.Summary())
	fmt.Fprintf(w, "machine: %s\n", r.Machine)
	if c := r.Calibration; c != nil {
		fmt.Fprintf(w, "calibration: %s did %s req/s closed-loop in %.1fs; rate = %v%% of that\n", c.Target, formatRate(c.Throughput), c.Seconds, c.Percent)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := "target\treq/s\t"
	if r.hasDocs() {
		header += "docs/s\t"
	}
	header += "p50\tp90\tp99\tp99.9\tmax\tCPU s/1k: proxy\tupstream\tloadgen\terrors\t"
	if r.Settings.Loop == "open" {
		header += "late\t"
	}
	fmt.Fprintln(tw, header)
	for i := range r.Targets {
		t := &r.Targets[i]
		row := fmt.Sprintf("%s\t%s\t", t.Name, formatRate(t.Throughput))
		if r.hasDocs() {
			row += formatRate(t.DocsPerSecond) + "\t"
		}
		l := t.Latency
		row += fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t",
			FormatMicros(l.P50), FormatMicros(l.P90), FormatMicros(l.P99), FormatMicros(l.P999), FormatMicros(l.Max),
			formatCPU(t, "proxy"), formatCPU(t, "upstream"), formatCPU(t, "loadgen"), formatErrors(t))
		if r.Settings.Loop == "open" {
			row += fmt.Sprintf("%d\t", t.Late)
		}
		fmt.Fprintln(tw, row)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Ratios) > 0 {
		fmt.Fprintln(w, "\nratios (throughput: higher is better; p99: lower is better):")
		for _, q := range r.Ratios {
			fmt.Fprintf(w, "  %-22s / %-7s throughput %5.1f%%   p99 %5.2fx (%+.3f ms)\n",
				q.Target, q.Baseline, q.Throughput*100, q.P99, float64(q.P99AddedMicros)/1000)
		}
	}
	spreadHeader := false
	for i := range r.Targets {
		if sp, ok := r.Targets[i].RoundSpread(); ok {
			if !spreadHeader {
				fmt.Fprintln(w, "\nthroughput by round (how much to trust the ratios):")
				spreadHeader = true
			}
			fmt.Fprintf(w, "  %-22s %s\n", r.Targets[i].Name, sp)
		}
	}
	for _, s := range r.Skipped {
		fmt.Fprintf(w, "skipped %s: %s\n", s.Target, s.Reason)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if c := r.latencyCaveat(); c != "" {
		fmt.Fprintf(w, "latency caveat: %s\n", c)
	}
	if r.Interrupted {
		fmt.Fprintln(w, "interrupted: the numbers cover the rounds measured before the stop")
	}
	return nil
}

func (r *Result) hasDocs() bool {
	for _, t := range r.Targets {
		if t.DocsPerSecond > 0 && t.DocsPerSecond != t.Throughput {
			return true
		}
	}
	return false
}

// Goal is a target the project set itself, checked against a run.
type Goal struct {
	Name string `json:"name"`
	// Met is nil when the run cannot tell (a target is missing, or the
	// goal needs the other loop).
	Met    *bool  `json:"met,omitempty"`
	Detail string `json:"detail"`
}

// Goals checks the project's goals against the run: sidecrypt with no
// rule matching at >= 90% of nginx's throughput, sidecrypt with rules at
// >= 70% (closed loop); p99 added by sidecrypt < 1 ms (open loop at half
// its maximum, compared with direct); no errors.
func (r *Result) Goals() []Goal {
	var goals []Goal
	verdict := func(name string, ok bool, detail string) {
		goals = append(goals, Goal{Name: name, Met: &ok, Detail: detail})
	}
	unknown := func(name, detail string) { goals = append(goals, Goal{Name: name, Detail: detail}) }
	if r.Settings.Loop == "closed" {
		for _, g := range []struct {
			target string
			want   float64
			name   string
		}{
			{TargetPassthrough, 0.90, "sidecrypt with no rule matching >= 90% of nginx's throughput"},
			{TargetSidecrypt, 0.70, "sidecrypt encrypting 4 fields per document >= 70% of nginx's throughput"},
		} {
			q := r.Ratio(g.target, TargetNginx)
			if q == nil {
				unknown(g.name, "not measured: needs both "+g.target+" and nginx")
				continue
			}
			detail := fmt.Sprintf("%.1f%% of nginx", q.Throughput*100)
			if q.Throughput < g.want {
				detail += fmt.Sprintf(", missed by %.1f points", (g.want-q.Throughput)*100)
			}
			verdict(g.name, q.Throughput >= g.want, detail)
		}
	} else {
		name := "p99 added by sidecrypt < 1 ms at half its maximum throughput"
		q := r.Ratio(TargetSidecrypt, TargetDirect)
		switch {
		case q == nil:
			unknown(name, "not measured: needs sidecrypt and direct")
		default:
			detail := fmt.Sprintf("p99 %s vs %s direct: +%.3f ms", FormatMicros(r.Target(TargetSidecrypt).Latency.P99), FormatMicros(r.Target(TargetDirect).Latency.P99), float64(q.P99AddedMicros)/1000)
			if c := r.Calibration; c != nil {
				detail += fmt.Sprintf(" at %s req/s (%v%% of %s's %s)", formatRate(c.Rate), c.Percent, c.Target, formatRate(c.Throughput))
			}
			if q.P99AddedMicros >= 1000 {
				detail += fmt.Sprintf(", missed by %.3f ms", float64(q.P99AddedMicros-1000)/1000)
			}
			verdict(name, q.P99AddedMicros < 1000, detail)
		}
	}
	var total int64
	var parts []string
	for i := range r.Targets {
		t := &r.Targets[i]
		total += t.ErrorTotal
		if t.ErrorTotal > 0 {
			parts = append(parts, t.Name+": "+formatErrors(t))
		}
	}
	detail := "no errors"
	if total > 0 {
		detail = strings.Join(parts, "; ")
	}
	verdict("zero errors", total == 0, detail)
	return goals
}

// WriteMarkdown writes the table, ratios and goals as Markdown (what
// scripts/bench.sh puts into docs/BENCHMARKS.md).
func (r *Result) WriteMarkdown(w io.Writer) error {
	fmt.Fprintf(w, "%s.\n\n", capitalize(r.Summary()))
	if c := r.Calibration; c != nil {
		fmt.Fprintf(w, "Rate: %v%% of the %s req/s that %s reached closed-loop in a %.1f s calibration.\n\n", c.Percent, formatRate(c.Throughput), c.Target, c.Seconds)
	}
	if r.Settings.NginxWorkers > 0 {
		fmt.Fprintf(w, "nginx ran %d worker processes, matching sidecrypt's GOMAXPROCS.\n\n", r.Settings.NginxWorkers)
	}
	docs := r.hasDocs()
	fmt.Fprint(w, "| target | req/s |")
	if docs {
		fmt.Fprint(w, " docs/s |")
	}
	fmt.Fprintln(w, " p50 | p90 | p99 | p99.9 | max | CPU s/1k req: proxy | upstream | load generator | errors | req/s by round: min–max (CV) |")
	fmt.Fprint(w, "|---|---:|")
	if docs {
		fmt.Fprint(w, "---:|")
	}
	fmt.Fprintln(w, "---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
	for i := range r.Targets {
		t := &r.Targets[i]
		l := t.Latency
		fmt.Fprintf(w, "| %s | %s |", t.Name, formatRate(t.Throughput))
		if docs {
			fmt.Fprintf(w, " %s |", formatRate(t.DocsPerSecond))
		}
		fmt.Fprintf(w, " %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			FormatMicros(l.P50), FormatMicros(l.P90), FormatMicros(l.P99), FormatMicros(l.P999), FormatMicros(l.Max),
			formatCPU(t, "proxy"), formatCPU(t, "upstream"), formatCPU(t, "loadgen"), formatErrors(t), spreadOf(t))
	}
	if len(r.Ratios) > 0 {
		fmt.Fprintln(w, "\n| ratio | throughput | p99 | p99 added |")
		fmt.Fprintln(w, "|---|---:|---:|---:|")
		for _, q := range r.Ratios {
			fmt.Fprintf(w, "| %s / %s | %.1f%% | %.2fx | %+.3f ms |\n", q.Target, q.Baseline, q.Throughput*100, q.P99, float64(q.P99AddedMicros)/1000)
		}
	}
	fmt.Fprintln(w, "\nGoals:")
	for _, g := range r.Goals() {
		mark := "n/a"
		if g.Met != nil {
			mark = map[bool]string{true: "met", false: "**missed**"}[*g.Met]
		}
		fmt.Fprintf(w, "- %s: %s (%s)\n", g.Name, mark, g.Detail)
	}
	for _, s := range r.Skipped {
		fmt.Fprintf(w, "- skipped %s: %s\n", s.Target, s.Reason)
	}
	if c := r.latencyCaveat(); c != "" {
		fmt.Fprintf(w, "\nLatency caveat: %s\n", c)
	}
	fmt.Fprintf(w, "\nMachine: %s.\n", r.Machine)
	return nil
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
