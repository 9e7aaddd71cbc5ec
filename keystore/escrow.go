package keystore

// Two wraps per data key: the escrow provider.
//
// A keystore may have a second KEK provider, the escrow (Config.Escrow;
// SIDECRYPT_HSM_ESCROW), for example AWS KMS beside an on-site PKCS#11
// HSM. Then:
//
//   - every data key version is wrapped under both: the primary copy in
//     Version.Wrapped, the escrow copy in Version.Escrow, each bound to the
//     key's name and version as the provider can (hsm.Binding), and each
//     unwrapped back and compared before it is stored;
//   - every record is MAC'd by both providers' record keys: Seal.MAC by the
//     primary's, which every read checks, and Seal.EscrowMAC by the
//     escrow's, which only a recovery checks;
//   - destroying a version erases both copies.
//
// So either provider alone opens every key. When the primary is lost (its
// token destroyed, its KMS keys deleted), Recover opens each key from its
// escrow copy, after checking every record against its escrow MAC, wraps
// it under a new primary and re-seals every record with the new primary's
// record key: the integrity chain goes on without a gap, and nothing has
// to be taken on trust except records that never got an escrow MAC
// (RecoverOptions.TrustUnverified).
//
// The escrow is best effort on the write path, so that its outage does
// not stop the keystore: a version created while it is unreachable gets
// no escrow copy, and a record no escrow MAC. Rewrap, which the scheduler
// runs in every `serve`, adds both as soon as the escrow answers (and
// re-wraps escrow copies made under an older escrow KEK, or by another
// escrow provider). A keystore in which any version has an escrow copy is
// an escrow keystore: a process without the escrow configured refuses to
// create versions in it, so a sidecar that lacks the setting cannot
// quietly add keys that only one provider holds.

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/internal/audit"
)

// EscrowKEK is what the Manager needs of the escrow provider. Every
// hsm.Provider satisfies it.
type EscrowKEK interface {
	Wrap(ctx context.Context, dek []byte, b hsm.Binding) (hsm.Wrapped, error)
	Unwrap(ctx context.Context, w hsm.Wrapped, b hsm.Binding) ([]byte, error)
	CurrentKEK(ctx context.Context) (uint32, error)
	// KEKs, RotateKEK and RetireKEK manage the escrow's own KEK versions
	// (EscrowKEKs, RotateEscrowKEK, RetireEscrowKEK).
	KEKs(ctx context.Context) ([]hsm.KEKInfo, error)
	RotateKEK(ctx context.Context) (uint32, error)
	RetireKEK(ctx context.Context, version uint32) error
	RecordMAC(ctx context.Context, msg []byte) ([]byte, error)
	VerifyRecordMAC(ctx context.Context, msg, mac []byte) error
	Describe() hsm.Description
}

var _ EscrowKEK = hsm.Provider(nil)

// ErrEscrowRequired: the keystore keeps a second wrap of its keys, and this
// process has no escrow provider configured.
var ErrEscrowRequired = errors.New("this keystore keeps a second wrap of every data key under an escrow provider, and none is configured (set SIDECRYPT_HSM_ESCROW as every process on this keystore does)")

// EscrowID returns the escrow provider's ID, or "" without one.
func (m *Manager) EscrowID() string { return m.escrowID }

// escrowWrapVerified wraps dek under the escrow's current KEK and unwraps
// it back, as wrapVerified does for the primary.
func (m *Manager) escrowWrapVerified(ctx context.Context, name string, version uint32, dek []byte) (*EscrowWrap, error) {
	b := hsm.Binding{Key: name, Version: version}
	w, err := m.escrow.Wrap(ctx, dek, b)
	if err != nil {
		return nil, fmt.Errorf("keystore: key %q v%d: escrow wrap (%s): %w", name, version, m.escrowID, err)
	}
	back, err := m.escrow.Unwrap(ctx, w, b)
	if err != nil {
		return nil, fmt.Errorf("keystore: key %q v%d: %w: unwrap of the new escrow copy (%s): %w", name, version, ErrVerify, m.escrowID, err)
	}
	defer clear(back)
	if subtle.ConstantTimeCompare(back, dek) != 1 {
		return nil, fmt.Errorf("keystore: key %q v%d: %w: the new escrow copy unwraps to different bytes", name, version, ErrVerify)
	}
	return &EscrowWrap{Provider: m.escrowID, KEKVersion: w.KEKVersion, Mechanism: w.Mechanism, Wrapped: w.Bytes}, nil
}

// escrowWrapOrLater is escrowWrapVerified for a new version: when the
// escrow cannot wrap now, the version is made without an escrow copy, and
// Rewrap adds it later. Nil without an escrow provider.
func (m *Manager) escrowWrapOrLater(ctx context.Context, name string, version uint32, dek []byte) *EscrowWrap {
	if m.escrow == nil {
		return nil
	}
	ew, err := m.escrowWrapVerified(ctx, name, version, dek)
	if err != nil {
		m.integ.log.Warn("keystore: the escrow provider could not wrap a new data key version; it is stored with its primary copy only until the next re-wrap adds the escrow copy",
			"key", name, "version", version, "escrow", m.escrowID, "error", err)
		return nil
	}
	return ew
}

// checkEscrowConfigured refuses to make a version in an escrow keystore
// (one in which any version has an escrow copy) without an escrow
// provider.
func (m *Manager) checkEscrowConfigured(ctx context.Context) error {
	if m.escrow != nil {
		return nil
	}
	keys, _ := m.listKeys(ctx)
	for _, k := range keys {
		if slices.ContainsFunc(k.Versions, func(v Version) bool { return v.Escrow != nil }) {
			return fmt.Errorf("keystore: %w", ErrEscrowRequired)
		}
	}
	return nil
}

// needsEscrow reports whether v's escrow copy is missing, made by another
// escrow provider, or under an escrow KEK other than current (0: unknown,
// the escrow is unreachable; then only a missing copy counts).
func (m *Manager) needsEscrow(v *Version, current uint32) bool {
	if m.escrow == nil || len(v.Wrapped) == 0 {
		return false
	}
	e := v.Escrow
	return e == nil || e.Provider != m.escrowID || current != 0 && e.KEKVersion != current
}

// addEscrowMACs re-seals every record that carries no escrow MAC (written
// before the escrow was configured, or while it was unreachable), so that
// a recovery can check it. Placeholders (generation 1) are left: they
// hold nothing. It returns how many records it sealed.
func (m *Manager) addEscrowMACs(ctx context.Context) (int, error) {
	if m.escrow == nil {
		return 0, nil
	}
	var n int
	var errs []error
	h, err := m.readHead(ctx)
	if err != nil {
		return 0, err
	}
	if h.meta != nil && h.Seal != nil && len(h.Seal.EscrowMAC) == 0 {
		if err := m.writeHead(ctx, h); err != nil {
			errs = append(errs, fmt.Errorf("keystore: escrow MAC of the head record: %w", err))
		} else {
			n++
		}
	}
	keys, err := m.listKeys(ctx)
	errs = append(errs, err)
	for _, k := range keys {
		if k.Seal == nil || len(k.Seal.EscrowMAC) > 0 {
			continue
		}
		if _, err := m.update(ctx, k.Name, func(*Key) error { return nil }); err != nil {
			errs = append(errs, fmt.Errorf("keystore: escrow MAC of key %q: %w", k.Name, err))
			continue
		}
		n++
	}
	floors := m.hwSnapshot()
	byName := map[string]*Key{}
	for _, k := range keys {
		byName[k.Name] = k
	}
	us, err := m.store.ListMeta(ctx, usagePrefix)
	errs = append(errs, err)
	for _, meta := range us {
		name, version, ok := parseUsageID(meta.ID)
		k := byName[name]
		if !ok || k == nil || k.Lookup(version) == nil {
			continue
		}
		u, err := m.readUsage(ctx, meta, floors[meta.ID], name, k.Lookup(version))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if u.Seal.Generation < 2 || len(u.Seal.EscrowMAC) > 0 {
			continue
		}
		if err := m.writeUsage(ctx, u); err != nil && !errors.Is(err, ErrConflict) {
			errs = append(errs, fmt.Errorf("keystore: escrow MAC of the seal counter of %q v%d: %w", name, version, err))
			continue
		}
		n++
	}
	notes, err := m.store.ListMeta(ctx, notePrefix)
	errs = append(errs, err)
	for _, meta := range notes {
		rec, err := m.readNoteRecord(ctx, meta, floors[meta.ID])
		if err != nil {
			if !errors.Is(err, ErrNotFound) {
				errs = append(errs, err)
			}
			continue
		}
		if len(rec.Seal.EscrowMAC) > 0 {
			continue
		}
		if err := m.resealNote(ctx, meta, rec); err != nil && !errors.Is(err, ErrConflict) {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// readNoteRecord is readNote returning the stored form.
func (m *Manager) readNoteRecord(ctx context.Context, meta *Meta, floor uint64) (*noteRecord, error) {
	if _, err := m.readNote(ctx, meta, floor); err != nil {
		return nil, err
	}
	var rec noteRecord
	if err := json.Unmarshal(meta.Value, &rec); err != nil {
		return nil, err
	}
	return &rec, nil
}

// resealNote writes a note again as it is, sealed by this Manager (its
// primary and escrow record keys), over the record meta (compare-and-swap).
func (m *Manager) resealNote(ctx context.Context, meta *Meta, rec *noteRecord) error {
	out := &noteRecord{ID: rec.ID, Value: rec.Value}
	s, err := m.sealWith(ctx, meta.Writes, meta.Incarnation, func(s *Seal) []byte { return noteMACInput(out, s) })
	if err != nil {
		return err
	}
	out.Seal = s
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	nm, err := m.store.PutMeta(ctx, &Meta{ID: meta.ID, Value: b, Revision: meta.Revision})
	if err != nil {
		return err
	}
	m.noteGeneration(nm.ID, nm.Writes)
	return nil
}

// escrowView is a Manager over the same store that checks records against
// their escrow MACs, with the escrow provider's record key: what a
// recovery trusts once the primary's record key is gone. It writes
// nothing.
func (m *Manager) escrowView() *Manager {
	return &Manager{store: m.store, kek: m.kek, audit: audit.Discard, now: m.now, rand: m.rand,
		integ: newIntegrity(slog.New(slog.DiscardHandler), nil), sealLimit: m.sealLimit,
		escrow: m.escrow, escrowID: m.escrowID, viaEscrow: true}
}

// RecoverOptions configure Recover.
type RecoverOptions struct {
	// DryRun checks and plans, and writes nothing.
	DryRun bool
	// TrustUnverified takes records that carry no escrow MAC as they are
	// (written before the escrow was configured, and never re-sealed by
	// a re-wrap since). Nothing vouches for them: the operator must have
	// checked them against their own records and the audit log.
	TrustUnverified bool
	// AllowLoss recovers what has an escrow copy and leaves versions that
	// have none as they are (they stay unreadable until restored from a
	// backup). Without it, any such version refuses the whole recovery.
	AllowLoss bool
}

// RecoverResult says what Recover found and did.
type RecoverResult struct {
	// From is the escrow provider's ID.
	From string `json:"from"`
	// Keys and Versions count what was (or, in a dry run, would be)
	// re-wrapped under the new primary.
	Keys     int `json:"keys"`
	Versions int `json:"versions"`
	// Records counts the records re-sealed (keys, head, seal counters,
	// notes).
	Records int `json:"records"`
	// Unverified names records that carry no escrow MAC.
	Unverified []string `json:"unverified,omitempty"`
	// Lost names versions with material but no escrow copy.
	Lost []string `json:"lost,omitempty"`
	// Refusals name what stops the recovery; nothing is written while
	// any remain.
	Refusals []string `json:"refusals,omitempty"`
}

// ErrRecoverRefused: Recover found something it will not carry on with.
var ErrRecoverRefused = errors.New("recovery refused, nothing was written")

// recovered is one key as Recover will write it.
type recovered struct {
	k    *Key
	deks map[uint32][]byte
}

// Recover rebuilds the keystore on a new primary provider from the escrow
// copies, after the primary was lost. m's KEK is the new primary and its
// escrow the provider to recover from.
//
// First it checks every record against its escrow MAC under the escrow's
// record key (a record edited while the primary was down is refused, as
// one without an escrow MAC is unless TrustUnverified), and opens every
// version's escrow copy, bound to its name and version, checking it
// against the version's fingerprint. If anything fails, nothing is
// written. Then it wraps each key under the new primary (unwrapping it
// back to compare) and writes every record again, sealed by the new
// primary's record key and the escrow's: the head record first, then the
// keys, the seal counters and the notes. Each version is audited
// (key.recover). Running it again after an interruption finishes the job.
func (m *Manager) Recover(ctx context.Context, opts RecoverOptions) (RecoverResult, error) {
	const action = "key.recover"
	res := RecoverResult{From: m.escrowID}
	if m.escrow == nil {
		return res, errors.New("keystore: recover: no escrow provider to recover from (SIDECRYPT_HSM_ESCROW)")
	}
	ev := m.escrowView()
	refuse := func(format string, args ...any) { res.Refusals = append(res.Refusals, fmt.Sprintf(format, args...)) }
	classify := func(what string, err error) bool {
		switch {
		case err == nil:
			return true
		case errors.Is(err, ErrNoEscrowMAC):
			res.Unverified = append(res.Unverified, what)
			if !opts.TrustUnverified {
				refuse("%s carries no escrow MAC (written before the escrow was configured; check it, then allow unverified records)", what)
			}
			return opts.TrustUnverified
		case errors.Is(err, ErrIntegrity) || errors.Is(err, ErrUnsealed):
			refuse("%s failed its check under the escrow's record key: %v", what, err)
			return false
		}
		refuse("%s could not be checked: %v", what, err)
		return false
	}

	// The head record.
	head := &headRecord{Keys: map[string]headEntry{}}
	hmeta, err := m.store.GetMeta(ctx, headID)
	switch {
	case errors.Is(err, ErrNotFound):
		hmeta = nil
	case err != nil:
		return res, m.finish(ctx, action, "", 0, "", nil, err)
	default:
		if err := json.Unmarshal(hmeta.Value, head); err != nil {
			refuse("the head record is not valid JSON")
		} else {
			if head.Keys == nil {
				head.Keys = map[string]headEntry{}
			}
			classify("the head record", ev.checkSeal(ctx, "head", 0, head.Seal, hmeta.Writes, hmeta.Incarnation, len(head.Keys) == 0,
				func(s *Seal) []byte { return headMACInput(head, s) }))
		}
		head.meta = hmeta
	}

	// The key records, and every version's escrow copy.
	raw, err := m.store.List(ctx)
	if err != nil {
		return res, m.finish(ctx, action, "", 0, "", nil, err)
	}
	var keys []*recovered
	defer func() {
		for _, rk := range keys {
			for _, d := range rk.deks {
				clear(d)
			}
		}
	}()
	byName := map[string]*Key{}
	for _, k := range raw {
		what := "key " + strconv.Quote(k.Name)
		if k.isPlaceholder() {
			continue // an unfinished create: it holds nothing
		}
		if verr := ev.checkKey(ctx, k, head, 0); !classify(what, verr) && !errors.Is(verr, ErrNoEscrowMAC) {
			continue // (an unverified key is still looked at, to report all at once)
		}
		rk := &recovered{k: k, deks: map[uint32][]byte{}}
		keys = append(keys, rk)
		byName[k.Name] = k
		for i := range k.Versions {
			v := &k.Versions[i]
			if len(v.Wrapped) == 0 {
				continue
			}
			vname := fmt.Sprintf("%s v%d", k.Name, v.Version)
			if v.Escrow == nil {
				res.Lost = append(res.Lost, vname)
				if !opts.AllowLoss {
					refuse("%s has no escrow copy: it cannot be recovered from the escrow (restore it from a backup, or allow its loss)", vname)
				}
				continue
			}
			if v.Escrow.Provider != m.escrowID {
				m.integ.log.Warn("keystore: recover: an escrow copy names another escrow provider; trying this one", "key", k.Name, "version", v.Version, "copy", v.Escrow.Provider, "escrow", m.escrowID)
			}
			dek, err := m.escrow.Unwrap(ctx, v.Escrow.wrapped(), hsm.Binding{Key: k.Name, Version: v.Version})
			if err != nil {
				refuse("%s: its escrow copy does not open (escrow KEK v%d): %v", vname, v.Escrow.KEKVersion, err)
				continue
			}
			if len(dek) != fieldcrypt.DataKeySize || !fingerprintMatches(dek, v.Fingerprint) {
				clear(dek)
				refuse("%s: its escrow copy opens to a key that does not match its fingerprint", vname)
				continue
			}
			rk.deks[v.Version] = dek
			res.Versions++
		}
		res.Keys++
	}
	for name, e := range head.Keys {
		if byName[name] == nil && e.Generation > 1 && !slices.ContainsFunc(raw, func(k *Key) bool { return k.Name == name }) {
			refuse("key %q: the head record lists it at generation %d, but its record is missing", name, e.Generation)
		}
	}

	// The seal counters and notes.
	type metaRec struct {
		meta *Meta
		u    *usageRecord
		note *noteRecord
	}
	var metas []metaRec
	us, err := m.store.ListMeta(ctx, usagePrefix)
	if err != nil {
		return res, m.finish(ctx, action, "", 0, "", nil, err)
	}
	for _, meta := range us {
		name, version, ok := parseUsageID(meta.ID)
		k := byName[name]
		if !ok || k == nil || k.Lookup(version) == nil {
			continue
		}
		u, err := ev.readUsage(ctx, meta, 0, name, k.Lookup(version))
		if err != nil {
			var raw usageRecord
			if !classify(fmt.Sprintf("seal counter of %q v%d", name, version), err) || json.Unmarshal(meta.Value, &raw) != nil {
				continue
			}
			raw.meta = meta
			u = &raw
		}
		if u.Seal == nil || u.Seal.Generation < 2 {
			continue
		}
		metas = append(metas, metaRec{meta: meta, u: u})
	}
	ns, err := m.store.ListMeta(ctx, notePrefix)
	if err != nil {
		return res, m.finish(ctx, action, "", 0, "", nil, err)
	}
	for _, meta := range ns {
		what := "note " + strconv.Quote(strings.TrimPrefix(meta.ID, notePrefix))
		var rec noteRecord
		if json.Unmarshal(meta.Value, &rec) != nil {
			refuse("%s is not valid JSON", what)
			continue
		}
		if rec.Seal == nil || rec.Seal.Generation < 2 {
			continue
		}
		if _, err := ev.readNote(ctx, meta, 0); !classify(what, err) {
			continue
		}
		metas = append(metas, metaRec{meta: meta, note: &rec})
	}

	if len(res.Refusals) > 0 {
		err := fmt.Errorf("keystore: %w: %s", ErrRecoverRefused, strings.Join(res.Refusals, "; "))
		return res, m.finish(ctx, action, "", 0, "", map[string]string{"from": m.escrowID}, err)
	}
	if opts.DryRun {
		return res, nil
	}

	// Write: the head first, so that each key's write (which reads the
	// head) finds it sealed by the new primary.
	var errs []error
	if hmeta != nil {
		if err := m.writeHead(ctx, head); err != nil {
			return res, m.finish(ctx, action, "", 0, "", nil, fmt.Errorf("keystore: recover: head record: %w", err))
		}
		res.Records++
	}
	for _, rk := range keys {
		k := rk.k
		details := map[string]string{"from": m.escrowID}
		var failed error
		for v, dek := range rk.deks {
			w, err := m.wrapVerified(ctx, k.Name, v, dek)
			if err != nil {
				failed = err
				break
			}
			tv := k.Lookup(v)
			tv.Wrapped, tv.KEKVersion, tv.Mechanism = w.Bytes, w.KEKVersion, w.Mechanism
		}
		if failed == nil {
			var out *Key
			out, failed = m.putKey(ctx, k)
			details = withGeneration(details, out)
		}
		if failed != nil {
			errs = append(errs, m.finish(ctx, action, k.Name, 0, "", details, fmt.Errorf("keystore: recover %q: %w", k.Name, failed)))
			continue
		}
		res.Records++
		versions := slices.Sorted(func(yield func(uint32) bool) {
			for v := range rk.deks {
				if !yield(v) {
					return
				}
			}
		})
		for _, v := range versions {
			d := map[string]string{"from": m.escrowID, "to_kek": strconv.FormatUint(uint64(k.Lookup(v).KEKVersion), 10)}
			errs = append(errs, m.finish(ctx, action, k.Name, v, "recovered from the escrow copy", d, nil))
		}
	}
	for _, mr := range metas {
		var err error
		if mr.u != nil {
			mr.u.meta = mr.meta
			err = m.writeUsage(ctx, mr.u)
		} else {
			err = m.resealNote(ctx, mr.meta, mr.note)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("keystore: recover: re-seal %s: %w", mr.meta.ID, err))
			continue
		}
		res.Records++
	}
	return res, errors.Join(errs...)
}

// EscrowCoverage says how much of the keystore the escrow could recover
// now, from what is stored (no provider is asked).
type EscrowCoverage struct {
	// Provider is the configured escrow's ID.
	Provider string `json:"provider"`
	// Versions counts versions with material; Covered those whose escrow
	// copy was made by the configured escrow.
	Versions, Covered int
	// Missing names versions with material and no escrow copy from the
	// configured escrow: a recovery would lose them.
	Missing []string `json:"missing,omitempty"`
	// UnsealedRecords counts records (keys, head, counters) without an
	// escrow MAC: a recovery would need --trust-unverified for them.
	UnsealedRecords int `json:"unsealed_records"`
}

// EscrowCoverage reports, for `keys verify`, what a recovery from the
// escrow would find. Rewrap closes every gap it reports.
func (m *Manager) EscrowCoverage(ctx context.Context) (EscrowCoverage, error) {
	c := EscrowCoverage{Provider: m.escrowID}
	if m.escrow == nil {
		return c, errors.New("keystore: no escrow provider")
	}
	keys, err := m.listKeys(ctx)
	if keys == nil && err != nil {
		return c, err
	}
	for _, k := range keys {
		if k.Seal != nil && len(k.Seal.EscrowMAC) == 0 {
			c.UnsealedRecords++
		}
		for i := range k.Versions {
			v := &k.Versions[i]
			if len(v.Wrapped) == 0 {
				continue
			}
			c.Versions++
			if v.Escrow != nil && v.Escrow.Provider == m.escrowID {
				c.Covered++
			} else {
				c.Missing = append(c.Missing, fmt.Sprintf("%s v%d", k.Name, v.Version))
			}
		}
	}
	if h, herr := m.readHead(ctx); herr == nil && h.Seal != nil && len(h.Seal.EscrowMAC) == 0 {
		c.UnsealedRecords++
	}
	metas, merr := m.store.ListMeta(ctx, usagePrefix)
	for _, meta := range metas {
		var u usageRecord
		if json.Unmarshal(meta.Value, &u) == nil && u.Seal != nil && u.Seal.Generation >= 2 && len(u.Seal.EscrowMAC) == 0 {
			c.UnsealedRecords++
		}
	}
	return c, errors.Join(err, merr)
}

// errNoEscrow is returned by the escrow KEK operations without an escrow.
var errNoEscrow = errors.New("keystore: no escrow provider is configured (SIDECRYPT_HSM_ESCROW)")

// escrowUse counts escrow copies per escrow KEK version (only those made by
// the configured escrow).
func (m *Manager) escrowUse(ctx context.Context) (map[uint32]int, error) {
	keys, err := m.listKeys(ctx)
	if err != nil {
		return nil, err
	}
	use := map[uint32]int{}
	for _, k := range keys {
		for _, v := range k.Versions {
			if e := v.Escrow; e != nil && e.Provider == m.escrowID {
				use[e.KEKVersion]++
			}
		}
	}
	return use, nil
}

// EscrowKEKs lists the escrow provider's KEK versions with the escrow
// copies each wraps, as KEKs does for the primary.
func (m *Manager) EscrowKEKs(ctx context.Context) ([]KEKStatus, error) {
	if m.escrow == nil {
		return nil, errNoEscrow
	}
	infos, err := m.escrow.KEKs(ctx)
	if err != nil {
		return nil, fmt.Errorf("keystore: list escrow KEKs: %w", err)
	}
	current, err := m.escrow.CurrentKEK(ctx)
	if err != nil {
		return nil, fmt.Errorf("keystore: current escrow KEK: %w", err)
	}
	use, err := m.escrowUse(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]KEKStatus, len(infos))
	for i, info := range infos {
		out[i] = KEKStatus{KEKInfo: info, DEKs: use[info.Version]}
		out[i].Retirable = info.Version != current && info.State != "retired" && use[info.Version] == 0
	}
	return out, nil
}

// RotateEscrowKEK makes a new KEK version in the escrow provider; Rewrap
// then moves every escrow copy under it.
func (m *Manager) RotateEscrowKEK(ctx context.Context) (uint32, error) {
	if m.escrow == nil {
		return 0, errNoEscrow
	}
	v, err := m.escrow.RotateKEK(ctx)
	if err != nil {
		err = fmt.Errorf("keystore: rotate escrow KEK: %w", err)
	}
	return v, m.finish(ctx, "kek.rotate", "", v, "", map[string]string{"escrow": m.escrowID}, err)
}

// RetireEscrowKEK retires an old escrow KEK version, refusing (ErrKEKInUse)
// while any escrow copy is still under it, or when it is current.
func (m *Manager) RetireEscrowKEK(ctx context.Context, version uint32) error {
	if m.escrow == nil {
		return errNoEscrow
	}
	return m.retireKEK(ctx, m.escrow, m.escrowUse, version, "escrow KEK", "escrow copy(ies)", "sidecrypt kek escrow rotate",
		map[string]string{"escrow": m.escrowID})
}
