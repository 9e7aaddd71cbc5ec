package audit

import "sync/atomic"

// Stats are what a metrics exporter reads from an open Log, at scrape
// time: the log's own incidents, which an alert should see as they
// happen rather than at the next `sidecrypt audit verify`.
type Stats struct {
	// WitnessFailures counts heads the witness did not take (each try,
	// whether or not it was logged; errors are logged once a minute).
	WitnessFailures uint64
	// Tampering counts audit.tampering events this Log recorded: lines
	// not written by sidecrypt found at the end of the log and moved
	// aside, or a missing checkpoint file.
	Tampering uint64
	// TornTails counts audit.torn_tail events: a last line cut short by
	// a crash, moved aside.
	TornTails uint64
}

type logStats struct {
	tampering atomic.Uint64
	tornTails atomic.Uint64
}

// countNote counts an event the writer itself records about the log.
func (l *Log) countNote(action string) {
	switch action {
	case "audit.tampering":
		l.stats.tampering.Add(1)
	case "audit.torn_tail":
		l.stats.tornTails.Add(1)
	}
}

// Stats returns the log's counters. Safe for concurrent use.
func (l *Log) Stats() Stats {
	s := Stats{Tampering: l.stats.tampering.Load(), TornTails: l.stats.tornTails.Load()}
	if l.pub != nil {
		s.WitnessFailures = l.pub.failures.Load()
	}
	return s
}
