package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

func requireNginx(t *testing.T) {
	t.Helper()
	if _, ok := testenv.LookPath("nginx"); !ok {
		testenv.Missing(t, "nginx", "apt-get install nginx-light")
	}
}

// processGone reports whether pid no longer exists.
func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

var externalRef = regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+|<script|<link|@import|url\(|src=`)

// TestEndToEndDirectAndNginx runs a short mixed workload against the
// built-in upstream and nginx and checks every output format.
func TestEndToEndDirectAndNginx(t *testing.T) {
	requireNginx(t)
	var log bytes.Buffer
	cfg := Config{
		Workload: "mixed", Duration: time.Second, Round: 500 * time.Millisecond, Warmup: 200 * time.Millisecond,
		Concurrency: 4, SetupDocs: 50, BulkSize: 5, Targets: []string{TargetDirect, TargetNginx},
		Log: &log, Command: []string{"sidecrypt", "loadtest", "--test"},
	}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	if len(res.Targets) != 2 || res.Targets[0].Name != TargetDirect || res.Targets[1].Name != TargetNginx {
		t.Fatalf("targets: %+v", res.Targets)
	}
	for _, tr := range res.Targets {
		l := tr.Latency
		if tr.OK == 0 || tr.ErrorTotal != 0 || tr.Throughput <= 0 {
			t.Errorf("%s: ok %d errors %v throughput %v", tr.Name, tr.OK, tr.Errors, tr.Throughput)
		}
		if !(0 < l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
			t.Errorf("%s: percentiles out of order: %+v", tr.Name, l)
		}
		if tr.Seconds < 0.9 || len(tr.Series) == 0 || len(tr.Distribution) == 0 {
			t.Errorf("%s: measured %.2fs, %d points, %d quantiles", tr.Name, tr.Seconds, len(tr.Series), len(tr.Distribution))
		}
		if tr.CPUFor("loadgen") < 0 {
			t.Errorf("%s: no load generator CPU: %+v", tr.Name, tr.CPU)
		}
	}
	nginx := res.Target(TargetNginx)
	var nginxPID int
	for _, c := range nginx.CPU {
		if c.Process == "proxy" {
			nginxPID = c.PID
		}
	}
	if nginxPID == 0 {
		t.Fatalf("nginx CPU not accounted: %+v", nginx.CPU)
	}
	if !processGone(nginxPID) {
		t.Errorf("nginx (pid %d) still running after Run returned", nginxPID)
	}
	if res.Settings.NginxWorkers < 1 || !strings.Contains(log.String(), "worker processes") {
		t.Errorf("nginx workers not recorded: %d\n%s", res.Settings.NginxWorkers, log.String())
	}

	// JSON: valid, and holds what machines need.
	var js bytes.Buffer
	if err := res.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON does not parse back: %v", err)
	}
	if back.Targets[1].Latency != nginx.Latency || back.Machine.NumCPU == 0 || back.Settings.Workload != "mixed" {
		t.Errorf("JSON lost data: %+v", back.Settings)
	}
	for _, key := range []string{`"p99_us"`, `"throughput"`, `"seconds_per_1k_requests"`, `"series"`, `"errors"`} {
		if !strings.Contains(js.String(), key) {
			t.Errorf("JSON lacks %s", key)
		}
	}

	// HTML: self-contained, with the charts and the table.
	var page bytes.Buffer
	if err := res.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	html := page.String()
	if n := strings.Count(html, "<svg"); n != 4 {
		t.Errorf("report has %d SVG charts, want 4", n)
	}
	for _, want := range []string{"<polyline", "direct", "nginx", "sidecrypt loadtest --test", res.Machine.CPUModel, "p99.9", "Latency over time", "Latency by percentile", "Throughput over time", "coordinated omission"} {
		if !strings.Contains(html, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(html, "ZgotmplZ") {
		t.Error("html/template rejected a value in the report (ZgotmplZ)")
	}
	for _, ref := range externalRef.FindAllString(html, -1) {
		if !strings.Contains(ref, "127.0.0.1") {
			t.Errorf("report refers to something outside itself: %q", ref)
		}
	}

	var text, md bytes.Buffer
	res.WriteText(&text)
	res.WriteMarkdown(&md)
	for _, out := range []string{text.String(), md.String()} {
		if !strings.Contains(out, "direct") || !strings.Contains(out, "nginx") || !strings.Contains(out, "p99") {
			t.Errorf("table lacks targets or columns:\n%s", out)
		}
	}
	if !strings.Contains(md.String(), "| direct |") || !strings.Contains(md.String(), "zero errors: met") {
		t.Errorf("markdown:\n%s", md.String())
	}
}

// TestOpenLoopRun checks --rate N% end to end: a calibration, then the
// open loop at that fraction of the measured maximum.
func TestOpenLoopRun(t *testing.T) {
	cfg := Config{
		Workload: "query", RatePercent: 25, Duration: time.Second, Round: time.Second, Warmup: -1,
		Concurrency: 8, SetupDocs: 20, Targets: []string{TargetDirect},
	}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := res.Calibration
	// Rate is computed as peak*percent/100: compare within rounding.
	if c == nil || c.Target != TargetDirect || c.Throughput <= 0 || math.Abs(c.Rate-c.Throughput*0.25) > 1e-9*c.Rate {
		t.Fatalf("calibration: %+v", c)
	}
	d := res.Target(TargetDirect)
	want := int64(c.Rate * 1) // one second at the rate
	if res.Settings.Loop != "open" || d.OK+d.ErrorTotal != max(1, want) {
		t.Fatalf("open loop sent %d+%d, want %d (%s)", d.OK, d.ErrorTotal, want, res.Summary())
	}
	if d.ErrorTotal != 0 {
		t.Fatalf("errors: %v (queries must find the setup documents)", d.Errors)
	}
}

// TestInterrupt: cancelling the context ends a long run early, with the
// partial result flagged and everything stopped.
func TestInterrupt(t *testing.T) {
	requireNginx(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(1500*time.Millisecond, cancel)
	res, err := Run(ctx, Config{Duration: time.Hour, Round: 500 * time.Millisecond, Concurrency: 2, Targets: []string{TargetDirect, TargetNginx}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Interrupted {
		t.Fatal("result not marked interrupted")
	}
	for _, tr := range res.Targets {
		for _, c := range tr.CPU {
			if c.Process == "proxy" && !processGone(c.PID) {
				t.Errorf("%s (pid %d) still running", tr.Name, c.PID)
			}
		}
	}
}

func TestExplicitTargetThatCannotStart(t *testing.T) {
	// No executable: sidecrypt targets cannot start; asked for by name,
	// that is an error, not a silent skip.
	_, err := Run(context.Background(), Config{Requests: 10, Targets: []string{TargetDirect, TargetSidecrypt}})
	if err == nil || !strings.Contains(err.Error(), "target sidecrypt") {
		t.Fatalf("err = %v", err)
	}
	// By default it is skipped with the reason.
	res, err := Run(context.Background(), Config{Requests: 10, Concurrency: 2, Warmup: -1, Targets: nil, NginxURL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res.Skipped {
		if s.Target == TargetSidecrypt && strings.Contains(s.Reason, "not available") {
			return
		}
	}
	t.Fatalf("skipped = %+v", res.Skipped)
}
