package audit

import (
	"context"
	"time"
)

// Event is one audit record. It never holds key bytes or field values.
type Event struct {
	Time    time.Time         `json:"time"`
	Actor   string            `json:"actor"`             // "admin:<principal>", "cli:<user>", "scheduler", "proxy"
	Action  string            `json:"action"`            // e.g. "key.create", "key.revoke", "rules.reload", "request.refused"
	Key     string            `json:"key,omitempty"`     // key name
	Version uint32            `json:"version,omitempty"` // key version
	Rules   string            `json:"rules,omitempty"`   // rules hash
	Outcome string            `json:"outcome"`           // "ok", "denied", "error"
	Reason  string            `json:"reason,omitempty"`  // why, in words; never field content
	Details map[string]string `json:"details,omitempty"`
}

// Recorder receives audit events. Record returns only once the event is
// durable (see the fsync policy of the file log).
type Recorder interface {
	Record(ctx context.Context, e Event) error
}

// Discard is a Recorder that drops every event; for tests and dry runs.
var Discard Recorder = discard{}

type discard struct{}

func (discard) Record(context.Context, Event) error { return nil }

type actorKey struct{}

// WithActor returns a context that attributes audit events to actor, e.g.
// "cli:alice", "admin:alice", "scheduler".
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// ActorFrom returns the actor set by WithActor, or "unknown".
func ActorFrom(ctx context.Context) string {
	if a, ok := ctx.Value(actorKey{}).(string); ok && a != "" {
		return a
	}
	return "unknown"
}
