package loadtest

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestProgressPlain: off a terminal, the progress is a line per phase and
// per round, with no control characters, so that a long run in CI or a
// pipe shows it is alive.
func TestProgressPlain(t *testing.T) {
	var out bytes.Buffer
	p := startProgress(&out)
	p.phase("warm-up", 2*time.Second)
	p.phase("", 10*time.Second)
	rec := NewRecorder(time.Now())
	p.round("direct", 0, 2, rec)
	p.round("sidecrypt", 0, 2, NewRecorder(time.Now()))
	p.stop()
	got := out.String()
	for _, want := range []string{
		"loadtest: warm-up (2s)\n",
		"loadtest: measuring (10s)\n",
		"loadtest: round 1/2  direct ",
		"loadtest: round 1/2  sidecrypt ",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("progress lacks %q:\n%s", want, got)
		}
	}
	if strings.ContainsAny(got, "\r\033") || strings.Count(got, "\n") != 4 {
		t.Errorf("plain progress:\n%q", got)
	}
}
