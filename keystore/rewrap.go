package keystore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/sidecrypt/sidecrypt/hsm"
)

// Limiter paces background work; *rate.Limiter from golang.org/x/time/rate
// satisfies it.
type Limiter interface {
	Wait(ctx context.Context) error
}

// RewrapOptions configure Rewrap.
type RewrapOptions struct {
	// Limiter, when set, is waited on before each version, so that a
	// background re-wrap leaves the HSM to the request path.
	Limiter Limiter
	// Progress, when set, is called after each version with the number
	// handled so far (re-wrapped, skipped or failed) and the total.
	Progress func(done, total int)
}

// RewrapResult says what Rewrap did.
type RewrapResult struct {
	KEKVersion uint32 // the current KEK that versions were moved under
	// Total counts versions found wrapped under another KEK, or (with an
	// escrow provider) lacking an up-to-date escrow copy.
	Total     int
	Rewrapped int
	// Skipped counts versions that changed under Rewrap (destroyed, or
	// re-wrapped by another process) and so needed nothing more.
	Skipped int
	Failed  int
	// EscrowKEKVersion is the escrow provider's current KEK, when there
	// is one and it answered; EscrowMACs counts records that were given
	// the escrow MAC they lacked.
	EscrowKEKVersion uint32
	EscrowMACs       int
}

// rewrapItem is one version waiting to move.
type rewrapItem struct {
	name    string
	version uint32
}

// RewrapPending lists the versions whose wrapped copy is under a KEK
// other than the current one, or (with an escrow provider) whose escrow
// copy is missing or under another escrow KEK: the work Rewrap has left.
func (m *Manager) RewrapPending(ctx context.Context) (current uint32, pending int, err error) {
	current, err = m.kek.CurrentKEK(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("keystore: current KEK: %w", err)
	}
	items, err := m.rewrapWork(ctx, current, m.escrowCurrent(ctx))
	return current, len(items), err
}

// escrowCurrent returns the escrow provider's current KEK, or 0 when there
// is none or it does not answer (then only missing escrow copies count as
// work, and adding them waits until it answers).
func (m *Manager) escrowCurrent(ctx context.Context) uint32 {
	if m.escrow == nil {
		return 0
	}
	v, err := m.escrow.CurrentKEK(ctx)
	if err != nil {
		m.integ.log.Warn("keystore: the escrow provider does not answer; escrow copies wait", "escrow", m.escrowID, "error", err)
		return 0
	}
	return v
}

// rewrapWork lists the versions to move. Records that fail their
// integrity check are left out, and reported in the error.
func (m *Manager) rewrapWork(ctx context.Context, current, escrowCurrent uint32) ([]rewrapItem, error) {
	keys, err := m.listKeys(ctx)
	if keys == nil && err != nil {
		return nil, err
	}
	var items []rewrapItem
	for _, k := range keys {
		for i := range k.Versions {
			v := &k.Versions[i]
			if len(v.Wrapped) > 0 && (v.KEKVersion != current || m.needsEscrow(v, escrowCurrent)) {
				items = append(items, rewrapItem{k.Name, v.Version})
			}
		}
	}
	return items, err
}

// Rewrap moves every data key version that is wrapped under an older KEK
// to the current one.
//
// It keeps no state of its own: the work list is "every version whose
// KEKVersion is not the current KEK", read afresh on each run, so a run
// killed at any point is resumed by running it again, and loses nothing.
// Each version is unwrapped under its old KEK, wrapped under the current
// one, and the new copy is unwrapped back and compared (constant time)
// with the key before a compare-and-swap replaces the record; the old copy
// is only overwritten by a copy known to open. A version that fails is
// reported and left as it was; the others go on.
func (m *Manager) Rewrap(ctx context.Context, opts RewrapOptions) (RewrapResult, error) {
	current, err := m.kek.CurrentKEK(ctx)
	if err != nil {
		return RewrapResult{}, fmt.Errorf("keystore: rewrap: current KEK: %w", err)
	}
	escCurrent := m.escrowCurrent(ctx)
	items, err := m.rewrapWork(ctx, current, escCurrent)
	if items == nil && err != nil {
		return RewrapResult{}, fmt.Errorf("keystore: rewrap: %w", err)
	}
	res := RewrapResult{KEKVersion: current, Total: len(items), EscrowKEKVersion: escCurrent}
	var errs []error
	if err != nil {
		// Records that fail their check are not touched; the others are.
		errs = append(errs, fmt.Errorf("keystore: rewrap: %w", err))
	}
	for i, it := range items {
		if opts.Limiter != nil {
			if err := opts.Limiter.Wait(ctx); err != nil {
				return res, errors.Join(append(errs, fmt.Errorf("keystore: rewrap stopped after %d of %d: %w", i, len(items), err))...)
			}
		}
		if err := ctx.Err(); err != nil {
			return res, errors.Join(append(errs, fmt.Errorf("keystore: rewrap stopped after %d of %d: %w", i, len(items), err))...)
		}
		moved, err := m.rewrapOne(ctx, it, current, escCurrent)
		switch {
		case err != nil:
			res.Failed++
			errs = append(errs, err)
		case moved:
			res.Rewrapped++
		default:
			res.Skipped++
		}
		if opts.Progress != nil {
			opts.Progress(i+1, len(items))
		}
	}
	if escCurrent != 0 {
		// Records written before the escrow was configured, or while it
		// was down, get their escrow MAC, so a recovery can check them.
		n, err := m.addEscrowMACs(ctx)
		res.EscrowMACs = n
		if err != nil {
			errs = append(errs, fmt.Errorf("keystore: rewrap: escrow MACs: %w", err))
		}
	}
	return res, errors.Join(errs...)
}

// rewrapOne moves one version, and adds or renews its escrow copy; false
// with no error means it needed nothing by the time it was reached.
func (m *Manager) rewrapOne(ctx context.Context, it rewrapItem, current, escCurrent uint32) (bool, error) {
	k, err := m.getKey(ctx, it.name)
	if err != nil {
		return false, m.finish(ctx, "key.rewrap", it.name, it.version, "", nil, err)
	}
	v := k.Lookup(it.version)
	if v == nil || len(v.Wrapped) == 0 {
		return false, nil
	}
	needPrimary, needEscrow := v.KEKVersion != current, m.needsEscrow(v, escCurrent)
	if !needPrimary && !needEscrow {
		return false, nil
	}
	from := v.KEKVersion
	details := map[string]string{
		"from_kek": strconv.FormatUint(uint64(from), 10),
		"to_kek":   strconv.FormatUint(uint64(current), 10),
	}
	oldEscrow := v.Escrow
	old := hsm.Wrapped{KEKVersion: v.KEKVersion, Mechanism: v.Mechanism, Bytes: slices.Clone(v.Wrapped)}
	dek, err := m.kek.Unwrap(ctx, old, hsm.Binding{Key: it.name, Version: it.version})
	if err != nil {
		err = fmt.Errorf("keystore: key %q v%d: unwrap under KEK v%d: %w", it.name, it.version, from, err)
		return false, m.finish(ctx, "key.rewrap", it.name, it.version, "", details, err)
	}
	defer clear(dek)
	if !fingerprintMatches(dek, v.Fingerprint) {
		err = fmt.Errorf("keystore: key %q v%d: %w", it.name, it.version, ErrFingerprint)
		return false, m.finish(ctx, "key.rewrap", it.name, it.version, "", details, err)
	}
	w := old
	if needPrimary {
		if w, err = m.wrapVerified(ctx, it.name, it.version, dek); err != nil {
			return false, m.finish(ctx, "key.rewrap", it.name, it.version, "", details, err)
		}
		if w.KEKVersion != current {
			// The KEK rotated again meanwhile; the next run picks it up.
			details["to_kek"] = strconv.FormatUint(uint64(w.KEKVersion), 10)
		}
	} else {
		details = map[string]string{}
	}
	var ew *EscrowWrap
	var escrowErr error
	if needEscrow {
		if ew, escrowErr = m.escrowWrapVerified(ctx, it.name, it.version, dek); escrowErr == nil {
			details["escrow"] = ew.Provider
			details["escrow_kek"] = strconv.FormatUint(uint64(ew.KEKVersion), 10)
		} else if !needPrimary {
			return false, m.finish(ctx, "key.rewrap", it.name, it.version, "", details, escrowErr)
		}
	}
	moved := false
	_, err = m.update(ctx, it.name, func(k *Key) error {
		v := k.Lookup(it.version)
		// Replace only the copies we read: if another process has
		// re-wrapped or destroyed the version since, leave its work be.
		if v == nil || v.KEKVersion != old.KEKVersion || !bytes.Equal(v.Wrapped, old.Bytes) || !sameEscrow(v.Escrow, oldEscrow) {
			moved = false
			return nil
		}
		v.Wrapped, v.KEKVersion, v.Mechanism = w.Bytes, w.KEKVersion, w.Mechanism
		if ew != nil {
			v.Escrow = ew
		}
		moved = true
		return nil
	})
	if err != nil || !moved {
		if err == nil {
			return false, nil
		}
		return false, m.finish(ctx, "key.rewrap", it.name, it.version, "", details, err)
	}
	if escrowErr != nil {
		// Moved under the new primary KEK; the escrow copy waits for the
		// next run.
		return true, errors.Join(m.finish(ctx, "key.rewrap", it.name, it.version, "", details, nil), escrowErr)
	}
	return true, m.finish(ctx, "key.rewrap", it.name, it.version, "", details, nil)
}

// sameEscrow reports whether two escrow copies are the same.
func sameEscrow(a, b *EscrowWrap) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Provider == b.Provider && a.KEKVersion == b.KEKVersion && a.Mechanism == b.Mechanism && bytes.Equal(a.Wrapped, b.Wrapped)
}

// KEKStatus is one KEK version and how many data key versions it wraps.
type KEKStatus struct {
	hsm.KEKInfo
	DEKs int `json:"deks"`
	// Retirable: not current, not retired, and wrapping no data key.
	Retirable bool `json:"retirable"`
}

// KEKs lists the provider's KEK versions with their use in this store.
func (m *Manager) KEKs(ctx context.Context) ([]KEKStatus, error) {
	infos, err := m.kek.KEKs(ctx)
	if err != nil {
		return nil, fmt.Errorf("keystore: list KEKs: %w", err)
	}
	current, err := m.kek.CurrentKEK(ctx)
	if err != nil {
		return nil, fmt.Errorf("keystore: current KEK: %w", err)
	}
	use, err := m.kekUse(ctx)
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

// kekUse counts data key versions per KEK version. A record that fails
// its integrity check fails the count: what it wraps is unknown.
func (m *Manager) kekUse(ctx context.Context) (map[uint32]int, error) {
	keys, err := m.listKeys(ctx)
	if err != nil {
		return nil, err
	}
	use := map[uint32]int{}
	for _, k := range keys {
		for _, v := range k.Versions {
			if len(v.Wrapped) > 0 {
				use[v.KEKVersion]++
			}
		}
	}
	return use, nil
}

// Retirable lists the KEK versions that no data key uses any more and that
// are neither current nor retired: `sidecrypt kek retire` may take them.
func (m *Manager) Retirable(ctx context.Context) ([]uint32, error) {
	st, err := m.KEKs(ctx)
	if err != nil {
		return nil, err
	}
	var out []uint32
	for _, s := range st {
		if s.Retirable {
			out = append(out, s.Version)
		}
	}
	return out, nil
}

// RotateKEK creates a new KEK version in the provider and makes it
// current. Data keys stay under their old KEK until Rewrap moves them.
func (m *Manager) RotateKEK(ctx context.Context) (uint32, error) {
	v, err := m.kek.RotateKEK(ctx)
	if err != nil {
		err = fmt.Errorf("keystore: rotate KEK: %w", err)
	}
	return v, m.finish(ctx, "kek.rotate", "", v, "", nil, err)
}

// RetireKEK deactivates an old KEK version in the provider. It refuses
// (ErrKEKInUse) while any data key version is still wrapped under it, or
// when it is the current version.
func (m *Manager) RetireKEK(ctx context.Context, version uint32) error {
	return m.retireKEK(ctx, m.kek, m.kekUse, version, "KEK", "data key version(s)", "sidecrypt kek rotate", nil)
}

// kekRetirer is what RetireKEK and RetireEscrowKEK need of a provider.
type kekRetirer interface {
	CurrentKEK(ctx context.Context) (uint32, error)
	RetireKEK(ctx context.Context, version uint32) error
}

// retireKEK retires version of provider p unless it is p's current KEK or
// still wraps something (use counts what each version wraps), audited as
// kek.retire with details. what names the provider's KEK in errors
// ("KEK", "escrow KEK"), wrapped what it wraps, rotate the command that
// makes another version current.
func (m *Manager) retireKEK(ctx context.Context, p kekRetirer, use func(context.Context) (map[uint32]int, error), version uint32, what, wrapped, rotate string, details map[string]string) error {
	const action = "kek.retire"
	current, err := p.CurrentKEK(ctx)
	if err != nil {
		return m.finish(ctx, action, "", version, "", details, fmt.Errorf("keystore: current %s: %w", what, err))
	}
	if version == current {
		err := fmt.Errorf("keystore: %s v%d: %w: it is the current %s; run `%s` first", what, version, ErrKEKInUse, what, rotate)
		return m.finish(ctx, action, "", version, "", details, err)
	}
	counts, err := use(ctx)
	if err != nil {
		return m.finish(ctx, action, "", version, "", details, err)
	}
	if n := counts[version]; n > 0 {
		err := fmt.Errorf("keystore: %s v%d: %w: it still wraps %d %s; run `sidecrypt keys rewrap` first", what, version, ErrKEKInUse, n, wrapped)
		return m.finish(ctx, action, "", version, "", details, err)
	}
	if err := p.RetireKEK(ctx, version); err != nil {
		return m.finish(ctx, action, "", version, "", details, fmt.Errorf("keystore: retire %s v%d: %w", what, version, err))
	}
	return m.finish(ctx, action, "", version, "", details, nil)
}
