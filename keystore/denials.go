package keystore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/audit"
)

// Refused unwraps under a flood
//
// A response, or a request body, can carry tokens naming any key version
// the attacker likes (`pii` v1, v2, ... v100000); each one the key cache
// has not seen costs an unwrap attempt here. Two things keep that cheap
// (issue 12, finding 6):
//
//   - Audit: the first refusal of a key for one reason (unknown version,
//     destroyed, compromised, pre-active) in a window of DenialWindow is
//     recorded at once, as before; the ones after it in that window are
//     counted, and one event at the window's end says how many and which
//     versions (the first few). A flood of N refusals costs two fsync'd
//     events per key and reason per window, not N.
//   - Reads: the record that refused an unwrap is remembered for
//     refusalMemory (1s, the key cache's own refusal memory), and another
//     version it refuses in that time is refused without reading the
//     store and checking the record's MAC again. A version the
//     remembered record would open is always read afresh, so a revoke is
//     never missed; a version created by another process in that second
//     may be refused for at most that second, as the key cache already
//     does. A write through this Manager forgets the key at once.

// DenialWindow is how long refused unwraps of one key for one reason are
// gathered into one audit event.
const DenialWindow = 10 * time.Second

// refusalMemory is how long a record that refused an unwrap answers for
// other versions without a store read.
const refusalMemory = time.Second

// maxListedVersions bounds the versions one aggregated event names.
const maxListedVersions = 16

type denialKey struct{ name, kind string }

type denialWindow struct {
	start    time.Time
	count    int // refusals after the first, recorded at once
	versions []uint32
	more     int // distinct versions past maxListedVersions
	seen     map[uint32]bool
	actors   map[string]bool
}

type recentRecord struct {
	k  *Key
	at time.Time
}

type denials struct {
	mu      sync.Mutex
	windows map[denialKey]*denialWindow
	recent  map[string]recentRecord
	timer   *time.Timer
	window  time.Duration
}

func newDenials() *denials {
	return &denials{windows: map[denialKey]*denialWindow{}, recent: map[string]recentRecord{}, window: DenialWindow}
}

// refusalKind names a refusal's reason for aggregation.
func refusalKind(err error) string {
	switch {
	case errors.Is(err, ErrNotFound):
		return "unknown version"
	case errors.Is(err, ErrDestroyed):
		return "destroyed"
	case errors.Is(err, ErrCompromised):
		return "compromised"
	case errors.Is(err, ErrPreActive):
		return "pre-active"
	}
	return "refused"
}

// refusalOf is what k says about unwrapping version: a refusal, or nil
// (and the end of an override under which a compromised version opens).
func refusalOf(k *Key, name string, version uint32, now time.Time) (refusal error, notAfter time.Time) {
	v := k.Lookup(version)
	switch {
	case v == nil:
		return fmt.Errorf("keystore: key %q v%d: %w", name, version, ErrNotFound), time.Time{}
	case v.State == StateDestroyed:
		return fmt.Errorf("keystore: key %q v%d: %w", name, version, ErrDestroyed), time.Time{}
	case v.State == StatePreActive:
		return fmt.Errorf("keystore: key %q v%d: %w", name, version, ErrPreActive), time.Time{}
	case v.State == StateCompromised:
		if !v.OverrideUntil.After(now) {
			return fmt.Errorf("keystore: key %q v%d: %w", name, version, ErrCompromised), time.Time{}
		}
		return nil, v.OverrideUntil
	case !v.State.CanDecrypt():
		return fmt.Errorf("keystore: key %q v%d: unknown state %q", name, version, v.State), time.Time{}
	}
	return nil, time.Time{}
}

// remembered returns the refusal a record remembered for name gives
// version, or nil when there is none or it would open the version (then
// the caller reads the store).
func (d *denials) remembered(name string, version uint32, now time.Time) error {
	d.mu.Lock()
	r, ok := d.recent[name]
	if ok && now.Sub(r.at) >= refusalMemory {
		delete(d.recent, name)
		ok = false
	}
	d.mu.Unlock()
	if !ok {
		return nil
	}
	refusal, _ := refusalOf(r.k, name, version, now)
	return refusal
}

func (d *denials) remember(k *Key, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.recent[k.Name] = recentRecord{k: k, at: now}
}

// forget drops what is remembered of name: this Manager changed it.
func (d *denials) forget(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.recent, name)
}

// deny records a refused unwrap: the first of its key and kind in a
// window at once (its audit error is returned, as before), the others
// counted into the window's summary.
func (m *Manager) deny(ctx context.Context, name string, version uint32, refusal error) error {
	d := m.denials
	key := denialKey{name, refusalKind(refusal)}
	now := m.now()
	d.mu.Lock()
	w, open := d.windows[key]
	if open && now.Sub(w.start) >= d.window {
		// The window ended by the Manager's clock before the timer
		// fired (a slow timer, a test clock): close it here.
		delete(d.windows, key)
		d.mu.Unlock()
		m.recordWindow(key, w)
		d.mu.Lock()
		w, open = d.windows[key]
	}
	if !open {
		d.windows[key] = &denialWindow{start: now, seen: map[uint32]bool{version: true}, actors: map[string]bool{}}
		if d.timer == nil {
			d.timer = time.AfterFunc(d.window, m.flushDenials)
		}
		d.mu.Unlock()
		return m.finish(ctx, "key.unwrap", name, version, "", nil, refusal)
	}
	w.count++
	if !w.seen[version] {
		w.seen[version] = true
		if len(w.versions) < maxListedVersions {
			w.versions = append(w.versions, version)
		} else {
			w.more++
		}
	}
	w.actors[audit.ActorFrom(ctx)] = true
	d.mu.Unlock()
	return refusal
}

// flushDenials records one event per key and kind for the refusals
// counted in the window that ended, and closes the window.
func (m *Manager) flushDenials() {
	d := m.denials
	d.mu.Lock()
	windows := d.windows
	d.windows = map[denialKey]*denialWindow{}
	d.timer = nil
	d.mu.Unlock()
	keys := make([]denialKey, 0, len(windows))
	for k := range windows {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b denialKey) int { return strings.Compare(a.name+a.kind, b.name+b.kind) })
	for _, k := range keys {
		m.recordWindow(k, windows[k])
	}
}

// recordWindow records one window's summary, when it counted any.
func (m *Manager) recordWindow(k denialKey, w *denialWindow) {
	d := m.denials
	{
		if w.count == 0 {
			return
		}
		vs := make([]string, len(w.versions))
		for i, v := range w.versions {
			vs[i] = strconv.FormatUint(uint64(v), 10)
		}
		list := strings.Join(vs, ",")
		if w.more > 0 {
			list += fmt.Sprintf(" and %d more", w.more)
		}
		actors := make([]string, 0, len(w.actors))
		for a := range w.actors {
			actors = append(actors, a)
		}
		slices.Sort(actors)
		ctx := audit.WithActor(context.Background(), strings.Join(actors, ","))
		_ = m.event(ctx, "key.unwrap", k.name, 0, "denied",
			fmt.Sprintf("%d more unwrap(s) of key %q refused (%s) in the %v after the first, which was recorded on its own", w.count, k.name, k.kind, d.window),
			map[string]string{"aggregated": strconv.Itoa(w.count), "reason_kind": k.kind, "versions": list,
				"window_start": w.start.UTC().Format(time.RFC3339Nano)})
	}
}

// FlushDenials records at once the refused unwraps counted so far (serve
// calls it when it stops, so that a window cut short is not lost).
func (m *Manager) FlushDenials() {
	m.denials.mu.Lock()
	if m.denials.timer != nil {
		m.denials.timer.Stop()
	}
	m.denials.mu.Unlock()
	m.flushDenials()
}
