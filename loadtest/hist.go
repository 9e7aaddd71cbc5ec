package loadtest

import (
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram bounds: 1 µs to 60 s at 3 significant digits, so that a
// percentile is within 0.1% of the true value anywhere in that range.
// Latencies outside it are clamped and counted (Recorder.Clamped).
const (
	histMin    = 1
	histMax    = 60_000_000 // µs
	histDigits = 3
	// The per-second series only feeds a chart; 2 digits (1%) keep each
	// second's histogram ten times smaller.
	seriesDigits = 2
)

// Error kinds, as reported per target.
const (
	ErrHTTP4xx    = "http_4xx"     // the target answered 4xx
	ErrHTTP5xx    = "http_5xx"     // the target answered 5xx
	ErrHTTPOther  = "http_other"   // 1xx or 3xx where 2xx was expected
	ErrTransport  = "transport"    // connection refused, reset, EOF
	ErrTimeout    = "timeout"      // no answer within the request timeout
	ErrBadAnswer  = "bad_response" // 2xx with a wrong body (failed batch item, empty query)
	ErrNotSentYet = "unsent"       // open loop: still waiting to be sent when the round ended
)

// Recorder collects one target's measurements. It is safe for concurrent
// use; one mutex is fine at the rates one machine's load generator
// reaches (a lock costs tens of nanoseconds against tens of microseconds
// per request).
type Recorder struct {
	mu      sync.Mutex
	origin  time.Time // run start: x axis of the series
	total   *hdrhistogram.Histogram
	series  map[int64]*hdrhistogram.Histogram
	errors  map[string]int64
	ok      int64
	docs    int64
	late    int64
	clamped int64
}

// NewRecorder returns an empty recorder whose per-second series counts
// from origin.
func NewRecorder(origin time.Time) *Recorder {
	return &Recorder{
		origin: origin,
		total:  hdrhistogram.New(histMin, histMax, histDigits),
		series: make(map[int64]*hdrhistogram.Histogram),
		errors: make(map[string]int64),
	}
}

func toMicros(d time.Duration) (v int64, clamped bool) {
	v = d.Microseconds()
	switch {
	case v < histMin:
		return histMin, false
	case v > histMax:
		return histMax, true
	}
	return v, false
}

// Success records a request that completed at done after latency,
// writing docs documents.
func (r *Recorder) Success(done time.Time, latency time.Duration, docs int) {
	v, clamped := toMicros(latency)
	sec := int64(done.Sub(r.origin) / time.Second)
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.total.RecordValue(v) // in range by construction
	h := r.series[sec]
	if h == nil {
		h = hdrhistogram.New(histMin, histMax, seriesDigits)
		r.series[sec] = h
	}
	_ = h.RecordValue(v)
	r.ok++
	r.docs += int64(docs)
	if clamped {
		r.clamped++
	}
}

// Failure counts a request that failed with kind.
func (r *Recorder) Failure(kind string) {
	r.mu.Lock()
	r.errors[kind]++
	r.mu.Unlock()
}

// Late counts an open-loop request sent after its intended time.
func (r *Recorder) Late() {
	r.mu.Lock()
	r.late++
	r.mu.Unlock()
}

// Counts returns the successes and errors so far.
func (r *Recorder) Counts() (ok, errors int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.errors {
		errors += n
	}
	return r.ok, errors
}

// Latency is a latency summary in microseconds.
type Latency struct {
	P50  int64   `json:"p50_us"`
	P90  int64   `json:"p90_us"`
	P99  int64   `json:"p99_us"`
	P999 int64   `json:"p99_9_us"`
	Max  int64   `json:"max_us"`
	Mean float64 `json:"mean_us"`
}

func summarize(h *hdrhistogram.Histogram) Latency {
	if h.TotalCount() == 0 {
		return Latency{}
	}
	return Latency{
		P50:  h.ValueAtQuantile(50),
		P90:  h.ValueAtQuantile(90),
		P99:  h.ValueAtQuantile(99),
		P999: h.ValueAtQuantile(99.9),
		Max:  h.Max(),
		Mean: h.Mean(),
	}
}

// Point is one second of the latency-over-time series.
type Point struct {
	Second int64 `json:"t"` // seconds since the run started
	Count  int64 `json:"n"`
	P50    int64 `json:"p50_us"`
	P99    int64 `json:"p99_us"`
}

// Quantile is one point of the percentile distribution.
type Quantile struct {
	Percentile float64 `json:"percentile"`
	Micros     int64   `json:"us"`
}

// distributionPoints are the percentiles the distribution plot shows,
// spaced evenly on the "nines" axis (log of 1/(1-p)).
var distributionPoints = []float64{0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 99.999, 100}

// snapshot is a Recorder's state at the end of a run.
type snapshot struct {
	ok, docs, late, clamped int64
	errors                  map[string]int64
	latency                 Latency
	distribution            []Quantile
	series                  []Point
}

func (r *Recorder) snapshot() snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := snapshot{ok: r.ok, docs: r.docs, late: r.late, clamped: r.clamped, errors: maps.Clone(r.errors), latency: summarize(r.total)}
	if r.total.TotalCount() > 0 {
		for _, p := range distributionPoints {
			s.distribution = append(s.distribution, Quantile{Percentile: p, Micros: r.total.ValueAtQuantile(p)})
		}
	}
	for _, sec := range slices.Sorted(maps.Keys(r.series)) {
		h := r.series[sec]
		s.series = append(s.series, Point{Second: sec, Count: h.TotalCount(), P50: h.ValueAtQuantile(50), P99: h.ValueAtQuantile(99)})
	}
	return s
}
