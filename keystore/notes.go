package keystore

// Notes: small records that other parts of sidecrypt keep in the keystore,
// next to the keys they are about, with the same integrity as the keys'
// own records. The store sweep (internal/sweep) keeps each collection's
// checkpoint and its count of values per key version in one; `sidecrypt
// keys destroy` reads those counts before it erases a version, so a count
// edited in the store (to make a version look unused) must be refused,
// not believed.
//
// A note is a Meta record "note/<id>" whose value is the caller's bytes
// and a Seal: the record key's HMAC over the kind "note", the id, the
// generation and incarnation (as for every record: a replayed, re-created
// or rolled-back note is refused, see seal.go) and the bytes. Like the
// head record and the seal counters, a new note is first written as an
// empty placeholder (generation 1) so that its content is bound to the
// record's incarnation from generation 2 on; a placeholder reads as "no
// note". Notes are never deleted: a deleted note would be indistinguishable
// from one that never existed.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

const (
	notePrefix = "note/"
	kindNote   = "note"
)

// MaxNoteSize bounds a note's value: notes are small state, not data.
const MaxNoteSize = 256 << 10

// Note is a sealed record kept for another part of sidecrypt.
type Note struct {
	// ID names the note: ValidMetaID characters, at most 190 bytes.
	ID string
	// Value is the caller's content, opaque to the keystore.
	Value []byte
	// Revision is what PutNote must be given to replace this note
	// (compare-and-swap); zero for a note that does not exist yet.
	Revision int64

	meta *Meta
}

// noteRecord is a note's stored form.
type noteRecord struct {
	ID    string `json:"id"`
	Value []byte `json:"value,omitempty"`
	Seal  *Seal  `json:"seal,omitempty"`
}

func noteMACInput(n *noteRecord, s *Seal) []byte {
	e := newMACInput(kindNote)
	e.str(n.ID)
	e.u64(s.Generation)
	e.i64(s.Incarnation)
	e.bytes(n.Value)
	return e.b
}

func checkNoteID(id string) error {
	if len(id) > 190 || !ValidMetaID(id) {
		return fmt.Errorf("keystore: invalid note id %q (1 to 190 bytes of a-z, 0-9, '-', '_', '.', '/')", id)
	}
	return nil
}

// GetNote returns the note id, verified, or ErrNotFound. A note that
// fails its integrity check is refused (ErrIntegrity), logged, counted and
// audited like any other record.
func (m *Manager) GetNote(ctx context.Context, id string) (*Note, error) {
	if err := checkNoteID(id); err != nil {
		return nil, err
	}
	floor := m.hwOf(notePrefix + id)
	meta, err := m.store.GetMeta(ctx, notePrefix+id)
	if err != nil {
		return nil, err
	}
	return m.readNote(ctx, meta, floor)
}

// ListNotes returns the verified notes whose ids start with prefix,
// sorted by id. Notes that fail their check are left out and reported in
// the error, joined; the others are still returned.
func (m *Manager) ListNotes(ctx context.Context, prefix string) ([]*Note, error) {
	floors := m.hwSnapshot()
	metas, err := m.store.ListMeta(ctx, notePrefix+prefix)
	if err != nil {
		return nil, err
	}
	var out []*Note
	var errs []error
	for _, meta := range metas {
		n, err := m.readNote(ctx, meta, floors[meta.ID])
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			errs = append(errs, err)
		default:
			out = append(out, n)
		}
	}
	return out, errors.Join(errs...)
}

func (m *Manager) readNote(ctx context.Context, meta *Meta, floor uint64) (*Note, error) {
	id := strings.TrimPrefix(meta.ID, notePrefix)
	what := fmt.Sprintf("note %q", id)
	var rec noteRecord
	if err := json.Unmarshal(meta.Value, &rec); err != nil {
		return nil, m.refuse(ctx, what, "", 0, fmt.Errorf("%w: not valid JSON", ErrIntegrity))
	}
	err := m.checkSeal(ctx, meta.ID, floor, rec.Seal, meta.Writes, meta.Incarnation, len(rec.Value) == 0,
		func(s *Seal) []byte { return noteMACInput(&rec, s) })
	if err == nil && rec.ID != id {
		err = fmt.Errorf("%w: it was sealed as note %q", ErrIntegrity, rec.ID)
	}
	if err != nil {
		if !errors.Is(err, ErrIntegrity) && !errors.Is(err, ErrUnsealed) {
			return nil, fmt.Errorf("keystore: %s: %w", what, err)
		}
		return nil, m.refuse(ctx, what, "", 0, err)
	}
	n := &Note{ID: id, Value: rec.Value, Revision: meta.Revision, meta: meta}
	if rec.Seal.Generation < 2 {
		// A placeholder: a writer died between its two writes. It
		// reads as no note; PutNote with this Revision carries on.
		return n, fmt.Errorf("keystore: %s is an unfinished placeholder: %w", what, ErrNotFound)
	}
	return n, nil
}

// PutNote stores n.Value under n.ID if the note's revision is still
// n.Revision (zero: the note must not exist yet, or be a placeholder
// left by a writer that died), and returns the stored note with its new
// Revision. It fails with ErrConflict (or ErrExists) and changes nothing
// when another writer got there first; the caller reads the note again
// and decides.
func (m *Manager) PutNote(ctx context.Context, n *Note) (*Note, error) {
	if err := checkNoteID(n.ID); err != nil {
		return nil, err
	}
	if len(n.Value) == 0 || len(n.Value) > MaxNoteSize {
		return nil, fmt.Errorf("keystore: note %q: a value of 1 to %d bytes is required", n.ID, MaxNoteSize)
	}
	id := notePrefix + n.ID
	var writes uint64
	var inc, rev int64
	if n.Revision == 0 {
		// Find the placeholder a dead writer may have left, or make one.
		floor := m.hwOf(id)
		meta, err := m.store.GetMeta(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
			empty := &noteRecord{ID: n.ID}
			s, err := m.sealWith(ctx, 0, 0, func(s *Seal) []byte { return noteMACInput(empty, s) })
			if err != nil {
				return nil, err
			}
			empty.Seal = s
			b, _ := json.Marshal(empty)
			if meta, err = m.store.PutMeta(ctx, &Meta{ID: id, Value: b}); err != nil {
				return nil, err
			}
			m.noteGeneration(id, meta.Writes)
		case err != nil:
			return nil, err
		default:
			cur, err := m.readNote(ctx, meta, floor)
			if err == nil {
				return nil, fmt.Errorf("keystore: note %q: %w", n.ID, ErrExists)
			}
			if !errors.Is(err, ErrNotFound) {
				return nil, err
			}
			meta = cur.meta
		}
		writes, inc, rev = meta.Writes, meta.Incarnation, meta.Revision
	} else {
		cur := n.meta
		if cur == nil || cur.Revision != n.Revision {
			// A note built by the caller from a Revision alone: read
			// the record it names.
			floor := m.hwOf(id)
			meta, err := m.store.GetMeta(ctx, id)
			if err != nil {
				return nil, err
			}
			if meta.Revision != n.Revision {
				return nil, fmt.Errorf("keystore: note %q: %w", n.ID, ErrConflict)
			}
			if _, err := m.readNote(ctx, meta, floor); err != nil && !errors.Is(err, ErrNotFound) {
				return nil, err
			}
			cur = meta
		}
		writes, inc, rev = cur.Writes, cur.Incarnation, cur.Revision
	}
	rec := &noteRecord{ID: n.ID, Value: n.Value}
	s, err := m.sealWith(ctx, writes, inc, func(s *Seal) []byte { return noteMACInput(rec, s) })
	if err != nil {
		return nil, err
	}
	rec.Seal = s
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	meta, err := m.store.PutMeta(ctx, &Meta{ID: id, Value: b, Revision: rev})
	if err != nil {
		return nil, err
	}
	m.noteGeneration(id, meta.Writes)
	return &Note{ID: n.ID, Value: n.Value, Revision: meta.Revision, meta: meta}, nil
}
