package loadtest

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// exactQuantile is the reference: the smallest value with at least q% of
// the sorted sample at or below it.
func exactQuantile(sorted []int64, q float64) int64 {
	if q >= 100 {
		return sorted[len(sorted)-1]
	}
	rank := int(math.Ceil(q / 100 * float64(len(sorted))))
	return sorted[max(0, rank-1)]
}

// TestPercentilesMatchKnownDistributions records samples from distributions
// whose quantiles are known and checks the recorder's summary against the
// exact quantiles of the same sample, within the histogram's stated
// precision (3 significant digits: 0.1%, plus one unit of resolution).
func TestPercentilesMatchKnownDistributions(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	tests := []struct {
		name string
		draw func() int64 // microseconds
	}{
		{"uniform 1..10000µs", func() int64 { return 1 + rng.Int64N(10000) }},
		{"exponential mean 2ms", func() int64 { return 1 + int64(rng.ExpFloat64()*2000) }},
		{"lognormal around 500µs with a heavy tail", func() int64 { return 1 + int64(math.Exp(rng.NormFloat64()*1.2+math.Log(500))) }},
		{"bimodal: 95% at ~300µs, 5% at ~40ms", func() int64 {
			if rng.IntN(100) < 95 {
				return 250 + rng.Int64N(100)
			}
			return 38000 + rng.Int64N(4000)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			origin := time.Now()
			rec := NewRecorder(origin)
			sample := make([]int64, 100_000)
			for i := range sample {
				sample[i] = tt.draw()
				rec.Success(origin, time.Duration(sample[i])*time.Microsecond, 0)
			}
			slices.Sort(sample)
			got := rec.snapshot().latency
			for _, c := range []struct {
				name string
				q    float64
				got  int64
			}{{"p50", 50, got.P50}, {"p90", 90, got.P90}, {"p99", 99, got.P99}, {"p99.9", 99.9, got.P999}, {"max", 100, got.Max}} {
				// The histogram and the reference may round the rank
				// differently; in a sparse tail neighbouring samples
				// differ by more than the histogram's precision, so
				// accept the samples two ranks either side.
				step := 200.0 / float64(len(sample))
				lo, hi := exactQuantile(sample, max(0, c.q-step)), exactQuantile(sample, min(100, c.q+step))
				if float64(c.got) < float64(lo)*0.999-1 || float64(c.got) > float64(hi)*1.001+1 {
					t.Errorf("%s = %dµs, exact %dµs (between %d and %d ± 0.1%%)", c.name, c.got, exactQuantile(sample, c.q), lo, hi)
				}
			}
			var sum float64
			for _, v := range sample {
				sum += float64(v)
			}
			if mean := sum / float64(len(sample)); math.Abs(got.Mean-mean) > mean*0.001+1 {
				t.Errorf("mean = %.1f, exact %.1f", got.Mean, mean)
			}
		})
	}
}

func TestRecorderBoundsAndCounts(t *testing.T) {
	origin := time.Now()
	rec := NewRecorder(origin)
	rec.Success(origin, 200*time.Nanosecond, 1)                      // below 1µs: recorded as 1µs
	rec.Success(origin.Add(2500*time.Millisecond), 2*time.Minute, 3) // above 60s: clamped
	rec.Failure(ErrHTTP5xx)
	rec.Failure(ErrHTTP5xx)
	rec.Failure(ErrTimeout)
	rec.Late()
	s := rec.snapshot()
	if s.ok != 2 || s.docs != 4 || s.late != 1 || s.clamped != 1 {
		t.Fatalf("counts: ok %d docs %d late %d clamped %d", s.ok, s.docs, s.late, s.clamped)
	}
	if s.errors[ErrHTTP5xx] != 2 || s.errors[ErrTimeout] != 1 {
		t.Fatalf("errors: %v", s.errors)
	}
	if s.latency.P50 != 1 {
		t.Errorf("p50 = %d, want 1 (sub-microsecond rounds up)", s.latency.P50)
	}
	if s.latency.Max < histMax*999/1000 || s.latency.Max > histMax*1001/1000 {
		t.Errorf("max = %d, want the 60s ceiling", s.latency.Max)
	}
	// Two requests, done in seconds 0 and 2: two points, in order.
	if len(s.series) != 2 || s.series[0].Second != 0 || s.series[1].Second != 2 {
		t.Fatalf("series = %+v", s.series)
	}
	if ok, errs := rec.Counts(); ok != 2 || errs != 3 {
		t.Errorf("Counts = %d, %d", ok, errs)
	}
	// The distribution is monotonic and ends at the max.
	d := s.distribution
	for i := 1; i < len(d); i++ {
		if d[i].Micros < d[i-1].Micros || d[i].Percentile <= d[i-1].Percentile {
			t.Fatalf("distribution not monotonic: %+v", d)
		}
	}
	if d[len(d)-1].Micros != s.latency.Max {
		t.Errorf("distribution ends at %d, max is %d", d[len(d)-1].Micros, s.latency.Max)
	}
}

func TestEmptyRecorder(t *testing.T) {
	s := NewRecorder(time.Now()).snapshot()
	if s.latency != (Latency{}) || s.distribution != nil || s.series != nil {
		t.Fatalf("empty recorder summary: %+v", s)
	}
}
