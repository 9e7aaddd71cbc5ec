package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/audit"
)

// openFailureAggregator stands between the proxy and the audit log for
// response.open_failed events: one per response whose tokens could not be
// opened. A response is an attacker's to fill (a document holding made-up
// tokens, read back again and again), and each event is an fsync'd write,
// so per route, the first event in a window is recorded as it comes and
// the rest are counted into one event when the window ends (issue 12,
// finding 6; the keystore does the same for the refused unwraps behind
// them). Every other event passes straight through.
type openFailureAggregator struct {
	next   audit.Recorder
	window time.Duration

	mu    sync.Mutex
	open  map[string]*openFailureWindow // by route and rules hash
	timer *time.Timer
}

type openFailureWindow struct {
	start     time.Time
	route     string
	rules     string
	responses int // after the first
	failures  int
}

func newOpenFailureAggregator(next audit.Recorder, window time.Duration) *openFailureAggregator {
	return &openFailureAggregator{next: next, window: window, open: map[string]*openFailureWindow{}}
}

func (a *openFailureAggregator) Record(ctx context.Context, e audit.Event) error {
	if e.Action != "response.open_failed" {
		return a.next.Record(ctx, e)
	}
	route := e.Details["route"]
	key := route + "\x00" + e.Rules
	a.mu.Lock()
	w, ok := a.open[key]
	if !ok {
		a.open[key] = &openFailureWindow{start: time.Now(), route: route, rules: e.Rules}
		if a.timer == nil {
			a.timer = time.AfterFunc(a.window, a.Flush)
		}
		a.mu.Unlock()
		return a.next.Record(ctx, e)
	}
	w.responses++
	n, _ := strconv.Atoi(e.Details["failures"])
	w.failures += n
	a.mu.Unlock()
	return nil
}

// Flush records the counted events now and closes every window.
func (a *openFailureAggregator) Flush() {
	a.mu.Lock()
	open := a.open
	a.open = map[string]*openFailureWindow{}
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
	a.mu.Unlock()
	for _, w := range open {
		if w.responses == 0 {
			continue
		}
		details := map[string]string{"aggregated": strconv.Itoa(w.responses), "failures": strconv.Itoa(w.failures),
			"window_start": w.start.UTC().Format(time.RFC3339Nano)}
		if w.route != "" {
			details["route"] = w.route
		}
		_ = a.next.Record(context.Background(), audit.Event{Time: time.Now().UTC(), Actor: "proxy", Action: "response.open_failed",
			Rules: w.rules, Outcome: "error", Details: details,
			Reason: fmt.Sprintf("%d more response(s) left %d token(s) they could not open, in the %v after the first, which was recorded on its own", w.responses, w.failures, a.window)})
	}
}

var _ audit.Recorder = (*openFailureAggregator)(nil)
