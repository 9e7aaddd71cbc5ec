package loadtest

import (
	"bufio"
	"fmt"
	"html"
	"math"
	"os"
	"strconv"
	"strings"
)

// Spread is how much a target's throughput moved between rounds: each
// round is measured on its own, so the spread says how far one run's
// numbers can be trusted (a ratio between two targets is only meaningful
// when it is larger than their spreads).
type Spread struct {
	Rounds int     `json:"rounds"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Mean   float64 `json:"mean"`
	// CV is the coefficient of variation: standard deviation / mean.
	CV float64 `json:"cv"`
}

// RoundSpread summarises t.Rounds; ok is false with fewer than two.
func (t *TargetResult) RoundSpread() (s Spread, ok bool) {
	if len(t.Rounds) < 2 {
		return Spread{}, false
	}
	s = Spread{Rounds: len(t.Rounds), Min: math.Inf(1), Max: math.Inf(-1)}
	for _, v := range t.Rounds {
		s.Min, s.Max, s.Mean = min(s.Min, v), max(s.Max, v), s.Mean+v
	}
	s.Mean /= float64(len(t.Rounds))
	var ss float64
	for _, v := range t.Rounds {
		ss += (v - s.Mean) * (v - s.Mean)
	}
	if s.Mean > 0 {
		s.CV = math.Sqrt(ss/float64(len(t.Rounds)-1)) / s.Mean
	}
	return s, true
}

// String is "10,120–11,480 req/s (±4.1%)".
func (s Spread) String() string {
	return fmt.Sprintf("%s–%s req/s over %d rounds (CV %.1f%%)", formatRate(s.Min), formatRate(s.Max), s.Rounds, s.CV*100)
}

func spreadOf(t *TargetResult) string {
	if s, ok := t.RoundSpread(); ok {
		return fmt.Sprintf("%s–%s (%.1f%%)", formatRate(s.Min), formatRate(s.Max), s.CV*100)
	}
	return "-"
}

// coordinatedOmission is the caveat every closed-loop result carries.
const coordinatedOmission = "closed loop: each worker sends its next request only when the last one is answered, " +
	"so a stall delays the requests that would have been sent meanwhile instead of making them slow; " +
	"the latency percentiles are subject to coordinated omission and understate the tail. " +
	"For latency, run an open loop (--rate or --rate-percent), which measures from each request's due time."

// latencyCaveat returns the coordinated-omission note for a closed-loop
// run, or "".
func (r *Result) latencyCaveat() string {
	if r.Settings.Loop == "open" {
		return ""
	}
	return coordinatedOmission
}

// String is the one-line description of the machine.
func (m Machine) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d CPUs (%s), GOMAXPROCS %d", m.NumCPU, m.CPUModel, m.GOMAXPROCS)
	if m.MemTotalBytes > 0 {
		fmt.Fprintf(&b, ", %.1f GiB memory", float64(m.MemTotalBytes)/(1<<30))
	}
	fmt.Fprintf(&b, ", %s/%s", m.OS, m.Arch)
	if m.Kernel != "" {
		fmt.Fprintf(&b, " kernel %s", m.Kernel)
	}
	fmt.Fprintf(&b, ", %s", m.GoVersion)
	return b.String()
}

// addHostInfo fills what /proc says about memory and the kernel (Linux;
// elsewhere they stay empty).
func (m *Machine) addHostInfo() {
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				if err == nil {
					m.MemTotalBytes = kb << 10
				}
				break
			}
		}
	}
}

// throughputOverTimeSVG plots each target's successful requests per
// second, second by second. Targets take turns in rounds, so each one's
// line has gaps while the others run; a round that starts slow (a cold
// cache, GC) or a stall shows here and nowhere else.
func throughputOverTimeSVG(targets []TargetResult) string {
	var maxN, minT, maxT int64 = 1, math.MaxInt64, 1
	for _, t := range targets {
		for _, p := range t.Series {
			maxN, minT, maxT = max(maxN, p.Count), min(minT, p.Second), max(maxT, p.Second+1)
		}
	}
	var b strings.Builder
	svgOpen(&b, "throughput over time")
	if minT == math.MaxInt64 {
		b.WriteString(`<text x="380" y="150" class="lbl" text-anchor="middle">no data</text></svg>`)
		return b.String()
	}
	const padL, padR, padT, padB = 60.0, 10.0, 10.0, 30.0
	x := func(sec float64) float64 { return padL + (chartW-padL-padR)*(sec-float64(minT))/float64(maxT-minT) }
	y := func(n int64) float64 { return padT + (chartH-padT-padB)*(1-float64(n)/float64(maxN)) }
	for i := 0; i <= 4; i++ {
		n := maxN * int64(i) / 4
		fmt.Fprintf(&b, `<line class="grid" x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f"/>`, padL, chartW-padR, y(n), y(n))
		fmt.Fprintf(&b, `<text class="lbl" x="%.1f" y="%.1f" text-anchor="end">%s/s</text>`, padL-4, y(n)+4, html.EscapeString(formatRate(float64(n))))
	}
	step := max(1, (maxT-minT)/10)
	for s := minT; s <= maxT; s += step {
		fmt.Fprintf(&b, `<text class="lbl" x="%.1f" y="%.1f" text-anchor="middle">%ds</text>`, x(float64(s)), chartH-padB+16, s)
	}
	for _, t := range targets {
		// A new polyline after each gap: the target was not running.
		var pts []string
		flush := func() {
			if len(pts) > 0 {
				fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, colorOf(t.Name), strings.Join(pts, " "))
			}
			pts = pts[:0]
		}
		last := int64(-2)
		for _, p := range t.Series {
			if p.Second != last+1 {
				flush()
			}
			last = p.Second
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(float64(p.Second)+0.5), y(p.Count)))
		}
		flush()
	}
	fmt.Fprintf(&b, `<rect class="frame" x="%.1f" y="%.1f" width="%.1f" height="%.1f"/>`, padL, padT, chartW-padL-padR, chartH-padT-padB)
	b.WriteString("</svg>")
	return b.String()
}
