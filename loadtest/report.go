package loadtest

import (
	"fmt"
	"html"
	"html/template"
	"io"
	"math"
	"strings"
	"time"
)

// The HTML report is one self-contained file: no scripts, fonts,
// stylesheets or images from anywhere else, so that it can be mailed,
// archived with a change request, and opened offline. Charts are SVG
// drawn here.

// targetColors are distinguishable in colour and in grey scale.
var targetColors = map[string]string{
	TargetDirect:      "#1b9e77",
	TargetNginx:       "#7570b3",
	TargetPassthrough: "#e6ab02",
	TargetSidecrypt:   "#d95f02",
}

func colorOf(name string) string {
	if c, ok := targetColors[name]; ok {
		return c
	}
	return "#666666"
}

// chart geometry
const (
	chartW, chartH = 760, 300
	padL, padR     = 64, 16
	padT, padB     = 16, 40
)

// logScale maps microseconds to a y coordinate on a log axis.
type logScale struct{ lo, hi float64 } // log10 bounds

func newLogScale(minUS, maxUS int64) logScale {
	lo := math.Floor(math.Log10(float64(max(1, minUS))))
	hi := math.Ceil(math.Log10(float64(max(10, maxUS))))
	if hi <= lo {
		hi = lo + 1
	}
	return logScale{lo, hi}
}

func (s logScale) y(us int64) float64 {
	v := math.Log10(float64(max(1, us)))
	return padT + (chartH-padT-padB)*(1-(v-s.lo)/(s.hi-s.lo))
}

func (s logScale) axis(b *strings.Builder) {
	for e := s.lo; e <= s.hi; e++ {
		us := int64(math.Pow(10, e))
		y := s.y(us)
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" class="grid"/>`, padL, y, chartW-padR, y)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" class="lbl" text-anchor="end">%s</text>`, padL-6, y+4, axisLabel(us))
	}
}

// axisLabel names a power of ten of microseconds: 10µs, 1ms, 10s.
func axisLabel(us int64) string {
	switch {
	case us < 1000:
		return fmt.Sprintf("%dµs", us)
	case us < 1_000_000:
		return fmt.Sprintf("%dms", us/1000)
	}
	return fmt.Sprintf("%ds", us/1_000_000)
}

func svgOpen(b *strings.Builder, title string) {
	fmt.Fprintf(b, `<svg viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s">`, chartW, chartH, chartW, chartH, html.EscapeString(title))
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" class="frame"/>`, padL, padT, chartW-padL-padR, chartH-padT-padB)
}

func legend(b *strings.Builder, targets []TargetResult, extra string) {
	x := padL + 8
	for _, t := range targets {
		fmt.Fprintf(b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/>`, x, padT+6, colorOf(t.Name))
		fmt.Fprintf(b, `<text x="%d" y="%d" class="lbl">%s</text>`, x+14, padT+15, html.EscapeString(t.Name))
		x += 30 + 7*len(t.Name)
	}
	if extra != "" {
		fmt.Fprintf(b, `<text x="%d" y="%d" class="lbl">%s</text>`, x, padT+15, html.EscapeString(extra))
	}
}

// latencyOverTimeSVG plots each target's per-second p50 (solid) and p99
// (dashed) against seconds since the start. Targets take turns in
// rounds, so each line has gaps where the others ran.
func latencyOverTimeSVG(targets []TargetResult) string {
	var minUS, maxUS, minT, maxT int64 = math.MaxInt64, 0, math.MaxInt64, 1
	for _, t := range targets {
		for _, p := range t.Series {
			minUS, maxUS = min(minUS, p.P50), max(maxUS, p.P99)
			minT, maxT = min(minT, p.Second), max(maxT, p.Second+1)
		}
	}
	var b strings.Builder
	svgOpen(&b, "latency over time")
	if maxUS == 0 {
		b.WriteString(`<text x="380" y="150" class="lbl" text-anchor="middle">no data</text></svg>`)
		return b.String()
	}
	ys := newLogScale(minUS, maxUS)
	ys.axis(&b)
	// The axis starts where measuring did (after setup and warm-up).
	x := func(sec float64) float64 { return padL + (chartW-padL-padR)*(sec-float64(minT))/float64(maxT-minT) }
	step := max(1, (maxT-minT)/10)
	for s := minT; s <= maxT; s += step {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" class="lbl" text-anchor="middle">%ds</text>`, x(float64(s)), chartH-padB+16, s)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" class="lbl" text-anchor="middle">seconds since start (per-second p50 solid, p99 dashed)</text>`, (chartW+padL)/2, chartH-4)
	for _, t := range targets {
		for _, q := range []struct {
			get  func(Point) int64
			dash string
		}{{func(p Point) int64 { return p.P50 }, ""}, {func(p Point) int64 { return p.P99 }, ` stroke-dasharray="5 3"`}} {
			// Break the line where a target did not run (another
			// target's round).
			var seg []string
			flush := func() {
				if len(seg) > 0 {
					fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="1.5"%s/>`, strings.Join(seg, " "), colorOf(t.Name), q.dash)
				}
				seg = seg[:0]
			}
			var last int64 = -2
			for _, p := range t.Series {
				if p.Second != last+1 {
					flush()
				}
				seg = append(seg, fmt.Sprintf("%.1f,%.1f", x(float64(p.Second)+0.5), ys.y(q.get(p))))
				last = p.Second
			}
			flush()
		}
	}
	legend(&b, targets, "")
	b.WriteString("</svg>")
	return b.String()
}

// ninesMax is where the maximum sits on the nines axis, apart from 99.999%.
const ninesMax = 5.6

// ninesX maps a percentile onto the "nines" axis: 90% is 1, 99% is 2,
// 99.9% is 3, so the tail gets as much room as the body.
func ninesX(p float64) float64 {
	if p >= 100 {
		return ninesMax
	}
	return math.Min(5, math.Log10(100/(100-p)))
}

// distributionSVG plots latency by percentile for each target.
func distributionSVG(targets []TargetResult) string {
	var minUS, maxUS int64 = math.MaxInt64, 0
	for _, t := range targets {
		for _, q := range t.Distribution {
			minUS, maxUS = min(minUS, q.Micros), max(maxUS, q.Micros)
		}
	}
	var b strings.Builder
	svgOpen(&b, "latency by percentile")
	if maxUS == 0 {
		b.WriteString(`<text x="380" y="150" class="lbl" text-anchor="middle">no data</text></svg>`)
		return b.String()
	}
	ys := newLogScale(minUS, maxUS)
	ys.axis(&b)
	x := func(p float64) float64 { return padL + (chartW-padL-padR)*ninesX(p)/ninesMax }
	for _, p := range []float64{0, 90, 99, 99.9, 99.99, 99.999, 100} {
		label := fmt.Sprintf("%g%%", p)
		if p == 100 {
			label = "max"
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" class="grid"/>`, x(p), padT, x(p), chartH-padB)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" class="lbl" text-anchor="middle">%s</text>`, x(p), chartH-padB+16, label)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" class="lbl" text-anchor="middle">percentile</text>`, (chartW+padL)/2, chartH-4)
	for _, t := range targets {
		var pts []string
		for _, q := range t.Distribution {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(q.Percentile), ys.y(q.Micros)))
		}
		if len(pts) > 0 {
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`, strings.Join(pts, " "), colorOf(t.Name))
		}
	}
	legend(&b, targets, "")
	b.WriteString("</svg>")
	return b.String()
}

// throughputSVG is a bar per target.
func throughputSVG(targets []TargetResult) string {
	var top float64 = 1
	for _, t := range targets {
		top = max(top, t.Throughput)
	}
	const h = 40 + 36*4
	var b strings.Builder
	fmt.Fprintf(&b, `<svg viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="throughput">`, chartW, h, chartW, h)
	for i, t := range targets {
		y := 10 + 36*i
		w := (chartW - 200 - padR) * t.Throughput / top
		fmt.Fprintf(&b, `<text x="150" y="%d" class="lbl" text-anchor="end">%s</text>`, y+18, html.EscapeString(t.Name))
		fmt.Fprintf(&b, `<rect x="160" y="%d" width="%.1f" height="24" fill="%s"/>`, y, w, colorOf(t.Name))
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" class="lbl">%s req/s</text>`, 166+w, y+18, formatRate(t.Throughput))
	}
	b.WriteString("</svg>")
	return b.String()
}

var reportTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"us":     FormatMicros,
	"rate":   formatRate,
	"cpu":    formatCPU,
	"errs":   formatErrors,
	"pct":    func(v float64) string { return fmt.Sprintf("%.1f%%", v*100) },
	"ms":     func(us int64) string { return fmt.Sprintf("%+.3f ms", float64(us)/1000) },
	"x":      func(v float64) string { return fmt.Sprintf("%.2fx", v) },
	"date":   func(t time.Time) string { return t.Format("2006-01-02 15:04:05 MST") },
	"color":  colorOf,
	"spread": spreadOf,
	"met": func(g Goal) string {
		if g.Met == nil {
			return "n/a"
		}
		if *g.Met {
			return "met"
		}
		return "missed"
	},
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sidecrypt load test {{date .R.Started}}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:860px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:right}th:first-child,td:first-child{text-align:left}
th{background:#f4f4f4}
.swatch{display:inline-block;width:10px;height:10px;margin-right:6px}
code{background:#f4f4f4;padding:1px 4px;word-break:break-all}
svg{max-width:100%;height:auto}svg .grid{stroke:#e4e4e4}svg .frame{fill:none;stroke:#bbb}svg .lbl{font:11px sans-serif;fill:#444}
.met{color:#1b7e3c}.missed{color:#b3261e;font-weight:bold}.na{color:#777}
</style></head><body>
<h1>sidecrypt load test</h1>
<p>{{.Summary}}.</p>
{{if .R.Interrupted}}<p class="missed">Interrupted: these numbers cover the rounds measured before the stop.</p>{{end}}
<table>
<tr><th>date</th><td>{{date .R.Started}} ({{.Elapsed}})</td></tr>
<tr><th>command</th><td><code>{{.Command}}</code></td></tr>
<tr><th>machine</th><td>{{.R.Machine}}</td></tr>
{{if .R.Settings.NginxWorkers}}<tr><th>nginx</th><td>{{.R.Settings.NginxWorkers}} worker processes (sidecrypt's GOMAXPROCS)</td></tr>{{end}}
{{with .R.Calibration}}<tr><th>rate</th><td>{{.Percent}}% of the {{rate .Throughput}} req/s {{.Target}} reached closed-loop = {{rate .Rate}} req/s</td></tr>{{end}}
</table>

<h2>Results</h2>
<table>
<tr><th>target</th><th>req/s</th>{{if .Docs}}<th>docs/s</th>{{end}}<th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>CPU s/1k: proxy</th><th>upstream</th><th>load gen.</th><th>errors</th>{{if .Open}}<th>late</th>{{end}}<th>req/s by round: min–max (CV)</th></tr>
{{range $i, $t := .R.Targets}}<tr><td><span class="swatch" style="background:{{color $t.Name}}"></span>{{$t.Name}}</td><td>{{rate $t.Throughput}}</td>{{if $.Docs}}<td>{{rate $t.DocsPerSecond}}</td>{{end}}<td>{{us $t.Latency.P50}}</td><td>{{us $t.Latency.P90}}</td><td>{{us $t.Latency.P99}}</td><td>{{us $t.Latency.P999}}</td><td>{{us $t.Latency.Max}}</td><td>{{cpu (index $.R.Targets $i) "proxy"}}</td><td>{{cpu (index $.R.Targets $i) "upstream"}}</td><td>{{cpu (index $.R.Targets $i) "loadgen"}}</td><td>{{errs (index $.R.Targets $i)}}</td>{{if $.Open}}<td>{{$t.Late}}</td>{{end}}<td>{{spread (index $.R.Targets $i)}}</td></tr>
{{end}}</table>
{{if .R.Ratios}}<table><tr><th>ratio</th><th>throughput</th><th>p99</th><th>p99 added</th></tr>
{{range .R.Ratios}}<tr><td>{{.Target}} / {{.Baseline}}</td><td>{{pct .Throughput}}</td><td>{{x .P99}}</td><td>{{ms .P99AddedMicros}}</td></tr>
{{end}}</table>{{end}}
<h2>Goals</h2>
<ul>{{range .Goals}}<li>{{.Name}}: <span class="{{met .}}">{{met .}}</span> ({{.Detail}})</li>{{end}}
{{range .R.Skipped}}<li>skipped {{.Target}}: {{.Reason}}</li>{{end}}</ul>

{{with .Caveat}}<p class="missed">Latency caveat: {{.}}</p>{{end}}
<h2>Throughput</h2>
{{.Throughput}}
<h2>Throughput over time</h2>
<p>Successful requests per second, second by second. Targets take turns in rounds, so each line pauses while the others run; the first and last second of a round are partial.</p>
{{.ThroughputOverTime}}
<h2>Latency over time</h2>
<p>Per-second p50 (solid) and p99 (dashed). Targets take turns in rounds, so each line pauses while the others run.</p>
{{.OverTime}}
<h2>Latency by percentile</h2>
<p>The whole run's distribution; the axis gives each "nine" the same room, so the tail is visible.</p>
{{.Distribution}}
{{range .R.Notes}}<p>Note: {{.}}</p>{{end}}
<p class="na">Latency is measured from {{if .Open}}the time each request was due (open loop: a stall shows in every request that waited behind it){{else}}the time each request was sent{{end}}, into HDR histograms (1 µs to 60 s, 3 significant digits). CPU is from /proc/PID/stat, per 1,000 requests, while that target was measured.</p>
</body></html>
`))

// WriteHTML writes the self-contained HTML report.
func (r *Result) WriteHTML(w io.Writer) error {
	elapsed := r.Finished.Sub(r.Started).Round(time.Second).String()
	return reportTmpl.Execute(w, map[string]any{
		"R":                  r,
		"Summary":            r.Summary(),
		"Elapsed":            elapsed,
		"Command":            strings.Join(r.Command, " "),
		"Docs":               r.hasDocs(),
		"Open":               r.Settings.Loop == "open",
		"Goals":              r.Goals(),
		"Throughput":         template.HTML(throughputSVG(r.Targets)),
		"OverTime":           template.HTML(latencyOverTimeSVG(r.Targets)),
		"Caveat":             r.latencyCaveat(),
		"ThroughputOverTime": template.HTML(throughputOverTimeSVG(r.Targets)),
		"Distribution":       template.HTML(distributionSVG(r.Targets)),
	})
}
