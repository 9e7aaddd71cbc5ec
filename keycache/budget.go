package keycache

// Seal budgets: the cache's side of the per-version seal counters that
// keystore keeps (keystore/usage.go). Each version this process seals
// under has a budget, a count of seals it may still make, refilled in
// blocks reserved from the keystore (Options.SealBlock, 65536 by
// default). The hot path only loads the cached copy's own seal counter
// (fieldcrypt.DataKey.Usage) and subtracts what is new from the budget
// with atomics, once per SealKey call (once per request and key), not
// per field. Refills run in the background when the budget runs low, and
// in the request only when it is empty (at the first seal under a
// version, and when a burst outran the background refill).
//
// What fieldcrypt seals after SealKey returns is charged at the next
// SealKey call, or when the copy leaves the cache and is zeroed (after
// which it seals nothing more): a request in flight may seal past the
// budget, and the next refill reserves that overshoot too, so the count
// in the keystore catches up. What a process seals past its reservation
// and then dies with is the one thing never counted; the limit's margin
// (keystore.DefaultSealLimit) covers it.

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/keystore"
)

// Reserver is what the cache needs to enforce seal limits:
// *keystore.Manager. A Source without it seals without limits (tests and
// dry runs only).
type Reserver interface {
	ReserveSeals(ctx context.Context, name string, version uint32, n uint64) (keystore.Reservation, error)
	RotateExhausted(ctx context.Context, name string, version uint32) (*keystore.Key, error)
}

// DefaultSealBlock is how many seals a refill reserves. At 100,000 seals
// a second, one keystore write (and one audit event) every 0.65s; a crash
// wastes at most this many from the version's budget.
const DefaultSealBlock = 1 << 16

// budget is one version's seals left in this process.
type budget struct {
	remaining atomic.Int64
	refilling atomic.Bool
	rotating  atomic.Bool
	// exhausted is set when the keystore refuses more (the limit), so
	// that later callers go straight to rotation.
	exhausted atomic.Bool
	// rotateErr and rotateUntil remember a failed rotation for a while,
	// so that a flood of requests does not make a flood of attempts.
	rotateErr   atomic.Pointer[error]
	rotateUntil atomic.Int64
}

// copyAcct follows one cached copy's seal counter: accounted is how many
// of its seals have been charged to its version's budget.
type copyAcct struct {
	b         *budget
	accounted atomic.Uint64
}

// catchUp returns the seals the copy has made since the last call.
func (a *copyAcct) catchUp(k *fieldcrypt.DataKey) uint64 {
	msgs, _ := k.Usage()
	for {
		prev := a.accounted.Load()
		if msgs <= prev {
			return 0
		}
		if a.accounted.CompareAndSwap(prev, msgs) {
			return msgs - prev
		}
	}
}

func (c *Cache) budgetFor(r ref) *budget {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.budgets[r]
	if b == nil {
		b = &budget{}
		c.budgets[r] = b
	}
	return b
}

// acctFor returns the accounting of copy k of version r.
func (c *Cache) acctFor(r ref, k *fieldcrypt.DataKey) *copyAcct {
	if a, ok := c.accts.Load(k); ok {
		return a.(*copyAcct)
	}
	a, _ := c.accts.LoadOrStore(k, &copyAcct{b: c.budgetFor(r)})
	return a.(*copyAcct)
}

// settle charges what copy k sealed and forgets it: called when k is
// zeroed, after which it seals nothing.
func (c *Cache) settle(k *fieldcrypt.DataKey) {
	a, ok := c.accts.LoadAndDelete(k)
	if !ok {
		return
	}
	acct := a.(*copyAcct)
	if n := acct.catchUp(k); n > 0 {
		acct.b.remaining.Add(-int64(n))
	}
}

// charge brings version r's budget up to date with what copy k has sealed
// and makes sure some budget is left for the caller, refilling in the
// background when it runs low and in the request when it is empty. It
// fails with keystore.ErrSealLimit when the version has no seals left.
func (c *Cache) charge(ctx context.Context, r ref, k *fieldcrypt.DataKey) error {
	a := c.acctFor(r, k)
	b := a.b
	rem := b.remaining.Add(-int64(a.catchUp(k)))
	if rem > 0 {
		if rem < int64(c.opts.SealBlock/4) && !b.exhausted.Load() && b.refilling.CompareAndSwap(false, true) {
			c.background(func(bg context.Context) {
				defer b.refilling.Store(false)
				_ = c.refill(audit.WithActor(bg, audit.ActorFrom(ctx)), r, b)
			})
		}
		return nil
	}
	if b.exhausted.Load() {
		return fmt.Errorf("keycache: key %q v%d: %w", r.name, r.version, keystore.ErrSealLimit)
	}
	// Empty: refill now; concurrent callers share one reservation.
	ch := c.flights.DoChan("r\x00"+r.String(), func() (any, error) {
		if b.remaining.Load() > 0 {
			return nil, nil // a refill finished meanwhile
		}
		return nil, c.refill(context.WithoutCancel(ctx), r, b)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return res.Err
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	if b.remaining.Load() <= 0 {
		return fmt.Errorf("keycache: key %q v%d: %w", r.name, r.version, keystore.ErrSealLimit)
	}
	return nil
}

// refill reserves a block, plus whatever the budget is overdrawn by.
func (c *Cache) refill(ctx context.Context, r ref, b *budget) error {
	want := c.opts.SealBlock
	if rem := b.remaining.Load(); rem < 0 {
		want += uint64(-rem)
	}
	res, err := c.res.ReserveSeals(ctx, r.name, r.version, want)
	if errors.Is(err, keystore.ErrSealLimit) {
		b.exhausted.Store(true)
		c.st.sealLimits.Add(1)
		return fmt.Errorf("keycache: %w", err)
	}
	if err != nil {
		c.st.reserveErrors.Add(1)
		return fmt.Errorf("keycache: reserve seals for %q v%d: %w", r.name, r.version, err)
	}
	c.st.reservations.Add(1)
	b.remaining.Add(int64(res.Granted))
	if rem := res.Remaining(); rem > 0 && rem < c.opts.RotateAhead && b.rotating.CompareAndSwap(false, true) {
		// Near the limit: rotate now, in the background, so that
		// sealing moves to the next version before this one runs out.
		// (At the limit itself the next SealKey rotates, in the request.)
		c.background(func(bg context.Context) {
			defer b.rotating.Store(false)
			_ = c.rotate(audit.WithActor(bg, audit.ActorFrom(ctx)), r, b)
		})
	}
	return nil
}

// rotate makes a new primary for r.name because r's seals run out. A
// failed attempt is remembered for PrimaryTTL.
func (c *Cache) rotate(ctx context.Context, r ref, b *budget) error {
	if until := b.rotateUntil.Load(); until != 0 && c.opts.Now().UnixNano() < until {
		if p := b.rotateErr.Load(); p != nil {
			return *p
		}
	}
	ch := c.flights.DoChan("rot\x00"+r.String(), func() (any, error) {
		_, err := c.res.RotateExhausted(ctx, r.name, r.version)
		return nil, err
	})
	res := <-ch
	if res.Err != nil {
		err := fmt.Errorf("keycache: key %q v%d is at its seal limit and could not be rotated: %w", r.name, r.version, res.Err)
		b.rotateErr.Store(&err)
		b.rotateUntil.Store(c.opts.Now().Add(c.opts.PrimaryTTL).UnixNano())
		return err
	}
	c.st.limitRotations.Add(1)
	// Ask the keystore for the primary again; the watch purges the rest.
	c.forgetPrimary(r)
	return nil
}

// forgetPrimary drops the cached primary of r.name if it is still r's
// version.
func (c *Cache) forgetPrimary(r ref) {
	c.mu.Lock()
	if p, ok := c.primaries[r.name]; ok && p.version == r.version {
		delete(c.primaries, r.name)
	}
	c.mu.Unlock()
}

// sealLimited runs the seal accounting for SealKey: nil when k may seal.
// When r's version is out of seals it rotates the key (at once, in the
// request) and reports errRotated, so that SealKey asks for the new
// primary; when rotation fails, sealing is refused (fail closed).
func (c *Cache) sealLimited(ctx context.Context, r ref, k *fieldcrypt.DataKey) error {
	err := c.charge(ctx, r, k)
	if errors.Is(err, keystore.ErrNoPrimary) {
		// Another process rotated (or revoked) the key since the primary
		// was cached, and the keystore reserves only for the primary: ask
		// for the primary again.
		c.forgetPrimary(r)
		return errRotated
	}
	if !errors.Is(err, keystore.ErrSealLimit) {
		return err
	}
	b := c.budgetFor(r)
	if rerr := c.rotate(ctx, r, b); rerr != nil {
		c.st.sealRefusals.Add(1)
		return fmt.Errorf("%w (%w)", rerr, keystore.ErrSealLimit)
	}
	return errRotated
}

var errRotated = errors.New("keycache: rotated for the seal limit")

// background runs fn in a goroutine that Close cancels and waits for.
func (c *Cache) background(fn func(ctx context.Context)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		fn(c.bgCtx)
	}()
}

// rotateAheadDefault is how close to its limit a version may get before
// the cache rotates it in the background: four blocks.
func rotateAheadDefault(block uint64) uint64 { return 4 * block }
