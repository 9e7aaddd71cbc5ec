package loadtest

import (
	"bytes"
	"strings"
	"testing"
)

func TestRoundSpread(t *testing.T) {
	tr := TargetResult{Rounds: []float64{100, 110, 90}}
	s, ok := tr.RoundSpread()
	if !ok || s.Min != 90 || s.Max != 110 || s.Mean != 100 || s.CV < 0.099 || s.CV > 0.101 {
		t.Fatalf("%+v", s)
	}
	if _, ok := (&TargetResult{Rounds: []float64{1}}).RoundSpread(); ok {
		t.Fatal("one round has no spread")
	}
}

// TestReportShowsSpreadTimeAndCaveat: the report says how throughput moved
// over time and between rounds, flags a closed loop's latencies as
// subject to coordinated omission, and describes the machine fully.
func TestReportShowsSpreadTimeAndCaveat(t *testing.T) {
	r := &Result{
		Machine:  Machine{NumCPU: 2, CPUModel: "Test CPU", GOMAXPROCS: 2, OS: "linux", Arch: "amd64", GoVersion: "go1.26", MemTotalBytes: 8 << 30, Kernel: "6.1.0"},
		Settings: Settings{Workload: "write", Loop: "closed", Concurrency: 4, DocSize: "1KiB", Rounds: 3, Duration: "3s"},
		Targets: []TargetResult{{
			Name: TargetDirect, OK: 300, Throughput: 100, Rounds: []float64{100, 110, 90},
			Series: []Point{{Second: 0, Count: 95}, {Second: 1, Count: 105}, {Second: 5, Count: 100}},
		}},
	}
	var text, md, page bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	machine := "2 CPUs (Test CPU), GOMAXPROCS 2, 8.0 GiB memory, linux/amd64 kernel 6.1.0, go1.26"
	for name, out := range map[string]string{"text": text.String(), "markdown": md.String(), "html": page.String()} {
		for _, want := range []string{machine, "coordinated omission", "90"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s lacks %q:\n%s", name, want, out)
			}
		}
	}
	if !strings.Contains(text.String(), "90.0–110 req/s over 3 rounds (CV 10.0%)") {
		t.Errorf("text spread:\n%s", text.String())
	}
	// Two polylines: the gap between second 1 and 5 is another target's turn.
	if html := page.String(); !strings.Contains(html, "Throughput over time") || strings.Count(html, `<polyline fill="none" stroke="`+colorOf(TargetDirect)+`" stroke-width="1.5"`) < 2 {
		t.Errorf("throughput over time chart missing or not split at the gap")
	}
	r.Settings.Loop = "open"
	text.Reset()
	r.WriteText(&text)
	if strings.Contains(text.String(), "coordinated omission") {
		t.Error("an open loop is not subject to coordinated omission")
	}
}
