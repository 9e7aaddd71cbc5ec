package keystoretest

import (
	"context"
	"sync"

	"github.com/sidecrypt/sidecrypt/internal/audit"
)

// Recorder is an audit.Recorder that keeps events in memory, so that tests
// can check what was recorded.
type Recorder struct {
	mu     sync.Mutex
	events []audit.Event
	// Err, when set, is returned by Record (and the event is not kept),
	// to test what happens when the audit log cannot be written.
	Err error
}

// Record implements audit.Recorder.
func (r *Recorder) Record(_ context.Context, e audit.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Err != nil {
		return r.Err
	}
	r.events = append(r.events, e)
	return nil
}

// Events returns a copy of the events recorded so far.
func (r *Recorder) Events() []audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]audit.Event(nil), r.events...)
}

// Find returns the events with the given action.
func (r *Recorder) Find(action string) []audit.Event {
	var out []audit.Event
	for _, e := range r.Events() {
		if e.Action == action {
			out = append(out, e)
		}
	}
	return out
}

var _ audit.Recorder = (*Recorder)(nil)
