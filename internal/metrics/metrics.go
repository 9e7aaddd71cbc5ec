// Package metrics exports sidecrypt's Prometheus metrics. It owns the
// registry and adapts each component's plain hooks and counters to
// Prometheus, so that the components themselves import no metrics library
// and hold no globals: a Metrics value is handed in.
//
// Label values are route names, reason codes, key names and operation
// names: all come from configuration or code, never from request content,
// so no field value can become a label and cardinality stays bounded.
// docs/OPERATIONS.md lists every metric with example alerts.
package metrics

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sidecrypt/sidecrypt/hsm"
)

const ns = "sidecrypt"

// Metrics is the set of sidecrypt metrics and their registry.
type Metrics struct {
	Registry *prometheus.Registry

	Requests        *prometheus.CounterVec   // route, outcome
	RequestDuration *prometheus.HistogramVec // route
	Refusals        *prometheus.CounterVec   // reason
	Fields          *prometheus.CounterVec   // key, op
	OpenFailures    *prometheus.CounterVec   // key
	UpstreamLatency prometheus.Histogram
	BodyBytes       *prometheus.CounterVec // direction

	HSMDuration *prometheus.HistogramVec // op
	HSMErrors   *prometheus.CounterVec   // op

	RulesReloadFailures prometheus.Counter
	RulesReloads        prometheus.Counter
	RulesInfo           *prometheus.GaugeVec // hash
	RulesLoadedTime     prometheus.Gauge

	RewrapPending      prometheus.Gauge
	RewrapDone         prometheus.Counter
	RewrapErrors       prometheus.Counter
	RewrapLastProgress prometheus.Gauge
	KEKRetirable       prometheus.Gauge
	Rotations          *prometheus.CounterVec // key, trigger

	AuditErrors prometheus.Counter
}

// latencyBuckets span 50 µs to 10 s: a cached field encryption is a few
// µs, an HSM unwrap a few ms, an upstream call up to seconds.
var latencyBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// New creates the metrics and registers them, together with the Go runtime
// and process collectors, on a fresh registry.
func New() *Metrics {
	r := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{Registry: r}

	m.Requests = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "requests_total",
		Help: "Requests handled, by rule route (\"-\" when none matched) and outcome (forwarded, refused, upstream_error, error)."}, []string{"route", "outcome"})
	m.RequestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "request_duration_seconds",
		Help: "Time from request received to response headers sent, by route.", Buckets: latencyBuckets}, []string{"route"})
	m.Refusals = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "refusals_total",
		Help: "Requests refused and not forwarded (fail closed), by reason code."}, []string{"reason"})
	m.Fields = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "fields_total",
		Help: "Field values transformed, by key and operation (encrypt, decrypt, mask)."}, []string{"key", "op"})
	m.OpenFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "token_open_failures_total",
		Help: "Tokens in responses that could not be opened (tampered, destroyed or unavailable key) and were left as they were, by key."}, []string{"key"})
	m.UpstreamLatency = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "upstream_duration_seconds",
		Help: "Time the upstream took to answer with response headers.", Buckets: latencyBuckets})
	m.BodyBytes = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "transformed_bytes_total",
		Help: "Body bytes run through the JSON transformer, by direction (request, response)."}, []string{"direction"})

	m.HSMDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "hsm_operation_duration_seconds",
		Help: "Latency of HSM (KEK provider) operations, by operation.", Buckets: latencyBuckets}, []string{"op"})
	m.HSMErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "hsm_errors_total",
		Help: "Failed HSM operations, by operation."}, []string{"op"})

	m.RulesReloadFailures = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "rules_reload_failures_total",
		Help: "Rule file changes refused because they did not validate (the last good rules stayed in force)."})
	m.RulesReloads = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "rules_reloads_total",
		Help: "Rule changes applied."})
	m.RulesInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "rules_info",
		Help: "1 for the hash of the rules in force."}, []string{"hash"})
	m.RulesLoadedTime = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "rules_loaded_timestamp_seconds",
		Help: "Unix time the rules in force were loaded."})

	m.RewrapPending = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "rewrap_pending_keys",
		Help: "Data key versions still wrapped under an older KEK version."})
	m.RewrapDone = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "rewrap_done_total",
		Help: "Data key versions re-wrapped under the current KEK."})
	m.RewrapErrors = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "rewrap_errors_total",
		Help: "Re-wrap attempts that failed (the old wrapped copy was kept)."})
	m.RewrapLastProgress = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "rewrap_last_progress_timestamp_seconds",
		Help: "Unix time of the last re-wrapped key (0 when none ever)."})
	m.KEKRetirable = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "kek_retirable_versions",
		Help: "Old KEK versions that no data key references any more and can be retired."})
	m.Rotations = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "key_rotations_total",
		Help: "Data key rotations made by this process, by key and trigger (schedule, admin)."}, []string{"key", "trigger"})

	m.AuditErrors = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "audit_errors_total",
		Help: "Audit events that could not be written."})

	for _, c := range []prometheus.Collector{
		m.Requests, m.RequestDuration, m.Refusals, m.Fields, m.OpenFailures, m.UpstreamLatency, m.BodyBytes,
		m.HSMDuration, m.HSMErrors,
		m.RulesReloadFailures, m.RulesReloads, m.RulesInfo, m.RulesLoadedTime,
		m.RewrapPending, m.RewrapDone, m.RewrapErrors, m.RewrapLastProgress, m.KEKRetirable, m.Rotations,
		m.AuditErrors,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		f(c)
	}
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// SetRules records the rules in force.
func (m *Metrics) SetRules(hash string, loaded time.Time) {
	m.RulesInfo.Reset()
	m.RulesInfo.WithLabelValues(hash).Set(1)
	m.RulesLoadedTime.Set(float64(loaded.Unix()))
}

// RegisterMaskFallbacks exports the count of hash masks that fell back to
// the full mask because version 1 of the key could not be opened.
func (m *Metrics) RegisterMaskFallbacks(count func() uint64) {
	m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: "mask_hash_fallbacks_total",
		Help: "Values shown with the full mask instead of a keyed hash because version 1 of their key could not be opened."},
		func() float64 { return float64(count()) }))
}

// InstrumentHSM returns p with every operation timed and its errors
// counted.
func (m *Metrics) InstrumentHSM(p hsm.Provider) hsm.Provider {
	return &instrumentedHSM{Provider: p, m: m}
}

type instrumentedHSM struct {
	hsm.Provider
	m *Metrics
}

func (h *instrumentedHSM) observe(op string, start time.Time, err error) {
	h.m.HSMDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, context.Canceled) {
		h.m.HSMErrors.WithLabelValues(op).Inc()
	}
}

func (h *instrumentedHSM) Wrap(ctx context.Context, dek []byte, b hsm.Binding) (w hsm.Wrapped, err error) {
	start := time.Now()
	w, err = h.Provider.Wrap(ctx, dek, b)
	h.observe("wrap", start, err)
	return w, err
}

func (h *instrumentedHSM) Unwrap(ctx context.Context, w hsm.Wrapped, b hsm.Binding) (dek []byte, err error) {
	start := time.Now()
	dek, err = h.Provider.Unwrap(ctx, w, b)
	h.observe("unwrap", start, err)
	return dek, err
}

func (h *instrumentedHSM) RotateKEK(ctx context.Context) (v uint32, err error) {
	start := time.Now()
	v, err = h.Provider.RotateKEK(ctx)
	h.observe("rotate_kek", start, err)
	return v, err
}

func (h *instrumentedHSM) AuditMAC(ctx context.Context, msg []byte) (mac []byte, err error) {
	start := time.Now()
	mac, err = h.Provider.AuditMAC(ctx, msg)
	h.observe("audit_mac", start, err)
	return mac, err
}

func (h *instrumentedHSM) Ping(ctx context.Context) (err error) {
	start := time.Now()
	err = h.Provider.Ping(ctx)
	h.observe("ping", start, err)
	return err
}

var _ hsm.Provider = (*instrumentedHSM)(nil)
