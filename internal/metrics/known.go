package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/proxy"
)

// A labelled counter has no series until its first increment, so a
// dashboard or an alert that reads rate(sidecrypt_refusals_total[5m])
// shows "no data" on a healthy sidecar, and `increase()` misses the first
// event after a restart. The label values below are known in advance;
// ZeroKnownLabels creates each series at zero, as the Prometheus
// instrumentation guidelines advise.

// RefusalCodes are the reason labels of refusals_total: every code the
// proxy and the datastore profiles refuse a request with
// (TestRefusalCodesComplete reads them from the source).
var RefusalCodes = []string{
	proxy.CodeBodyTooLarge, proxy.CodeUnsupportedMedia, proxy.CodeUnsupportedEncoding, proxy.CodeBadEncoding,
	proxy.CodeInvalidJSON, proxy.CodeTooDeep, proxy.CodeDuplicateKey, proxy.CodeInvalidUTF8,
	proxy.CodeBadQuery, proxy.CodeBadPath, proxy.CodeKeyUnavailable, proxy.CodeUpstreamUnavailable,
	proxy.CodeUpstreamTimeout, proxy.CodeProxyLoop, proxy.CodeNotProxyRequest, proxy.CodeMethodNotAllowed,
	proxy.CodeBodyRead, proxy.CodeInternal, proxy.CodeUnexpectedBody, proxy.CodeUnsupportedCharset,
	proxy.CodeByteOrderMark, proxy.CodeBadContentType, proxy.CodeUnprotectedOperation, proxy.CodeUnsupportedQuery,
	proxy.CodeBadRequest, proxy.CodeEgressRefused, proxy.CodeTokenNotAllowed, proxy.CodeCanceled,
	datastore.CodeMaskedWrite,
}

// HSMOps are the op labels of the HSM metrics: the operations
// InstrumentHSM times.
var HSMOps = []string{"wrap", "unwrap", "rotate_kek", "audit_mac", "ping"}

// RotationTriggers are the trigger labels of key_rotations_total.
var RotationTriggers = []string{"schedule"}

// ZeroKnownLabels creates, at zero, every series of the labelled counters
// whose label values are known: refusal codes and HSM operations always;
// for keys (the names the rule file uses), token open failures and
// rotations. Call it again after a rule change: series of keys the new
// rules no longer name stay, which is harmless for counters.
func (m *Metrics) ZeroKnownLabels(keys []string) {
	for _, code := range RefusalCodes {
		m.Refusals.WithLabelValues(code)
	}
	for _, op := range HSMOps {
		m.HSMErrors.WithLabelValues(op)
	}
	for _, k := range keys {
		m.OpenFailures.WithLabelValues(k)
		for _, tr := range RotationTriggers {
			m.Rotations.WithLabelValues(k, tr)
		}
	}
}

// RegisterAudit exports the audit log's incidents, read at scrape time:
// heads the witness did not take (after which a rollback of the log
// cannot be detected) and lines not written by sidecrypt found in the log
// (each also an audit.tampering event). Alert on any increase of either.
func (m *Metrics) RegisterAudit(stats func() audit.Stats) {
	m.Registry.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: "audit_witness_failures_total",
			Help: "Audit log heads the witness (SIDECRYPT_AUDIT_WITNESS) did not take."},
			func() float64 { return float64(stats().WitnessFailures) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: "audit_tampering_total",
			Help: "Audit log tampering found while writing (foreign lines moved aside, a missing checkpoint file): audit.tampering events."},
			func() float64 { return float64(stats().Tampering) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: "audit_torn_tails_total",
			Help: "Last lines of the audit log cut short by a crash and moved aside: audit.torn_tail events."},
			func() float64 { return float64(stats().TornTails) }),
	)
}
