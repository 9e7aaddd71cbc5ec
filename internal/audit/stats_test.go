package audit

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

type downWitness struct{}

func (downWitness) Publish(context.Context, Head) error { return errors.New("witness unreachable") }

// TestStatsCountIncidents: lines appended by someone else, and heads the
// witness refused, show in Stats (and so in sidecrypt's metrics) as they
// happen.
func TestStatsCountIncidents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := open(t, path, Options{Witness: downWitness{}, CheckpointEvery: 10 * time.Millisecond})
	record(t, l, 2)
	lines := readLines(t, path)
	appendFile(t, path, forge(t, lines[len(lines)-1], Event{Actor: "cli:root", Action: "key.destroy", Key: "pii", Version: 1}))
	record(t, l, 1)
	deadline := time.Now().Add(5 * time.Second)
	for l.Stats().WitnessFailures == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	st := l.Stats()
	if st.Tampering != 1 || st.WitnessFailures == 0 || st.TornTails != 0 {
		t.Fatalf("stats %+v, want 1 tampering incident and witness failures", st)
	}
	l.Close()
}
