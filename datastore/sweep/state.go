package sweep

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sidecrypt/sidecrypt/keystore"
)

// Notes is where sweeps keep their state: keystore.Manager's sealed notes
// (the same store as the keys, etcd when several sidecars share them).
type Notes interface {
	GetNote(ctx context.Context, id string) (*keystore.Note, error)
	PutNote(ctx context.Context, n *keystore.Note) (*keystore.Note, error)
	ListNotes(ctx context.Context, prefix string) ([]*keystore.Note, error)
}

// notePrefix starts every sweep note's id.
const notePrefix = "sweep/"

// NoteID is the keystore note that holds a collection's sweep state:
// "sweep/" and the collection name with every byte outside a-z, 0-9 and
// '-' written as '.' and two hex digits, so that any name maps to a valid
// id and no two names to the same one.
func NoteID(collection string) string {
	var b strings.Builder
	b.WriteString(notePrefix)
	for i := 0; i < len(collection); i++ {
		c := collection[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, ".%02x", c)
	}
	return b.String()
}

// Run states.
const (
	// StateQueued: asked for (admin API), not started yet.
	StateQueued = "queued"
	// StateRunning: a process is sweeping (Owner, Heartbeat say which
	// and when it last wrote a checkpoint).
	StateRunning = "running"
	// StatePaused: stopped on request at a checkpoint; resume continues.
	StatePaused = "paused"
	// StateInterrupted: stopped by shutdown, leadership loss or an
	// error that may pass (keystore, HSM or datastore down); resume
	// continues from the checkpoint.
	StateInterrupted = "interrupted"
	// StateDone: the walk reached its end.
	StateDone = "done"
)

// Runner kinds: who resumes an unfinished run.
const (
	// RunnerCLI: `sidecrypt sweep`; resumed by running it again.
	RunnerCLI = "cli"
	// RunnerJob: the background job of `serve`, controlled through the
	// admin API; the leader resumes it.
	RunnerJob = "job"
)

// State is one collection's sweep record.
type State struct {
	// Collection is the concrete collection (a CouchDB database).
	Collection string `json:"collection"`
	// Rule is the rule file's collection (name or pattern) that
	// protects it.
	Rule string `json:"rule"`
	// Desired is what the operator wants of a background job: "run" or
	// "pause". The running process reads it at every checkpoint.
	Desired string `json:"desired,omitempty"`
	// Sweep is the current or last rewriting run; DryRun the current or
	// last dry run. They are kept apart so that an inventory taken in
	// the middle of an interrupted sweep does not lose its checkpoint.
	Sweep  *Run `json:"sweep,omitempty"`
	DryRun *Run `json:"dry_run,omitempty"`
	// Last is the inventory of the last run (of either kind) that
	// reached the end of the collection: what `keys destroy` and `keys
	// status` show.
	Last *Inventory `json:"last,omitempty"`
	// Fields are the fields the rules protected when the last
	// rewriting run finished, under RulesHash: a later sweep finds the
	// fields whose protection was removed by comparing them with the
	// rules in force.
	Fields    []FieldSpec `json:"fields,omitempty"`
	RulesHash string      `json:"rules_hash,omitempty"`
	// Removed are fields whose protection was removed before the last
	// rewriting run and whose tokens that run left in place (it was not
	// allowed to decrypt them): remembered until a run decrypts them or
	// the rules protect them again.
	Removed []FieldSpec `json:"removed,omitempty"`
	// Grant is an approved permission to decrypt removed fields (dual
	// control through the admin API); used up by the run it allows.
	Grant *Grant `json:"grant,omitempty"`

	revision int64
}

// Run is one sweep of a collection, from start to done.
type Run struct {
	ID      string `json:"id"`
	Runner  string `json:"runner"`
	Owner   string `json:"owner"`
	State   string `json:"state"`
	Options Spec   `json:"options"`
	// Cursor is the datastore walk's checkpoint: every document before
	// it is done.
	Cursor    string    `json:"cursor,omitempty"`
	Started   time.Time `json:"started"`
	Heartbeat time.Time `json:"heartbeat,omitzero"`
	Finished  time.Time `json:"finished,omitzero"`
	Counts    Counts    `json:"counts"`
	// Error is why the run stopped, when it did not finish.
	Error string `json:"error,omitempty"`
	// Actor is who started the run, for the audit log.
	Actor string `json:"actor,omitempty"`
	// Total is the datastore's estimate of the collection's size at the
	// start, for progress; -1 when unknown.
	Total int64 `json:"total"`
	// Compacted is when the datastore accepted the request to drop
	// earlier document versions after the run (Spec.Compact).
	Compacted time.Time `json:"compacted,omitzero"`
}

// Spec is what a run does; a run is resumed only with the same Spec.
type Spec struct {
	DryRun bool         `json:"dry_run,omitempty"`
	From   []KeyVersion `json:"from,omitempty"`
	// DecryptRemoved opens the tokens of Removed fields (with a Grant).
	DecryptRemoved bool        `json:"decrypt_removed,omitempty"`
	Removed        []FieldSpec `json:"removed,omitempty"`
	// Rate is documents per second; 0 for no limit. It may change on a
	// resume.
	Rate float64 `json:"rate,omitempty"`
	// Grant is the approval id that allows DecryptRemoved.
	Grant string `json:"grant,omitempty"`
	// Compact asks the datastore, once the run is done, to drop the
	// bodies of earlier document versions (datastore.Compactor), which
	// still hold the values as they were. It may change on a resume.
	Compact bool `json:"compact,omitempty"`
}

// same reports whether two specs do the same work (Rate aside).
func (s Spec) same(o Spec) bool {
	a, b := s, o
	a.Rate, b.Rate = 0, 0
	a.Compact, b.Compact = false, false
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// Grant is an approved permission to decrypt the tokens of removed
// fields of one collection.
type Grant struct {
	ID          string      `json:"id"`
	Fields      []FieldSpec `json:"fields"`
	RequestedBy string      `json:"requested_by"`
	ApprovedBy  string      `json:"approved_by"`
	Expires     time.Time   `json:"expires"`
}

// Counts are what a run has done and found so far. Maps are keyed by
// key version ("pii:3") or field name.
type Counts struct {
	// Documents scanned; Rewritten of them written back; Failed not
	// written (a per-document error, or conflicts past the retry
	// bound); Conflicts is how many writes lost to a concurrent update
	// and were retried.
	Documents int64 `json:"documents"`
	Rewritten int64 `json:"rewritten"`
	Failed    int64 `json:"failed"`
	Conflicts int64 `json:"conflicts"`
	Blocked   int64 `json:"blocked,omitempty"`
	// Skipped documents by reason (design, deleted, unreadable).
	Skipped map[string]int64 `json:"skipped,omitempty"`
	// Values changed (a dry run: values it would change).
	Reencrypted int64 `json:"reencrypted"`
	Encrypted   int64 `json:"encrypted"`
	Decrypted   int64 `json:"decrypted"`
	// Tokens are the values under each key version after the run (a dry
	// run: as found).
	Tokens map[string]int64 `json:"tokens,omitempty"`
	// Plaintext are values left in plaintext in protected fields.
	Plaintext map[string]int64 `json:"plaintext,omitempty"`
	// Unopenable are tokens due to change that could not be opened.
	Unopenable map[string]int64 `json:"unopenable,omitempty"`
	// Removed are tokens left in fields the rules no longer protect.
	Removed map[string]int64 `json:"removed,omitempty"`
	// Misplaced are tokens in protected fields that are not of the
	// field's key and mode.
	Misplaced map[string]int64 `json:"misplaced,omitempty"`
}

// add adds one document's outcome.
func (c *Counts) add(o *Outcome) {
	c.Reencrypted += int64(o.Reencrypted)
	c.Encrypted += int64(o.Encrypted)
	c.Decrypted += int64(o.Decrypted)
	for kv, n := range o.Tokens {
		inc(&c.Tokens, kv.String(), n)
	}
	for f, n := range o.Plaintext {
		inc(&c.Plaintext, f, n)
	}
	for kv, n := range o.Unopenable {
		inc(&c.Unopenable, kv.String(), n)
	}
	for f, n := range o.Removed {
		inc(&c.Removed, f, n)
	}
	for f, n := range o.Misplaced {
		inc(&c.Misplaced, f, n)
	}
	if o.Blocked {
		c.Blocked++
	}
}

func inc(m *map[string]int64, k string, n int) {
	if *m == nil {
		*m = map[string]int64{}
	}
	(*m)[k] += int64(n)
}

// Values is the number of values changed.
func (c *Counts) Values() int64 { return c.Reencrypted + c.Encrypted + c.Decrypted }

// Inventory is what the store held when a run finished: the numbers a
// compliance team asks for ("what is still under the compromised key")
// and that `keys destroy` shows before it erases a version.
type Inventory struct {
	RunID    string    `json:"run_id"`
	DryRun   bool      `json:"dry_run"`
	Finished time.Time `json:"finished"`
	// RulesHash is the rules the run applied.
	RulesHash  string           `json:"rules_hash,omitempty"`
	Documents  int64            `json:"documents"`
	Tokens     map[string]int64 `json:"tokens"`
	Plaintext  map[string]int64 `json:"plaintext,omitempty"`
	Unopenable map[string]int64 `json:"unopenable,omitempty"`
	Removed    map[string]int64 `json:"removed,omitempty"`
	Misplaced  map[string]int64 `json:"misplaced,omitempty"`
	// Failed documents were not rewritten: their values are counted as
	// they stayed.
	Failed int64 `json:"failed,omitempty"`
}

func inventoryOf(r *Run, rulesHash string) *Inventory {
	return &Inventory{RunID: r.ID, DryRun: r.Options.DryRun, Finished: r.Finished, RulesHash: rulesHash,
		Documents: r.Counts.Documents, Tokens: orEmpty(r.Counts.Tokens), Plaintext: r.Counts.Plaintext,
		Unopenable: r.Counts.Unopenable, Removed: r.Counts.Removed, Misplaced: r.Counts.Misplaced, Failed: r.Counts.Failed}
}

func orEmpty(m map[string]int64) map[string]int64 {
	if m == nil {
		return map[string]int64{}
	}
	return maps.Clone(m)
}

// decodeState reads a note.
func decodeState(n *keystore.Note) (*State, error) {
	st := &State{}
	if err := json.Unmarshal(n.Value, st); err != nil {
		return nil, fmt.Errorf("sweep: note %q: %w", n.ID, err)
	}
	st.revision = n.Revision
	return st, nil
}

// LoadState returns the sweep state of collection; a new, empty one (nil
// error) when it has never been swept.
func LoadState(ctx context.Context, notes Notes, collection string) (*State, error) {
	n, err := notes.GetNote(ctx, NoteID(collection))
	if errors.Is(err, keystore.ErrNotFound) {
		return &State{Collection: collection}, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeState(n)
}

// ListStates returns every collection's sweep state, sorted by
// collection. States that fail their integrity check are left out and
// reported in the error.
func ListStates(ctx context.Context, notes Notes) ([]*State, error) {
	ns, lerr := notes.ListNotes(ctx, notePrefix)
	var out []*State
	var errs []error
	if lerr != nil {
		errs = append(errs, lerr)
	}
	for _, n := range ns {
		st, err := decodeState(n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Collection < out[j].Collection })
	return out, errors.Join(errs...)
}

// save writes st with compare-and-swap on the revision it was read at.
func (st *State) save(ctx context.Context, notes Notes) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	n, err := notes.PutNote(ctx, &keystore.Note{ID: NoteID(st.Collection), Value: b, Revision: st.revision})
	if err != nil {
		return err
	}
	st.revision = n.Revision
	return nil
}

// Update reads collection's state, applies fn and writes it back,
// retrying when another writer got in between. fn may be called more
// than once.
func Update(ctx context.Context, notes Notes, collection string, fn func(st *State) error) (*State, error) {
	for attempt := 1; ; attempt++ {
		st, err := LoadState(ctx, notes, collection)
		if err != nil {
			return nil, err
		}
		if err := fn(st); err != nil {
			return nil, err
		}
		err = st.save(ctx, notes)
		if err == nil {
			return st, nil
		}
		if !(errors.Is(err, keystore.ErrConflict) || errors.Is(err, keystore.ErrExists)) || attempt >= 20 {
			return nil, err
		}
	}
}

// VersionCount is what the last sweeps of every collection found under
// one key version.
type VersionCount struct {
	Key     string `json:"key"`
	Version uint32 `json:"version"`
	// Values is the sum over the collections with an inventory.
	Values int64 `json:"values"`
	// Collections lists each collection's count, and when it was taken.
	Collections []CollectionCount `json:"collections"`
}

// CollectionCount is one collection's count in a VersionCount.
type CollectionCount struct {
	Collection string    `json:"collection"`
	Values     int64     `json:"values"`
	Swept      time.Time `json:"swept"`
	DryRun     bool      `json:"dry_run"`
	// Unfinished: a sweep of the collection started after this
	// inventory and has not finished; the count may be out of date.
	Unfinished bool `json:"unfinished,omitempty"`
}

// CountsFor sums, over every collection's last inventory, the values
// held under key:version. Collections never swept to the end are not in
// it: the caller says so ("unknown").
func CountsFor(states []*State, kv KeyVersion) VersionCount {
	vc := VersionCount{Key: kv.Key, Version: kv.Version, Collections: []CollectionCount{}}
	for _, st := range states {
		if st.Last == nil {
			continue
		}
		n := st.Last.Tokens[kv.String()]
		vc.Values += n
		unfinished := (st.Sweep != nil && st.Sweep.State != StateDone && st.Sweep.Started.After(st.Last.Finished)) ||
			(st.DryRun != nil && st.DryRun.State != StateDone && st.DryRun.Started.After(st.Last.Finished))
		vc.Collections = append(vc.Collections, CollectionCount{Collection: st.Collection, Values: n, Swept: st.Last.Finished, DryRun: st.Last.DryRun, Unfinished: unfinished})
	}
	return vc
}

// KeyVersions lists the key versions named in any inventory, sorted.
func KeyVersions(states []*State) []KeyVersion {
	seen := map[KeyVersion]bool{}
	for _, st := range states {
		if st.Last == nil {
			continue
		}
		for k := range st.Last.Tokens {
			if kv, err := ParseKeyVersion(k); err == nil {
				seen[kv] = true
			}
		}
	}
	out := slices.Collect(maps.Keys(seen))
	sort.Slice(out, func(i, j int) bool {
		if out[i].Key != out[j].Key {
			return out[i].Key < out[j].Key
		}
		return out[i].Version < out[j].Version
	})
	return out
}
