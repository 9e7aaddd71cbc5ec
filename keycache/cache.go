package keycache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"golang.org/x/sync/singleflight"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/internal/config"
	"github.com/sidecrypt/sidecrypt/keystore"
)

// Source is where the cache gets what it does not hold: *keystore.Manager,
// which reads the store, enforces the key states and unwraps through the
// HSM.
type Source interface {
	Primary(ctx context.Context, name string) (uint32, error)
	UnwrapMaterial(ctx context.Context, name string, version uint32) (keystore.Material, error)
}

// Options configure a Cache. Zero values take the defaults shown.
type Options struct {
	// TTL is how long an unwrapped key stays cached (SIDECRYPT_CACHE_TTL).
	// Default 5m.
	TTL time.Duration
	// Size is the most key versions cached at once (SIDECRYPT_CACHE_SIZE).
	// Default 1000.
	Size int
	// MaxMessages and MaxBytes limit what one cached copy of a key may
	// seal (SIDECRYPT_CACHE_MAX_MESSAGES, SIDECRYPT_CACHE_MAX_BYTES);
	// past either, SealKey drops it and unwraps afresh. Zero: no limit.
	MaxMessages uint64
	MaxBytes    uint64
	// PrimaryTTL is how long the primary version of a key, and a refusal
	// (destroyed, compromised, unknown), is remembered. Watch events purge
	// both sooner. Default 1s.
	PrimaryTTL time.Duration
	// ZeroGrace is how long a key that left the cache for a routine
	// reason (expiry, size, usage limit) stays intact before it is zeroed,
	// so that requests that already hold it can finish. Purges (revoke,
	// destroy, Purge, PurgeKey, Close) zero at once. Default 30s;
	// negative means no grace (zero at once).
	ZeroGrace time.Duration
	// Now is the clock for override expiry and PrimaryTTL; nil means
	// time.Now. (The LRU's own TTL always runs on the real clock.)
	Now func() time.Time
	// SealBlock is how many seals one reservation from the keystore's
	// per-version counter takes (SIDECRYPT_SEAL_BLOCK). Default
	// DefaultSealBlock (65536). See budget.go.
	SealBlock uint64
	// RotateAhead: when a reservation leaves the version fewer seals than
	// this (but some) before its limit, the cache rotates the key in the
	// background. Default four blocks; 1 turns it off, leaving rotation
	// to the SealKey call that finds the version at its limit.
	RotateAhead uint64
}

// OptionsFromConfig maps the SIDECRYPT_CACHE_* settings to Options.
func OptionsFromConfig(c config.Config) Options {
	return Options{
		TTL:         c.CacheTTL,
		Size:        c.CacheSize,
		MaxMessages: c.CacheMaxMessages,
		MaxBytes:    uint64(c.CacheMaxBytes),
		SealBlock:   c.SealBlock,
	}
}

func (o *Options) defaults() {
	if o.TTL <= 0 {
		o.TTL = 5 * time.Minute
	}
	if o.Size <= 0 {
		o.Size = 1000
	}
	if o.PrimaryTTL <= 0 {
		o.PrimaryTTL = time.Second
	}
	if o.ZeroGrace < 0 {
		o.ZeroGrace = 0
	} else if o.ZeroGrace == 0 {
		o.ZeroGrace = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SealBlock == 0 {
		o.SealBlock = DefaultSealBlock
	}
	if o.RotateAhead == 0 {
		o.RotateAhead = rotateAheadDefault(o.SealBlock)
	}
}

// ref names one key version.
type ref struct {
	name    string
	version uint32
}

func (r ref) String() string { return r.name + "\x00" + strconv.FormatUint(uint64(r.version), 10) }

// entry is one cached key.
type entry struct {
	key *fieldcrypt.DataKey
	// notAfter is the end of the override under which a compromised
	// version was opened; zero for an ordinary key.
	notAfter time.Time
	// purged marks a removal that must zero at once (set before Remove,
	// read by the eviction callback).
	purged atomic.Bool
}

type primaryEntry struct {
	version uint32
	expires time.Time
}

type refusal struct {
	err     error
	expires time.Time
}

// Cache holds unwrapped data keys for a short time. It implements
// fieldcrypt.Keyring. Every method is safe for concurrent use.
type Cache struct {
	src  Source
	res  Reserver // nil: no seal limits (a Source that cannot reserve)
	opts Options

	// mu orders the cache's own changes (insert, purge, generation
	// bumps) so that a purge cannot be undone by an unwrap that was in
	// flight when it happened. The LRU has its own lock inside.
	mu        sync.Mutex
	lru       *expirable.LRU[ref, *entry]
	gens      map[string]uint64 // per key name, bumped by every purge
	epoch     uint64            // bumped by PurgeAll and Close
	primaries map[string]primaryEntry
	refusals  map[ref]refusal
	closed    bool

	// entries mirrors the LRU's contents, expired ones included (the LRU
	// hides those from Peek but they still hold key bytes), so that a
	// purge can mark exactly the entry it removes. It has its own lock:
	// the eviction callback updates it from under the LRU's lock.
	entries sync.Map // ref -> *entry

	flights singleflight.Group

	// tmu guards the timers that zero evicted keys after ZeroGrace; the
	// LRU's eviction callback takes it, so it must never be held while
	// calling into the LRU.
	tmu    sync.Mutex
	timers map[*fieldcrypt.DataKey]*time.Timer

	// budgets holds each version's seals left (budget.go); guarded by
	// mu. They outlive cached copies: a reservation is the process's,
	// not one copy's.
	budgets map[ref]*budget
	// accts follows each cached copy's seal counter
	// (*fieldcrypt.DataKey -> *copyAcct), until the copy is zeroed.
	accts sync.Map
	// bg runs background refills and rotations; Close cancels bgCtx and
	// waits for them.
	bg       sync.WaitGroup
	bgCtx    context.Context
	bgCancel context.CancelFunc

	st counters
}

// New returns a cache in front of src.
func New(src Source, opts Options) *Cache {
	opts.defaults()
	c := &Cache{
		src: src, opts: opts,
		gens:      map[string]uint64{},
		primaries: map[string]primaryEntry{},
		refusals:  map[ref]refusal{},
		timers:    map[*fieldcrypt.DataKey]*time.Timer{},
		budgets:   map[ref]*budget{},
	}
	c.res, _ = src.(Reserver)
	c.bgCtx, c.bgCancel = context.WithCancel(context.Background())
	c.st.init()
	// The expirable LRU calls onEvict under its own lock for expiry, size
	// eviction and Remove alike; purged tells a purge from the rest.
	//
	// Known limitation of golang-lru v2.0.7: each LRU starts a cleanup
	// goroutine that never exits, so a Cache should live as long as the
	// process (one per sidecar), not one per request.
	c.lru = expirable.NewLRU[ref, *entry](opts.Size, c.onEvict, opts.TTL)
	return c
}

// ErrClosed is returned after Close.
var ErrClosed = errors.New("keycache: closed")

func (c *Cache) onEvict(r ref, e *entry) {
	c.entries.CompareAndDelete(r, e)
	if e.purged.Load() {
		c.st.purges.Add(1)
		c.zeroNow(e.key)
		return
	}
	c.st.evictions.Add(1)
	c.zeroLater(e.key)
}

func (c *Cache) zeroNow(k *fieldcrypt.DataKey) {
	c.tmu.Lock()
	if t, ok := c.timers[k]; ok {
		t.Stop()
		delete(c.timers, k)
	}
	c.tmu.Unlock()
	c.settle(k)
	k.Zero()
}

// zeroLater zeroes k after ZeroGrace: it has left the cache, so no new
// caller gets it, and a request that already holds it may finish.
func (c *Cache) zeroLater(k *fieldcrypt.DataKey) {
	if c.opts.ZeroGrace == 0 {
		c.settle(k)
		k.Zero()
		return
	}
	c.tmu.Lock()
	defer c.tmu.Unlock()
	if _, ok := c.timers[k]; ok {
		return
	}
	c.timers[k] = time.AfterFunc(c.opts.ZeroGrace, func() {
		c.tmu.Lock()
		delete(c.timers, k)
		c.tmu.Unlock()
		c.settle(k)
		k.Zero()
	})
}

// OpenKey implements fieldcrypt.Keyring: it returns the version for
// opening tokens, if its state allows (active, deactivated, or compromised
// under a live override).
func (c *Cache) OpenKey(ctx context.Context, name string, version uint32) (*fieldcrypt.DataKey, error) {
	return c.get(ctx, ref{name, version}, false)
}

// SealKey implements fieldcrypt.Keyring: it returns the primary version,
// for sealing. A cached copy that has sealed past the usage limits is
// dropped and unwrapped afresh. With a Source that reserves seals
// (keystore.Manager), the version's seal budget is charged (budget.go): a
// version at its seal limit is rotated, and SealKey returns the new
// primary; if rotation fails, it fails with keystore.ErrSealLimit
// (closed: nothing is sealed).
func (c *Cache) SealKey(ctx context.Context, name string) (*fieldcrypt.DataKey, error) {
	for attempt := 0; ; attempt++ {
		v, err := c.primary(ctx, name)
		if err != nil {
			return nil, err
		}
		r := ref{name, v}
		k, err := c.get(ctx, r, true)
		if err != nil || c.res == nil {
			return k, err
		}
		err = c.sealLimited(ctx, r, k)
		if err == nil {
			return k, nil
		}
		if !errors.Is(err, errRotated) || attempt > 0 {
			if errors.Is(err, errRotated) {
				err = fmt.Errorf("keycache: key %q: %w: its primary changed twice while sealing, or the new one is at its limit too", name, keystore.ErrSealLimit)
			}
			return nil, err
		}
	}
}

func (c *Cache) overLimit(k *fieldcrypt.DataKey) bool {
	msgs, n := k.Usage()
	return (c.opts.MaxMessages > 0 && msgs >= c.opts.MaxMessages) || (c.opts.MaxBytes > 0 && n >= c.opts.MaxBytes)
}

// lookup returns a usable cached entry, or nil. It drops entries that are
// past their override or (for sealing) past a usage limit.
func (c *Cache) lookup(r ref, sealing bool) (*fieldcrypt.DataKey, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if rf, ok := c.refusals[r]; ok {
		if c.opts.Now().Before(rf.expires) {
			c.st.hits.Add(1)
			return nil, rf.err
		}
		delete(c.refusals, r)
	}
	e, ok := c.lru.Get(r)
	if !ok {
		return nil, nil
	}
	switch {
	case !e.notAfter.IsZero() && !c.opts.Now().Before(e.notAfter):
		// The override ended: this copy must not open anything more.
		e.purged.Store(true)
		c.lru.Remove(r)
		return nil, nil
	case sealing && c.overLimit(e.key):
		c.st.limitDrops.Add(1)
		c.lru.Remove(r)
		return nil, nil
	}
	c.st.hits.Add(1)
	return e.key, nil
}

func (c *Cache) get(ctx context.Context, r ref, sealing bool) (*fieldcrypt.DataKey, error) {
	if k, err := c.lookup(r, sealing); k != nil || err != nil {
		return k, err
	}
	c.st.misses.Add(1)
	// Concurrent misses for one version share a single unwrap. The
	// unwrap runs without the first caller's cancellation, so that one
	// impatient caller does not fail the others; each caller still stops
	// waiting when its own ctx ends.
	ch := c.flights.DoChan("k\x00"+r.String(), func() (any, error) {
		return c.load(context.WithoutCancel(ctx), r)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*fieldcrypt.DataKey), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// isRefusal reports whether err is a decision about the key (its state,
// or its absence) rather than a failure to reach the store or HSM.
func isRefusal(err error) bool {
	return errors.Is(err, keystore.ErrDestroyed) || errors.Is(err, keystore.ErrCompromised) ||
		errors.Is(err, keystore.ErrPreActive) || errors.Is(err, keystore.ErrNotFound)
}

// wrapErr gives the proxy what it matches on: ErrUnknownKey for a key or
// version that does not exist; the keystore and hsm sentinels otherwise
// (ErrUnavailable from either means 503).
func wrapErr(err error) error {
	if errors.Is(err, keystore.ErrNotFound) {
		return fmt.Errorf("keycache: %w (%w)", fieldcrypt.ErrUnknownKey, err)
	}
	return fmt.Errorf("keycache: %w", err)
}

// load unwraps one version and caches it, unless the key was purged while
// the unwrap was in flight: then the caller still gets the key (its request
// began before the purge) but the cache does not keep it.
func (c *Cache) load(ctx context.Context, r ref) (*fieldcrypt.DataKey, error) {
	c.mu.Lock()
	gen := c.stampLocked(r.name)
	// A flight that ended just before this one began may have cached the
	// key already; then there is nothing to unwrap.
	if e, ok := c.lru.Get(r); ok && (e.notAfter.IsZero() || c.opts.Now().Before(e.notAfter)) && !c.overLimit(e.key) {
		c.mu.Unlock()
		return e.key, nil
	}
	c.mu.Unlock()

	start := time.Now()
	mat, err := c.src.UnwrapMaterial(ctx, r.name, r.version)
	if err != nil {
		if isRefusal(err) {
			err = wrapErr(err)
			c.mu.Lock()
			if c.stampLocked(r.name) == gen && !c.closed {
				c.refusals[r] = refusal{err: err, expires: c.opts.Now().Add(c.opts.PrimaryTTL)}
			}
			c.mu.Unlock()
			return nil, err
		}
		c.st.unwrapErrors.Add(1)
		return nil, wrapErr(err)
	}
	c.st.observeUnwrap(time.Since(start))
	k, err := fieldcrypt.NewDataKey(r.name, r.version, mat.DEK)
	clear(mat.DEK)
	if err != nil {
		c.st.unwrapErrors.Add(1)
		return nil, fmt.Errorf("keycache: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stampLocked(r.name) != gen || c.closed {
		c.zeroLater(k)
		return k, nil
	}
	// An expired entry lingers in the LRU until its cleanup runs, and Add
	// would overwrite it without the eviction callback: remove it first so
	// that its key is zeroed.
	c.lru.Remove(r)
	e := &entry{key: k, notAfter: mat.NotAfter}
	c.entries.Store(r, e)
	c.lru.Add(r, e)
	return k, nil
}

// primary returns the primary version of name, cached for PrimaryTTL.
func (c *Cache) primary(ctx context.Context, name string) (uint32, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, ErrClosed
	}
	if p, ok := c.primaries[name]; ok && c.opts.Now().Before(p.expires) {
		c.mu.Unlock()
		return p.version, nil
	}
	gen := c.stampLocked(name)
	c.mu.Unlock()
	ch := c.flights.DoChan("p\x00"+name, func() (any, error) {
		v, err := c.src.Primary(context.WithoutCancel(ctx), name)
		if err != nil {
			if v, ok := c.stalePrimary(name, err); ok {
				return v, nil
			}
			return uint32(0), wrapErr(err)
		}
		c.mu.Lock()
		if c.stampLocked(name) == gen && !c.closed {
			c.primaries[name] = primaryEntry{version: v, expires: c.opts.Now().Add(c.opts.PrimaryTTL)}
		}
		c.mu.Unlock()
		return v, nil
	})
	select {
	case res := <-ch:
		return res.Val.(uint32), res.Err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// stalePrimary answers for an unreachable store (keystore.ErrUnavailable:
// etcd down or partitioned): the last primary version learned for name,
// if that version's key is still cached. A sidecar that loses its shared
// store keeps sealing with what it holds until the key's TTL ends, as it
// keeps opening (fail closed afterwards: nothing is cached, and the miss
// fails). A purge forgets the primary, so a key changed before the outage
// is never sealed with a stale version; a change made during the outage
// is seen when the store's watch resumes. Refusals from a reachable store
// (no primary, revoked) are never overridden.
func (c *Cache) stalePrimary(name string, err error) (uint32, bool) {
	if !errors.Is(err, keystore.ErrUnavailable) {
		return 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.primaries[name]
	if !ok || c.closed {
		return 0, false
	}
	e, ok := c.lru.Peek(ref{name: name, version: p.version})
	if !ok || e.key.Zeroed() || (!e.notAfter.IsZero() && !c.opts.Now().Before(e.notAfter)) {
		return 0, false
	}
	return p.version, true
}

// stampLocked identifies the purges that have touched name so far; a load
// that sees it change while in flight must not cache its result.
func (c *Cache) stampLocked(name string) [2]uint64 { return [2]uint64{c.gens[name], c.epoch} }

// Purge drops one version at once and zeroes its bytes. The next request
// for it goes back to the store, which re-checks its state.
func (c *Cache) Purge(name string, version uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gens[name]++
	delete(c.primaries, name)
	delete(c.refusals, ref{name, version})
	c.removeLocked(ref{name, version})
}

// PurgeKey drops every version of name at once and zeroes their bytes.
func (c *Cache) PurgeKey(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gens[name]++
	delete(c.primaries, name)
	for r := range c.refusals {
		if r.name == name {
			delete(c.refusals, r)
		}
	}
	c.entries.Range(func(k, _ any) bool {
		if r := k.(ref); r.name == name {
			c.removeLocked(r)
		}
		return true
	})
}

// removeLocked purges one entry; c.mu is held.
func (c *Cache) removeLocked(r ref) {
	if e, ok := c.entries.Load(r); ok {
		e.(*entry).purged.Store(true)
	}
	c.lru.Remove(r)
}

// PurgeAll drops every cached key at once and zeroes it.
func (c *Cache) PurgeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.purgeAllLocked()
}

func (c *Cache) purgeAllLocked() {
	c.epoch++
	c.entries.Range(func(_, v any) bool {
		v.(*entry).purged.Store(true)
		return true
	})
	c.lru.Purge()
	clear(c.primaries)
	clear(c.refusals)
}

// Close zeroes every key the cache holds or has evicted but not yet
// zeroed, and makes later calls fail with ErrClosed.
func (c *Cache) Close() error {
	c.mu.Lock()
	c.closed = true
	c.purgeAllLocked()
	c.mu.Unlock()
	c.bgCancel()
	c.bg.Wait()
	c.tmu.Lock()
	pending := c.timers
	c.timers = map[*fieldcrypt.DataKey]*time.Timer{}
	c.tmu.Unlock()
	for k, t := range pending {
		t.Stop()
		c.settle(k)
		k.Zero()
	}
	return nil
}

// Run follows store's changes until ctx ends, purging every key that
// changed (in this process or another), so that a revoke or destroy by
// `sidecrypt keys` stops the cache handing the version out within the
// store's poll interval. It returns ctx's error, or Watch's.
func (c *Cache) Run(ctx context.Context, store keystore.Store) error {
	events, err := store.Watch(ctx)
	if err != nil {
		return fmt.Errorf("keycache: watch: %w", err)
	}
	for ev := range events {
		c.PurgeKey(ev.Name)
	}
	return ctx.Err()
}

// Len returns the number of cached versions (including expired ones not
// yet cleaned up).
func (c *Cache) Len() int { return c.lru.Len() }

var _ fieldcrypt.Keyring = (*Cache)(nil)
var _ Source = (*keystore.Manager)(nil)
