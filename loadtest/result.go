package loadtest

import (
	"time"
)

// Result is a whole run: what `--json` prints and what the reports show.
// Latencies are in microseconds, rates per second, CPU in seconds.
type Result struct {
	Started     time.Time      `json:"started"`
	Finished    time.Time      `json:"finished"`
	Command     []string       `json:"command,omitempty"`
	Machine     Machine        `json:"machine"`
	Settings    Settings       `json:"settings"`
	Calibration *Calibration   `json:"calibration,omitempty"`
	Targets     []TargetResult `json:"targets"`
	Ratios      []Ratio        `json:"ratios,omitempty"`
	Skipped     []Skipped      `json:"skipped,omitempty"`
	Notes       []string       `json:"notes,omitempty"`
	// Interrupted is true when the run was stopped (Ctrl-C) before the
	// end: the numbers cover what was measured until then.
	Interrupted bool `json:"interrupted,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	NumCPU     int    `json:"nproc"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	CPUModel   string `json:"cpu_model"`
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	GoVersion  string `json:"go_version"`
	// MemTotalBytes and Kernel come from /proc (Linux only).
	MemTotalBytes int64  `json:"mem_total_bytes,omitempty"`
	Kernel        string `json:"kernel,omitempty"`
}

// Settings are the run's parameters after defaults.
type Settings struct {
	Workload     string  `json:"workload"`
	Mix          string  `json:"mix"`
	Loop         string  `json:"loop"` // "closed" or "open"
	Concurrency  int     `json:"concurrency"`
	Rate         float64 `json:"rate,omitempty"`
	Duration     string  `json:"duration_per_target,omitempty"`
	Requests     int64   `json:"requests_per_target,omitempty"`
	Rounds       int     `json:"rounds"`
	Warmup       string  `json:"warmup"`
	Timeout      string  `json:"timeout"`
	DocSize      string  `json:"doc_size"`
	MeanDocBytes float64 `json:"mean_doc_bytes"`
	BulkSize     int     `json:"bulk_size"`
	Seed         uint64  `json:"seed"`
	Upstream     string  `json:"upstream"`
	SetupDocs    int     `json:"setup_docs"`
	NginxWorkers int     `json:"nginx_workers,omitempty"`
	// RulesVersion is the sidecar targets' rule file version (1 or 2).
	RulesVersion int `json:"rules_version,omitempty"`
	// Generator is the load generator: builtin or wrk.
	Generator string `json:"generator,omitempty"`
	// SidecarExecutable is the binary the sidecar targets ran, when it
	// was not the load test's own (Config.SidecarExecutable).
	SidecarExecutable string `json:"sidecar_executable,omitempty"`
	// Engine is the sidecar targets' HTTP engine, when one was chosen
	// (Config.Engine).
	Engine string `json:"engine,omitempty"`
}

// Calibration records how an open loop's rate was chosen from a measured
// maximum (--rate N%).
type Calibration struct {
	Target     string  `json:"target"`
	Seconds    float64 `json:"seconds"`
	Throughput float64 `json:"max_throughput"`
	Percent    float64 `json:"percent"`
	Rate       float64 `json:"rate"`
}

// TargetResult is one target's measurements.
type TargetResult struct {
	Name     string `json:"name"`
	URL      string `json:"url"`
	Database string `json:"database"`
	// OK counts successful requests; Errors the others by kind.
	OK         int64            `json:"ok"`
	Errors     map[string]int64 `json:"errors"`
	ErrorTotal int64            `json:"error_total"`
	// Seconds is the measured time (warm-up excluded).
	Seconds float64 `json:"seconds"`
	// Throughput is successful requests per second; DocsPerSecond the
	// documents they wrote per second.
	Throughput    float64 `json:"throughput"`
	DocsPerSecond float64 `json:"docs_per_second,omitempty"`
	Latency       Latency `json:"latency"`
	// Late counts open-loop requests sent more than LateThreshold after
	// their due time (their latency still counts from the due time).
	Late int64 `json:"late,omitempty"`
	// Clamped counts latencies above the histogram's 60 s ceiling.
	Clamped      int64      `json:"clamped,omitempty"`
	CPU          []CPUUse   `json:"cpu,omitempty"`
	Distribution []Quantile `json:"distribution,omitempty"`
	Series       []Point    `json:"series,omitempty"`
	// Rounds is the throughput of each measured round, in order: how
	// much it moved between rounds (RoundSpread).
	Rounds []float64 `json:"rounds,omitempty"`
}

// CPUUse is the CPU one local process spent while this target was
// measured.
type CPUUse struct {
	Process string  `json:"process"` // "loadgen", "upstream", "proxy"
	Name    string  `json:"name"`
	PID     int     `json:"pid"`
	Seconds float64 `json:"seconds"`
	// PerKRequests is CPU seconds per 1,000 requests (successful or not).
	PerKRequests float64 `json:"seconds_per_1k_requests"`
}

// Ratio compares a sidecrypt target with a baseline.
type Ratio struct {
	Target   string `json:"target"`
	Baseline string `json:"baseline"`
	// Throughput is target/baseline requests per second (1 = as fast).
	Throughput float64 `json:"throughput"`
	// P99 is target/baseline p99 latency (1 = as fast); P99AddedMicros
	// the difference.
	P99            float64 `json:"p99"`
	P99AddedMicros int64   `json:"p99_added_us"`
}

// Skipped is a target left out, with the reason.
type Skipped struct {
	Target string `json:"target"`
	Reason string `json:"reason"`
}

// Target returns the named target's result, or nil.
func (r *Result) Target(name string) *TargetResult {
	for i := range r.Targets {
		if r.Targets[i].Name == name {
			return &r.Targets[i]
		}
	}
	return nil
}

// Ratio returns the ratio of target to baseline, or nil.
func (r *Result) Ratio(target, baseline string) *Ratio {
	for i := range r.Ratios {
		if r.Ratios[i].Target == target && r.Ratios[i].Baseline == baseline {
			return &r.Ratios[i]
		}
	}
	return nil
}

// CPUFor returns the CPU seconds per 1,000 requests of the target's
// process of the given kind, or -1.
func (t *TargetResult) CPUFor(process string) float64 {
	for _, c := range t.CPU {
		if c.Process == process {
			return c.PerKRequests
		}
	}
	return -1
}

func computeRatios(targets []TargetResult) []Ratio {
	var out []Ratio
	for _, t := range targets {
		if t.Name == TargetDirect || t.Name == TargetNginx {
			continue
		}
		for _, b := range targets {
			if b.Name != TargetDirect && b.Name != TargetNginx {
				continue
			}
			r := Ratio{Target: t.Name, Baseline: b.Name, P99AddedMicros: t.Latency.P99 - b.Latency.P99}
			if b.Throughput > 0 {
				r.Throughput = t.Throughput / b.Throughput
			}
			if b.Latency.P99 > 0 {
				r.P99 = float64(t.Latency.P99) / float64(b.Latency.P99)
			}
			out = append(out, r)
		}
	}
	return out
}
