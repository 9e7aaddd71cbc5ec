package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sidecrypt/sidecrypt/datastore/sweep"
)

// SweepMetrics follow the store sweep (datastore/sweep). The collection
// label is the rule file's collection name or pattern ("tenant-*"), not
// each database's, so that a store with thousands of tenant databases
// keeps a bounded number of series.
type SweepMetrics struct {
	Documents  *prometheus.CounterVec // collection, outcome
	Values     *prometheus.CounterVec // collection, action
	Checkpoint *prometheus.GaugeVec   // collection
	Remaining  *prometheus.GaugeVec   // key, version
	Plaintext  *prometheus.GaugeVec   // collection, field
}

// RegisterSweep creates and registers the sweep's metrics. active
// reports whether this process is sweeping now.
func (m *Metrics) RegisterSweep(active func() bool) *SweepMetrics {
	s := &SweepMetrics{
		Documents: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "sweep_documents_total",
			Help: "Documents the store sweep handled, by collection rule and outcome (scanned, rewritten, failed, conflict, skipped)."}, []string{"collection", "outcome"}),
		Values: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "sweep_values_total",
			Help: "Values the store sweep changed, by collection rule and action (reencrypted, encrypted, decrypted; a dry run counts none)."}, []string{"collection", "action"}),
		Checkpoint: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "sweep_last_checkpoint_timestamp_seconds",
			Help: "Unix time of the store sweep's last checkpoint, by collection rule."}, []string{"collection"}),
		Remaining: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "sweep_values_remaining",
			Help: "Values under each key version in the store, summed over the last finished sweep (or dry run) of every collection: zero before a version is destroyed."}, []string{"key", "version"}),
		Plaintext: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "sweep_plaintext_values",
			Help: "Values in plaintext in protected fields, by collection rule and field, at the last finished sweep (or dry run)."}, []string{"collection", "field"}),
	}
	m.Registry.MustRegister(s.Documents, s.Values, s.Checkpoint, s.Remaining, s.Plaintext,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "sweep_running",
			Help: "1 while this process runs a store sweep."}, func() float64 {
			if active != nil && active() {
				return 1
			}
			return 0
		}))
	return s
}

// Page records one page of a sweep (sweep.Hooks.Page).
func (s *SweepMetrics) Page(rule string, d *sweep.Counts) {
	if rule == "" {
		rule = "-"
	}
	for outcome, n := range map[string]int64{"scanned": d.Documents, "rewritten": d.Rewritten, "failed": d.Failed, "conflict": d.Conflicts} {
		if n > 0 {
			s.Documents.WithLabelValues(rule, outcome).Add(float64(n))
		}
	}
	var skipped int64
	for _, n := range d.Skipped {
		skipped += n
	}
	if skipped > 0 {
		s.Documents.WithLabelValues(rule, "skipped").Add(float64(skipped))
	}
	for action, n := range map[string]int64{"reencrypted": d.Reencrypted, "encrypted": d.Encrypted, "decrypted": d.Decrypted} {
		if n > 0 {
			s.Values.WithLabelValues(rule, action).Add(float64(n))
		}
	}
	s.Checkpoint.WithLabelValues(rule).SetToCurrentTime()
}

// Inventory sets the remaining-values gauges from every collection's
// last inventory.
func (s *SweepMetrics) Inventory(states []*sweep.State) {
	s.Remaining.Reset()
	s.Plaintext.Reset()
	for _, kv := range sweep.KeyVersions(states) {
		vc := sweep.CountsFor(states, kv)
		s.Remaining.WithLabelValues(kv.Key, strconv.FormatUint(uint64(kv.Version), 10)).Set(float64(vc.Values))
	}
	plain := map[[2]string]int64{}
	for _, st := range states {
		if st.Last == nil {
			continue
		}
		rule := st.Rule
		if rule == "" {
			rule = "-"
		}
		for f, n := range st.Last.Plaintext {
			plain[[2]string{rule, f}] += n
		}
	}
	for k, n := range plain {
		s.Plaintext.WithLabelValues(k[0], k[1]).Set(float64(n))
	}
}
