package loadtest

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

func TestLuaString(t *testing.T) {
	for _, s := range []string{`{"a":"b"}`, `x]]y`, `]]]=]`, `a]=]b]]`, ""} {
		q := luaString(s)
		eq := strings.Count(q[:strings.Index(q[1:], "[")+1], "=")
		close := "]" + strings.Repeat("=", eq) + "]"
		if !strings.HasSuffix(q, close) || strings.Contains(s, close) || q[len(close):len(q)-len(close)] != s {
			t.Errorf("luaString(%q) = %q", s, q)
		}
	}
}

// TestWrkRecord: a histogram rebuilt from wrk's percentiles gives back
// the percentiles, and the counts add up.
func TestWrkRecord(t *testing.T) {
	w := &wrkRun{requests: 100_000, status: 7, max: 90_000}
	for _, q := range wrkQuantiles {
		// Latency grows with the percentile: 1 ms at p50, 10 ms at p99.
		w.quantiles = append(w.quantiles, int64(1000*math.Pow(10, (q-50)/49)))
	}
	rec := NewRecorder(time.Now())
	w.record(rec, time.Now(), 1)
	s := rec.snapshot()
	if s.ok != 100_000-7 || s.docs != s.ok || s.errors[ErrHTTP4xx] != 7 {
		t.Fatalf("ok %d docs %d errors %v", s.ok, s.docs, s.errors)
	}
	near := func(got, want int64) bool { return math.Abs(float64(got-want)) <= 0.02*float64(want) }
	if !near(s.latency.P50, 1000) || !near(s.latency.P99, 10000) || s.latency.Max < 89_900 {
		t.Errorf("rebuilt latency %+v, want p50 1ms, p99 10ms, max 90ms", s.latency)
	}
}

// TestWrkRun drives wrk against the built-in upstream, two rounds, and
// checks what it read back (apt-get install wrk; scripts/deps.sh installs
// it for make test and make bench).
func TestWrkRun(t *testing.T) {
	if _, ok := testenv.LookPath("wrk"); !ok {
		testenv.Missing(t, "wrk", "apt-get install wrk")
	}
	var log strings.Builder
	res, err := Run(context.Background(), Config{
		Workload: "mixed", Mix: "write=1,read=1", Generator: GeneratorWrk, Duration: 2 * time.Second, Round: time.Second,
		Warmup: -1, Concurrency: 4, SetupDocs: 20, Targets: []string{TargetDirect}, Log: &log,
	})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	tr := res.Target(TargetDirect)
	if tr == nil || tr.OK < 100 || tr.ErrorTotal != 0 || tr.Latency.P50 <= 0 || tr.Latency.P99 < tr.Latency.P50 || len(tr.Rounds) != 2 {
		t.Fatalf("wrk result: %+v\n%s", tr, log.String())
	}
	if !strings.Contains(log.String(), "load generator:") || res.Settings.Generator != GeneratorWrk {
		t.Errorf("generator not recorded: %q\n%s", res.Settings.Generator, log.String())
	}
	for _, c := range tr.CPU {
		if c.Process == "loadgen" && (!strings.HasPrefix(c.Name, "wrk") || c.Seconds <= 0) {
			t.Errorf("load generator CPU: %+v", c)
		}
	}
}
