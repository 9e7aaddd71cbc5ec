package keystore

// Seal counters: how many values each key version may still seal, shared
// by every sidecrypt process on the store and kept across restarts.
//
// AES-256-GCM with random 96-bit nonces must not seal more than 2^32
// messages under one key (NIST SP 800-38D, section 8.3: beyond that the
// chance of a repeated nonce, which gives away the authentication key and
// the XOR of two plaintexts, exceeds 2^-32). A per-process count is not
// enough: it restarts with the process, and each sidecar has its own. So
// each version has a counter record in the store ("usage/<name>/<version>",
// a Meta record sealed like every other), and sidecars reserve seals from
// it in blocks with compare-and-swap (ReserveSeals): the count in the
// store is always at least what has been sealed, minus only what was
// sealed past a reservation by requests in flight (see keycache). A
// process that dies loses the rest of its block: the count errs high,
// never low. A version whose counter reaches the limit reserves no more,
// and the key cache rotates the key (RotateExhausted).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// DefaultSealLimit is how many values one key version may seal, across
// every sidecar, before it must be rotated: 2^30, a quarter of the 2^32
// that NIST SP 800-38D section 8.3 allows for random 96-bit nonces. At
// 2^30 messages the chance that any two nonces collide is about
// 2^60/2^97 = 2^-37. The margin of four covers what the count can miss:
// seals past a reservation by requests in flight, a counter record
// rolled back by someone who can write the store (docs/KEYS.md), and
// deterministic-mode seals, which are counted too although AES-SIV needs
// no nonce.
const DefaultSealLimit = 1 << 30

// MaxSealLimit is the largest limit accepted: the SP 800-38D bound.
const MaxSealLimit = 1 << 32

// ErrSealLimit: the version has sealed as many values as the limit
// allows; it must be rotated before anything more is sealed under the key.
var ErrSealLimit = errors.New("key version reached its seal limit (NIST SP 800-38D)")

const usagePrefix = "usage/"

func usageID(name string, version uint32) string {
	return usagePrefix + name + "/" + strconv.FormatUint(uint64(version), 10)
}

func parseUsageID(id string) (string, uint32, bool) {
	rest, ok := strings.CutPrefix(id, usagePrefix)
	if !ok {
		return "", 0, false
	}
	name, ver, ok := strings.Cut(rest, "/")
	v, err := strconv.ParseUint(ver, 10, 32)
	return name, uint32(v), ok && err == nil && v > 0
}

// usageRecord is the value of a counter record.
type usageRecord struct {
	Name     string `json:"name"`
	Version  uint32 `json:"version"`
	Reserved uint64 `json:"reserved"`
	Seal     *Seal  `json:"seal,omitempty"`

	meta *Meta
}

func usageMACInput(u *usageRecord, s *Seal) []byte {
	e := newMACInput(kindUsage)
	e.str(u.Name)
	e.u32(u.Version)
	e.u64(s.Generation)
	e.i64(s.Incarnation)
	e.u64(u.Reserved)
	return e.b
}

// readUsage decodes and verifies a counter record of version v of key
// name: its seal, and its incarnation against the one the key record
// holds (a counter deleted and made again would restart from zero).
func (m *Manager) readUsage(ctx context.Context, meta *Meta, floor uint64, name string, v *Version) (*usageRecord, error) {
	what := fmt.Sprintf("seal counter of %q v%d", name, v.Version)
	u := &usageRecord{meta: meta}
	if err := json.Unmarshal(meta.Value, u); err != nil {
		return nil, m.refuse(ctx, what, name, v.Version, fmt.Errorf("%w: not valid JSON", ErrIntegrity))
	}
	err := m.checkSeal(ctx, meta.ID, floor, u.Seal, meta.Writes, meta.Incarnation, u.Reserved == 0,
		func(s *Seal) []byte { return usageMACInput(u, s) })
	switch {
	case err != nil:
	case u.Name != name || u.Version != v.Version:
		err = fmt.Errorf("%w: it belongs to %q v%d", ErrIntegrity, u.Name, u.Version)
	case v.Counter != 0 && meta.Incarnation != v.Counter:
		err = fmt.Errorf("%w: the key record names counter incarnation %d, and this is %d (the counter was deleted and made again: a reset)", ErrIntegrity, v.Counter, meta.Incarnation)
	case u.Seal.Generation < 2 && v.Counter != 0:
		err = fmt.Errorf("%w: the counter is an unfinished placeholder", ErrIntegrity)
	}
	if err != nil {
		return nil, m.refuse(ctx, what, name, v.Version, err)
	}
	return u, nil
}

// writeUsage seals and writes u over the record it was read from (or
// creates it when u.meta is nil).
func (m *Manager) writeUsage(ctx context.Context, u *usageRecord) error {
	var writes uint64
	var inc, rev int64
	if u.meta != nil {
		writes, inc, rev = u.meta.Writes, u.meta.Incarnation, u.meta.Revision
	}
	s, err := m.sealWith(ctx, writes, inc, func(s *Seal) []byte { return usageMACInput(u, s) })
	if err != nil {
		return err
	}
	u.Seal = s
	b, err := json.Marshal(u)
	if err != nil {
		return err
	}
	meta, err := m.store.PutMeta(ctx, &Meta{ID: usageID(u.Name, u.Version), Value: b, Revision: rev})
	if err != nil {
		return err
	}
	m.noteGeneration(meta.ID, meta.Writes)
	u.meta = meta
	return nil
}

// ensureCounter makes the counter record of a new version (generation 1,
// an empty placeholder, then generation 2 bound to its incarnation) and
// returns its incarnation, for the version's Counter field. A counter
// that exists already (a rotation that lost a race made it) is kept.
func (m *Manager) ensureCounter(ctx context.Context, name string, version uint32) (int64, error) {
	id := usageID(name, version)
	for attempt := 1; ; attempt++ {
		floor := m.hwOf(id)
		meta, err := m.store.GetMeta(ctx, id)
		var u *usageRecord
		switch {
		case errors.Is(err, ErrNotFound):
			u = &usageRecord{Name: name, Version: version}
		case err != nil:
			return 0, err
		default:
			u, err = m.readUsage(ctx, meta, floor, name, &Version{Version: version})
			if err != nil {
				return 0, err
			}
			if u.Seal.Generation >= 2 {
				return meta.Incarnation, nil
			}
		}
		err = m.writeUsage(ctx, u)
		if err == nil && u.Seal.Generation < 2 {
			err = m.writeUsage(ctx, u)
		}
		if err == nil {
			return u.meta.Incarnation, nil
		}
		if !(errors.Is(err, ErrConflict) || errors.Is(err, ErrExists)) || attempt >= maxCASAttempts {
			return 0, err
		}
	}
}

// Reservation is what ReserveSeals granted.
type Reservation struct {
	// Granted is how many seals the caller may make now.
	Granted uint64
	// Reserved is the version's count after this reservation, across
	// every process; Limit is the most it may reach.
	Reserved, Limit uint64
}

// Remaining is how many seals the version has left after this
// reservation.
func (r Reservation) Remaining() uint64 { return r.Limit - min(r.Reserved, r.Limit) }

// SealLimit returns the most values one version may seal.
func (m *Manager) SealLimit() uint64 { return m.sealLimit }

// ReserveSeals reserves up to n seals under version of key name, which
// must be the key's active primary. It grants fewer than n when the
// version is near its limit, and fails with ErrSealLimit when nothing is
// left. Each reservation is audited (key.seals.reserve), so the audit log
// holds the count's history.
func (m *Manager) ReserveSeals(ctx context.Context, name string, version uint32, n uint64) (Reservation, error) {
	const action = "key.seals.reserve"
	res := Reservation{Limit: m.sealLimit}
	k, err := m.getKey(ctx, name)
	if err != nil {
		return res, err
	}
	v := k.Lookup(version)
	if v == nil || v.State != StateActive || k.Primary != version {
		return res, fmt.Errorf("keystore: key %q v%d: %w", name, version, ErrNoPrimary)
	}
	if v.Counter == 0 {
		// A version from before seal counters: make its counter and
		// record it in the key, once.
		inc, err := m.ensureCounter(ctx, name, version)
		if err != nil {
			return res, err
		}
		if k, err = m.update(ctx, name, func(k *Key) error {
			if cur := k.Lookup(version); cur != nil && cur.Counter == 0 {
				cur.Counter = inc
			}
			return nil
		}); err != nil {
			return res, err
		}
		v = k.Lookup(version)
	}
	for attempt := 1; ; attempt++ {
		floor := m.hwOf(usageID(name, version))
		meta, err := m.store.GetMeta(ctx, usageID(name, version))
		if errors.Is(err, ErrNotFound) {
			err = m.refuse(ctx, fmt.Sprintf("seal counter of %q v%d", name, version), name, version,
				fmt.Errorf("%w: the key record names a counter, and there is none (deleted outside sidecrypt)", ErrIntegrity))
		}
		if err != nil {
			return res, err
		}
		u, err := m.readUsage(ctx, meta, floor, name, v)
		if err != nil {
			return res, err
		}
		if u.Reserved >= m.sealLimit {
			res.Reserved = u.Reserved
			return res, fmt.Errorf("keystore: key %q v%d: %w: %d of %d sealed", name, version, ErrSealLimit, u.Reserved, m.sealLimit)
		}
		grant := min(n, m.sealLimit-u.Reserved)
		u.Reserved += grant
		err = m.writeUsage(ctx, u)
		if errors.Is(err, ErrConflict) && attempt < maxCASAttempts {
			continue
		}
		if err != nil {
			return res, err
		}
		res.Granted, res.Reserved = grant, u.Reserved
		aerr := m.event(ctx, action, name, version, "ok", "", map[string]string{
			"granted": strconv.FormatUint(grant, 10), "reserved": strconv.FormatUint(u.Reserved, 10),
			"limit": strconv.FormatUint(m.sealLimit, 10),
		})
		return res, aerr
	}
}

// Usage is a version's seal count, for `keys list` and the admin API.
type Usage struct {
	Name     string `json:"name"`
	Version  uint32 `json:"version"`
	Reserved uint64 `json:"reserved"`
	Limit    uint64 `json:"limit"`
}

// Usages returns the verified seal counters of every key's versions,
// keyed by usageID. A counter that fails its check is left out and
// reported in the error.
func (m *Manager) Usages(ctx context.Context, keys []*Key) (map[string]Usage, error) {
	floors := m.hwSnapshot()
	metas, err := m.store.ListMeta(ctx, usagePrefix)
	if err != nil {
		return nil, err
	}
	byName := map[string]*Key{}
	for _, k := range keys {
		byName[k.Name] = k
	}
	out := map[string]Usage{}
	var errs []error
	for _, meta := range metas {
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
		out[meta.ID] = Usage{Name: name, Version: version, Reserved: u.Reserved, Limit: m.sealLimit}
	}
	return out, errors.Join(errs...)
}

// UsageOf returns version's entry from a Usages map (zero Reserved when
// it has never sealed).
func UsageOf(us map[string]Usage, name string, version uint32, limit uint64) Usage {
	if u, ok := us[usageID(name, version)]; ok {
		return u
	}
	return Usage{Name: name, Version: version, Limit: limit}
}
