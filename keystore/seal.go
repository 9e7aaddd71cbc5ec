package keystore

// Record integrity: every record the Manager keeps in a Store carries an
// HMAC-SHA256 made by the HSM's record key (hsm.Provider.RecordMAC) over a
// canonical, versioned encoding of everything in it, and is checked on
// every read. docs/KEYS.md, "Record integrity", states the guarantees and
// the encoding; the comments here say how the code meets them.

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/sidecrypt/sidecrypt/hsm"
)

// Integrity errors. A record that fails is never used: reads that need it
// fail with one of these (the proxy answers 503), and each failure is
// logged at ERROR, counted and audited.
var (
	// ErrIntegrity: a record was changed, replayed, re-created or deleted
	// outside sidecrypt, or the store was rolled back.
	ErrIntegrity = errors.New("keystore record failed its integrity check")
	// ErrUnsealed: a record carries no MAC: it was written by a sidecrypt
	// from before record integrity (or by hand). `sidecrypt keys
	// seal-records` seals such records once, after the operator checks
	// them.
	ErrUnsealed = errors.New("keystore record carries no integrity seal (written before record MACs; check it and run `sidecrypt keys seal-records`)")
	// ErrNoEscrowMAC: in a recovery from the escrow provider, a record
	// carries no escrow MAC (written before the escrow was configured,
	// or while it was unreachable, and not re-sealed since): nothing the
	// escrow vouches for. `keys recover --trust-unverified` takes it as
	// it is, after the operator has checked it.
	ErrNoEscrowMAC = errors.New("keystore record carries no escrow MAC")
)

// recordDomain starts every MAC input: it names the format and its
// version, and keeps these MACs apart from anything else the record key
// might ever MAC.
const recordDomain = "sidecrypt record v1"

// Record kinds, the second field of every MAC input.
const (
	kindKey   = "key"
	kindHead  = "head"
	kindUsage = "usage"
)

// headID is the Meta id of the head record.
const headID = "head"

// macInput builds the canonical encoding: every field in a fixed order;
// integers big-endian and fixed-size; strings and byte strings as a
// 4-byte big-endian length and the bytes; times as one byte 0 (unset) or
// 1 followed by Unix seconds (8 bytes, signed) and nanoseconds (4 bytes).
// Length prefixes make the encoding injective: no two records encode the
// same.
type macInput struct{ b []byte }

func newMACInput(kind string) *macInput {
	e := &macInput{b: make([]byte, 0, 256)}
	e.b = append(e.b, recordDomain...)
	e.b = append(e.b, 0)
	e.str(kind)
	return e
}

func (e *macInput) u8(v byte)    { e.b = append(e.b, v) }
func (e *macInput) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *macInput) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *macInput) i64(v int64)  { e.u64(uint64(v)) }
func (e *macInput) bytes(b []byte) {
	e.u32(uint32(len(b)))
	e.b = append(e.b, b...)
}
func (e *macInput) str(s string) { e.bytes([]byte(s)) }
func (e *macInput) time(t time.Time) {
	if t.IsZero() {
		e.u8(0)
		return
	}
	e.u8(1)
	e.i64(t.Unix())
	e.u32(uint32(t.Nanosecond()))
}

// keyMACInput encodes k for its MAC. Key has 9 fields and Version 16
// (TestMACInputCoversEveryField counts them): every field that is stored
// is here, except the MAC itself; Revision, Writes and Incarnation come
// from the store and are checked against the seal instead.
func keyMACInput(k *Key, s *Seal) []byte {
	e := newMACInput(kindKey)
	e.str(k.Name)
	e.u64(s.Generation)
	e.i64(s.Incarnation)
	e.u32(k.Primary)
	e.i64(int64(k.Cryptoperiod))
	e.time(k.Created)
	e.u32(uint32(len(k.Versions)))
	for i := range k.Versions {
		v := &k.Versions[i]
		e.u32(v.Version)
		e.str(string(v.State))
		e.str(v.Algorithm)
		e.bytes(v.Wrapped)
		e.u32(v.KEKVersion)
		e.str(v.Mechanism)
		e.str(v.Fingerprint)
		e.time(v.Created)
		e.time(v.Activated)
		e.time(v.Deactivated)
		e.time(v.Compromised)
		e.time(v.Destroyed)
		e.str(v.Reason)
		e.time(v.OverrideUntil)
		e.str(v.OverrideReason)
		e.i64(v.Counter)
	}
	// The escrow copies follow the versions, only in a record that has
	// one: a record without keeps the encoding (and the MAC) it always
	// had. The encoding before this point is self-delimiting, so the two
	// forms cannot collide.
	if slices.ContainsFunc(k.Versions, func(v Version) bool { return v.Escrow != nil }) {
		e.str("escrow")
		for i := range k.Versions {
			ew := k.Versions[i].Escrow
			if ew == nil {
				e.u8(0)
				continue
			}
			e.u8(1)
			e.str(ew.Provider)
			e.u32(ew.KEKVersion)
			e.str(ew.Mechanism)
			e.bytes(ew.Wrapped)
		}
	}
	return e.b
}

// headRecord is the Meta record "head": for every key name, the generation
// of its record and the versions that were ever compromised or destroyed.
// It is written after every key record, so that one old key record put
// back (a replay) is older than the head says, and a destroyed version
// that reappears contradicts it.
type headRecord struct {
	Keys map[string]headEntry `json:"keys"`
	Seal *Seal                `json:"seal,omitempty"`

	meta *Meta // where it was read from; nil when absent from the store
}

type headEntry struct {
	Generation uint64 `json:"generation"`
	// Revoked maps a version to compromised or destroyed: the furthest
	// state it ever reached that a replay would want to undo.
	Revoked map[uint32]State `json:"revoked,omitempty"`
}

func headMACInput(h *headRecord, s *Seal) []byte {
	e := newMACInput(kindHead)
	e.u64(s.Generation)
	e.i64(s.Incarnation)
	names := make([]string, 0, len(h.Keys))
	for n := range h.Keys {
		names = append(names, n)
	}
	sort.Strings(names)
	e.u32(uint32(len(names)))
	for _, n := range names {
		he := h.Keys[n]
		e.str(n)
		e.u64(he.Generation)
		vs := make([]uint32, 0, len(he.Revoked))
		for v := range he.Revoked {
			vs = append(vs, v)
		}
		slices.Sort(vs)
		e.u32(uint32(len(vs)))
		for _, v := range vs {
			e.u32(v)
			e.str(string(he.Revoked[v]))
		}
	}
	return e.b
}

// revokedRank orders the states a replay would want to undo.
func revokedRank(s State) int {
	switch s {
	case StateCompromised:
		return 1
	case StateDestroyed:
		return 2
	}
	return 0
}

// revokedOf lists k's compromised and destroyed versions.
func revokedOf(k *Key) map[uint32]State {
	out := map[uint32]State{}
	for _, v := range k.Versions {
		if revokedRank(v.State) > 0 {
			out[v.Version] = v.State
		}
	}
	return out
}

// integrity is the Manager's record-checking state.
type integrity struct {
	log      *slog.Logger
	onFail   func(record string)
	failures uint64

	mu sync.Mutex
	// memo remembers MAC checks by SHA-256 of (input, MAC): the check is
	// a deterministic function of both, so a record read again costs no
	// HSM call, and keeps working from memory while the HSM is briefly
	// down. Bounded; cleared when full.
	memo map[[32]byte]bool
	// high-water marks: the highest generation seen per record in this
	// process. A lower one later is a rollback, refused even when the
	// older record is authentic.
	hw map[string]uint64
	// reported remembers failures already logged and audited, so that a
	// flood of reads of one bad record makes one event, not thousands.
	reported map[[32]byte]bool
}

const memoMax = 1 << 14

func newIntegrity(log *slog.Logger, onFail func(string)) *integrity {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &integrity{log: log, onFail: onFail, memo: map[[32]byte]bool{}, hw: map[string]uint64{}, reported: map[[32]byte]bool{}}
}

func memoKey(input, mac []byte) [32]byte {
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(input)))
	h.Write(n[:])
	h.Write(input)
	h.Write(mac)
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// checkMAC verifies mac over input, through the memo. An unreachable HSM
// is returned as it is (ErrUnavailable: 503, not tampering).
func (m *Manager) checkMAC(ctx context.Context, input, mac []byte) error {
	mk := memoKey(input, mac)
	m.integ.mu.Lock()
	ok, known := m.integ.memo[mk]
	m.integ.mu.Unlock()
	if !known {
		err := m.verifyRecordMAC(ctx, input, mac)
		if err != nil && !errors.Is(err, hsm.ErrRecordMAC) {
			return err
		}
		ok = err == nil
		m.integ.mu.Lock()
		if len(m.integ.memo) >= memoMax {
			clear(m.integ.memo)
		}
		m.integ.memo[mk] = ok
		m.integ.mu.Unlock()
	}
	if !ok {
		if m.viaEscrow {
			return errors.New("its escrow MAC does not verify under the escrow provider's record key (edited outside sidecrypt, or sealed for another escrow)")
		}
		return errors.New("its MAC does not verify under the HSM's record key (edited outside sidecrypt, or sealed by another HSM)")
	}
	return nil
}

// verifyRecordMAC asks the provider whose record key this Manager reads
// with: the primary, or the escrow in a recovery's view (escrowView).
func (m *Manager) verifyRecordMAC(ctx context.Context, input, mac []byte) error {
	if m.viaEscrow {
		return m.escrow.VerifyRecordMAC(ctx, input, mac)
	}
	return m.kek.VerifyRecordMAC(ctx, input, mac)
}

// hwOf returns the highest generation of record hwKey this process has
// seen. A reader takes it before reading the record from the store and
// passes it to checkSeal as the floor: the store is linearizable, so a
// read that begins after a write (or a read) finished returns that
// generation or a later one. Taking it after the read would turn a
// concurrent writer in this process into a false alarm.
func (m *Manager) hwOf(hwKey string) uint64 {
	m.integ.mu.Lock()
	defer m.integ.mu.Unlock()
	return m.integ.hw[hwKey]
}

// hwSnapshot copies every high-water mark, for reads of many records.
func (m *Manager) hwSnapshot() map[string]uint64 {
	m.integ.mu.Lock()
	defer m.integ.mu.Unlock()
	out := make(map[string]uint64, len(m.integ.hw))
	for k, v := range m.integ.hw {
		out[k] = v
	}
	return out
}

// checkSeal applies the rules every record obeys: a seal; a generation
// equal to the number of times the store wrote the record (an old record
// written again has the wrong one: through etcd's API this cannot be
// forged); generation 1 is an empty placeholder with no incarnation,
// later ones carry the store's incarnation (a record deleted and made
// again has another); a MAC that verifies; and no generation below floor,
// the highest this process had seen of the record (hwKey) before it read
// it. empty says whether the record is a placeholder's content.
func (m *Manager) checkSeal(ctx context.Context, hwKey string, floor uint64, s *Seal, writes uint64, inc int64, empty bool, input func(*Seal) []byte) error {
	switch {
	case s == nil:
		return ErrUnsealed
	case s.Generation != writes:
		return fmt.Errorf("%w: the store has written it %d times, but it is sealed as generation %d (an old record written again, or a copy)", ErrIntegrity, writes, s.Generation)
	case s.Generation == 1 && (s.Incarnation != 0 || !empty):
		return fmt.Errorf("%w: a first-generation record must be an empty placeholder", ErrIntegrity)
	case s.Generation > 1 && s.Incarnation != inc:
		return fmt.Errorf("%w: it was sealed for incarnation %d of the record, and this is incarnation %d (deleted and made again outside sidecrypt)", ErrIntegrity, s.Incarnation, inc)
	}
	mac := s.MAC
	if m.viaEscrow {
		if mac = s.EscrowMAC; len(mac) == 0 {
			return ErrNoEscrowMAC
		}
	}
	if err := m.checkMAC(ctx, input(s), mac); err != nil {
		if errors.Is(err, hsm.ErrUnavailable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("verify record MAC: %w", err)
		}
		return fmt.Errorf("%w: %v", ErrIntegrity, err)
	}
	if s.Generation < floor {
		return fmt.Errorf("%w: generation %d is older than generation %d, which this process had already seen (the store was rolled back)", ErrIntegrity, s.Generation, floor)
	}
	m.noteGeneration(hwKey, s.Generation)
	return nil
}

// noteGeneration raises a high-water mark after a write.
func (m *Manager) noteGeneration(hwKey string, gen uint64) {
	m.integ.mu.Lock()
	m.integ.hw[hwKey] = max(m.integ.hw[hwKey], gen)
	m.integ.mu.Unlock()
}

// refuse reports an integrity failure once per distinct failure (log at
// ERROR, counter, hook, audit event) and returns it, wrapped with what
// failed. Errors that are not about integrity pass through.
func (m *Manager) refuse(ctx context.Context, record, name string, version uint32, err error) error {
	if !errors.Is(err, ErrIntegrity) && !errors.Is(err, ErrUnsealed) && !errors.Is(err, ErrNoEscrowMAC) {
		return err
	}
	err = fmt.Errorf("keystore: %s: %w", record, err)
	rk := sha256.Sum256([]byte(err.Error()))
	m.integ.mu.Lock()
	seen := m.integ.reported[rk]
	if !seen {
		if len(m.integ.reported) >= memoMax {
			clear(m.integ.reported)
		}
		m.integ.reported[rk] = true
	}
	m.integ.failures++
	m.integ.mu.Unlock()
	if m.integ.onFail != nil {
		m.integ.onFail(record)
	}
	if !seen {
		m.integ.log.Error("keystore: refusing a record that failed its integrity check; the key cannot be used until it is restored (docs/KEYS.md, \"Record integrity\")",
			"record", record, "key", name, "error", err)
		_ = m.event(ctx, "key.integrity", name, version, "denied", err.Error(), map[string]string{"record": record})
	}
	return err
}

// IntegrityFailures returns how many record reads failed their integrity
// check in this process (every read, not only the first of each record).
func (m *Manager) IntegrityFailures() uint64 {
	m.integ.mu.Lock()
	defer m.integ.mu.Unlock()
	return m.integ.failures
}

// sealWith computes a seal for a record about to be written whose store
// stamp is (writes, inc) before the write.
func (m *Manager) sealWith(ctx context.Context, writes uint64, inc int64, input func(*Seal) []byte) (*Seal, error) {
	s := &Seal{Generation: writes + 1}
	if s.Generation > 1 {
		s.Incarnation = inc
	}
	in := input(s)
	mac, err := m.kek.RecordMAC(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("keystore: record MAC: %w", err)
	}
	s.MAC = mac
	if m.escrow != nil {
		// Best effort: an unreachable escrow must not stop the keystore.
		// The record is written without its escrow MAC, and the next
		// re-wrap run adds it (addEscrowMACs).
		if em, err := m.escrow.RecordMAC(ctx, in); err == nil {
			s.EscrowMAC = em
		} else {
			m.integ.log.Warn("keystore: the escrow provider could not MAC a record; it is written without an escrow MAC, which the next re-wrap adds", "error", err)
		}
	}
	// What this process MACs it need not ask the HSM to verify.
	mk := memoKey(in, mac)
	m.integ.mu.Lock()
	if len(m.integ.memo) >= memoMax {
		clear(m.integ.memo)
	}
	m.integ.memo[mk] = true
	m.integ.mu.Unlock()
	return s, nil
}

// readHead returns the verified head record, or an empty one (meta nil)
// when the store has none yet.
func (m *Manager) readHead(ctx context.Context) (*headRecord, error) {
	floor := m.hwOf("head")
	meta, err := m.store.GetMeta(ctx, headID)
	if errors.Is(err, ErrNotFound) {
		return &headRecord{Keys: map[string]headEntry{}}, nil
	}
	if err != nil {
		return nil, err
	}
	h := &headRecord{}
	if err := json.Unmarshal(meta.Value, h); err != nil {
		return nil, m.refuse(ctx, "head record", "", 0, fmt.Errorf("%w: not valid JSON", ErrIntegrity))
	}
	if h.Keys == nil {
		h.Keys = map[string]headEntry{}
	}
	h.meta = meta
	err = m.checkSeal(ctx, "head", floor, h.Seal, meta.Writes, meta.Incarnation, len(h.Keys) == 0, func(s *Seal) []byte { return headMACInput(h, s) })
	if err != nil {
		if !errors.Is(err, ErrIntegrity) && !errors.Is(err, ErrUnsealed) {
			return nil, fmt.Errorf("keystore: head record: %w", err)
		}
		return nil, m.refuse(ctx, "head record", "", 0, err)
	}
	return h, nil
}

// writeHead seals and stores h (read by readHead and changed). A head
// that does not exist yet is first written as an empty placeholder, so
// that its content is bound to its incarnation from generation 2 on.
func (m *Manager) writeHead(ctx context.Context, h *headRecord) error {
	var writes uint64
	var inc, rev int64
	if h.meta != nil {
		writes, inc, rev = h.meta.Writes, h.meta.Incarnation, h.meta.Revision
	} else {
		empty := &headRecord{Keys: map[string]headEntry{}}
		s, err := m.sealWith(ctx, 0, 0, func(s *Seal) []byte { return headMACInput(empty, s) })
		if err != nil {
			return err
		}
		empty.Seal = s
		b, _ := json.Marshal(empty)
		meta, err := m.store.PutMeta(ctx, &Meta{ID: headID, Value: b})
		if err != nil {
			return err
		}
		m.noteGeneration("head", meta.Writes)
		writes, inc, rev = meta.Writes, meta.Incarnation, meta.Revision
	}
	s, err := m.sealWith(ctx, writes, inc, func(s *Seal) []byte { return headMACInput(h, s) })
	if err != nil {
		return err
	}
	h.Seal = s
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	meta, err := m.store.PutMeta(ctx, &Meta{ID: headID, Value: b, Revision: rev})
	if err != nil {
		return err
	}
	m.noteGeneration("head", meta.Writes)
	h.meta = meta
	return nil
}

// bumpHead records that key name's record is at generation gen with
// these revoked versions (merged with what the head knows: a revocation
// is never forgotten), retrying on concurrent head writers.
func (m *Manager) bumpHead(ctx context.Context, name string, gen uint64, revoked map[uint32]State) error {
	for attempt := 1; ; attempt++ {
		h, err := m.readHead(ctx)
		if err != nil {
			return err
		}
		e := h.Keys[name]
		changed := gen > e.Generation
		e.Generation = max(e.Generation, gen)
		for v, s := range revoked {
			if revokedRank(s) > revokedRank(e.Revoked[v]) {
				if e.Revoked == nil {
					e.Revoked = map[uint32]State{}
				}
				e.Revoked[v] = s
				changed = true
			}
		}
		if !changed {
			return nil
		}
		h.Keys[name] = e
		err = m.writeHead(ctx, h)
		if (errors.Is(err, ErrConflict) || errors.Is(err, ErrExists)) && attempt < maxCASAttempts {
			continue
		}
		return err
	}
}

// checkKey verifies one key record read from the store against its seal
// and the head.
func (m *Manager) checkKey(ctx context.Context, k *Key, h *headRecord, floor uint64) error {
	empty := len(k.Versions) == 0 && k.Primary == 0 && k.Created.IsZero() && k.Cryptoperiod == 0
	err := m.checkSeal(ctx, "key/"+k.Name, floor, k.Seal, k.Writes, k.Incarnation, empty, func(s *Seal) []byte { return keyMACInput(k, s) })
	if err != nil {
		return err
	}
	e := h.Keys[k.Name]
	// A writer raises the head after each key write, and first brings it
	// up to the record it read, so a record is at most one generation
	// ahead of the head (a writer between its two writes, or one that
	// crashed there) and never behind it.
	switch {
	case k.Seal.Generation < e.Generation:
		return skewError{fmt.Errorf("%w: it is generation %d, and the head record says %d (an older record put back)", ErrIntegrity, k.Seal.Generation, e.Generation)}
	case k.Seal.Generation > e.Generation+1:
		return skewError{fmt.Errorf("%w: it is generation %d, and the head record says %d (the head record was rolled back or removed)", ErrIntegrity, k.Seal.Generation, e.Generation)}
	}
	for v, s := range e.Revoked {
		cur := k.Lookup(v)
		if cur == nil || revokedRank(cur.State) < revokedRank(s) {
			st := "absent"
			if cur != nil {
				st = string(cur.State)
			}
			return fmt.Errorf("%w: v%d is %s in the record, and the head record says it was %s", ErrIntegrity, v, st, s)
		}
	}
	return nil
}

// isPlaceholder reports whether k is the empty first generation of a key
// whose creation has not finished.
func (k *Key) isPlaceholder() bool { return k.Seal != nil && k.Seal.Generation == 1 }

// skewError is an integrity failure in which a key record and the head
// disagree on the key's generation. The two are separate reads, so a
// writer (another process re-wrapping, rotating) can move both between
// them: readKey and listKeys read again before they believe it. A
// rollback stays: the second read disagrees as the first did.
type skewError struct{ error }

func (e skewError) Unwrap() error { return e.error }

// skewRereads is how many times a generation disagreement is read again
// before it is reported as an integrity failure. Each writer moves a
// record at most one generation ahead of the head, so an honest
// disagreement needs a writer to complete between the two reads of every
// attempt.
const skewRereads = 5

// readKey reads and verifies one key record. A placeholder is returned as
// it is (Create adopts it); Get and friends treat it as absent.
func (m *Manager) readKey(ctx context.Context, name string) (*Key, error) {
	var k *Key
	var err error
	for range skewRereads {
		if k, err = m.readKeyOnce(ctx, name); !errors.As(err, new(skewError)) {
			break
		}
	}
	var skew skewError
	if errors.As(err, &skew) {
		return nil, m.refuse(ctx, "key "+strconv.Quote(name), name, 0, skew.error)
	}
	return k, err
}

// readKeyOnce is one attempt of readKey. A generation disagreement is
// returned as a skewError, not yet refused (audited).
func (m *Manager) readKeyOnce(ctx context.Context, name string) (*Key, error) {
	h, err := m.readHead(ctx)
	if err != nil {
		return nil, err
	}
	floor := m.hwOf("key/" + name)
	k, err := m.store.Get(ctx, name)
	if errors.Is(err, ErrNotFound) {
		if e, ok := h.Keys[name]; ok && e.Generation > 1 {
			return nil, m.refuse(ctx, "key "+strconv.Quote(name), name, 0,
				fmt.Errorf("%w: the head record lists it at generation %d, but its record is missing (deleted outside sidecrypt)", ErrIntegrity, e.Generation))
		}
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	if err := m.checkKey(ctx, k, h, floor); err != nil {
		if errors.As(err, new(skewError)) {
			return nil, err
		}
		if !errors.Is(err, ErrIntegrity) && !errors.Is(err, ErrUnsealed) {
			return nil, fmt.Errorf("keystore: key %q: %w", name, err)
		}
		return nil, m.refuse(ctx, "key "+strconv.Quote(name), name, 0, err)
	}
	return k, nil
}

// getKey is readKey for callers that want a usable key: a placeholder is
// ErrNotFound.
func (m *Manager) getKey(ctx context.Context, name string) (*Key, error) {
	k, err := m.readKey(ctx, name)
	if err == nil && k.isPlaceholder() {
		return nil, fmt.Errorf("keystore: key %q: %w", name, ErrNotFound)
	}
	return k, err
}

// listKeys reads and verifies every key record. It returns the records
// that pass (placeholders left out) and, joined, an error for each that
// fails, and for each key the head lists whose record is missing.
func (m *Manager) listKeys(ctx context.Context) ([]*Key, error) {
	h, err := m.readHead(ctx)
	if err != nil {
		return nil, err
	}
	floors := m.hwSnapshot()
	all, err := m.store.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []*Key
	var errs []error
	seen := map[string]bool{}
	for _, k := range all {
		seen[k.Name] = true
		if err := m.checkKey(ctx, k, h, floors["key/"+k.Name]); err != nil {
			if !errors.As(err, new(skewError)) {
				errs = append(errs, m.refuse(ctx, "key "+strconv.Quote(k.Name), k.Name, 0, err))
				continue
			}
			// A writer may have moved this key between the list and
			// the head read: read it again on its own.
			rk, rerr := m.readKey(ctx, k.Name)
			switch {
			case errors.Is(rerr, ErrNotFound):
				continue
			case rerr != nil:
				errs = append(errs, rerr)
				continue
			}
			k = rk
		}
		if !k.isPlaceholder() {
			out = append(out, k)
		}
	}
	for name, e := range h.Keys {
		if !seen[name] && e.Generation > 1 {
			errs = append(errs, m.refuse(ctx, "key "+strconv.Quote(name), name, 0,
				fmt.Errorf("%w: the head record lists it at generation %d, but its record is missing (deleted outside sidecrypt)", ErrIntegrity, e.Generation)))
		}
	}
	return out, errors.Join(errs...)
}

// putKey seals k and writes it (compare-and-swap on k.Revision), then
// raises the head. k is a record read by readKey and changed, or a new
// key (Revision 0), which is first written as an empty placeholder so
// that its content is bound to the record's incarnation.
func (m *Manager) putKey(ctx context.Context, k *Key) (*Key, error) {
	// Whatever was remembered of this key for refusals is about to be
	// out of date (denials.go).
	defer m.denials.forget(k.Name)
	m.denials.forget(k.Name)
	if k.Revision != 0 {
		// Bring the head up to the record being replaced, in case its
		// writer stopped between its two writes: then the record about
		// to be written is at most one ahead of the head.
		if err := m.bumpHead(ctx, k.Name, k.Writes, nil); err != nil {
			return nil, err
		}
	} else {
		ph := &Key{Name: k.Name}
		s, err := m.sealWith(ctx, 0, 0, func(s *Seal) []byte { return keyMACInput(ph, s) })
		if err != nil {
			return nil, err
		}
		ph.Seal = s
		out, err := m.store.Put(ctx, ph)
		if err != nil {
			return nil, err
		}
		m.noteGeneration("key/"+k.Name, out.Writes)
		if err := m.bumpHead(ctx, k.Name, out.Writes, nil); err != nil {
			return nil, err
		}
		k.Revision, k.Writes, k.Incarnation = out.Revision, out.Writes, out.Incarnation
	}
	s, err := m.sealWith(ctx, k.Writes, k.Incarnation, func(s *Seal) []byte { return keyMACInput(k, s) })
	if err != nil {
		return nil, err
	}
	k.Seal = s
	out, err := m.store.Put(ctx, k)
	if err != nil {
		return nil, err
	}
	m.noteGeneration("key/"+k.Name, out.Writes)
	if err := m.bumpHead(ctx, k.Name, out.Writes, revokedOf(out)); err != nil {
		// The record is written; readers accept it one generation ahead
		// of the head, and the next write brings the head up.
		m.integ.log.Warn("keystore: key written, but the head record could not be updated yet; the next write of the key does it", "key", k.Name, "error", err)
	}
	return out, nil
}

// Verify checks every record in the store, key records, the head and the
// seal counters, and returns one error per record that fails, joined. It
// reads only; `sidecrypt keys verify` and serve's start-up use it.
func (m *Manager) Verify(ctx context.Context) (keys int, err error) {
	ks, err := m.listKeys(ctx)
	errs := []error{err}
	if ks == nil && err != nil {
		return 0, err
	}
	byName := map[string]*Key{}
	for _, k := range ks {
		byName[k.Name] = k
	}
	floors := m.hwSnapshot()
	us, uerr := m.store.ListMeta(ctx, usagePrefix)
	errs = append(errs, uerr)
	for _, meta := range us {
		name, version, ok := parseUsageID(meta.ID)
		k := byName[name]
		if !ok || k == nil {
			continue
		}
		if v := k.Lookup(version); v != nil {
			if _, err := m.readUsage(ctx, meta, floors[meta.ID], k.Name, v); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return len(ks), errors.Join(errs...)
}

// UnsealedKeys returns the key records that carry no seal (written before
// record MACs), as they are in the store, unverified: what `sidecrypt keys
// seal-records` shows the operator before sealing them.
func (m *Manager) UnsealedKeys(ctx context.Context) ([]*Key, error) {
	all, err := m.store.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []*Key
	for _, k := range all {
		if k.Seal == nil {
			out = append(out, k)
		}
	}
	return out, nil
}

// SealRecords seals every key record that carries no seal: the one-time
// migration of a keystore written before record MACs. Nothing can vouch
// for such records, so the operator must have checked them (the CLI shows
// each key, version and state first); what SealRecords does check is that
// every wrapped key unwraps under its KEK and matches its fingerprint,
// and it refuses a key that fails. It also makes the seal counters of
// active and pre-active versions. Each sealed key is audited
// (key.seal-records). Records that are sealed already are left alone.
func (m *Manager) SealRecords(ctx context.Context) (sealed []string, err error) {
	const action = "key.seal-records"
	unsealed, err := m.UnsealedKeys(ctx)
	if err != nil {
		return nil, err
	}
	head, err := m.readHead(ctx)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, raw := range unsealed {
		name := raw.Name
		if e, ok := head.Keys[name]; ok && e.Generation > 0 {
			// This key was sealed once: a record without a seal now is
			// one that was replaced outside sidecrypt, not an old one.
			err := m.refuse(ctx, "key "+strconv.Quote(name), name, 0, fmt.Errorf("%w: it was sealed before (generation %d in the head record) and its seal is gone; restore it from a backup", ErrIntegrity, e.Generation))
			errs = append(errs, m.finish(ctx, action, name, 0, "", nil, err))
			continue
		}
		if err := m.sealOne(ctx, raw); err != nil {
			errs = append(errs, m.finish(ctx, action, name, 0, "", nil, err))
			continue
		}
		sealed = append(sealed, name)
		k, _ := m.getKey(ctx, name)
		errs = append(errs, m.finish(ctx, action, name, 0, "sealed by the operator's migration", withGeneration(nil, k), nil))
	}
	return sealed, errors.Join(errs...)
}

func (m *Manager) sealOne(ctx context.Context, k *Key) error {
	for i := range k.Versions {
		v := &k.Versions[i]
		if len(v.Wrapped) > 0 {
			dek, err := m.kek.Unwrap(ctx, v.wrapped(), hsm.Binding{Key: k.Name, Version: v.Version})
			if err != nil {
				return fmt.Errorf("keystore: key %q v%d does not unwrap (KEK v%d), so it is not sealed: %w", k.Name, v.Version, v.KEKVersion, err)
			}
			ok := fingerprintMatches(dek, v.Fingerprint)
			clear(dek)
			if !ok {
				return fmt.Errorf("keystore: key %q v%d, so it is not sealed: %w", k.Name, v.Version, ErrFingerprint)
			}
		} else if v.State != StateDestroyed {
			return fmt.Errorf("keystore: key %q v%d is %s but has no wrapped key, so it is not sealed", k.Name, v.Version, v.State)
		}
		if (v.State == StateActive || v.State == StatePreActive) && v.Counter == 0 {
			inc, err := m.ensureCounter(ctx, k.Name, v.Version)
			if err != nil {
				return err
			}
			v.Counter = inc
		}
	}
	_, err := m.putKey(ctx, k)
	return err
}
