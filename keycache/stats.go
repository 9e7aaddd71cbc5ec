package keycache

import (
	"sync/atomic"
	"time"
)

// latencyBounds are the upper bounds of the unwrap latency histogram: a
// software unwrap takes microseconds, a network HSM milliseconds, and
// anything past a second is an outage in all but name.
var latencyBounds = []time.Duration{
	100 * time.Microsecond,
	time.Millisecond,
	10 * time.Millisecond,
	100 * time.Millisecond,
	time.Second,
}

// LatencyBucket is one cumulative histogram bucket: Count unwraps took at
// most Le (Prometheus style; the last bucket has Le 0, meaning +Inf).
type LatencyBucket struct {
	Le    time.Duration
	Count uint64
}

// Stats are the cache's counters since New. They only grow (except
// Entries); the metrics layer exports them as Prometheus counters.
type Stats struct {
	Hits   uint64 // answered from the cache (including remembered refusals)
	Misses uint64 // had to go to the store and HSM
	// Unwraps counts successful unwraps: with singleflight, concurrent
	// misses for one version add one.
	Unwraps      uint64
	UnwrapErrors uint64 // store or HSM failures (not state refusals)
	Evictions    uint64 // left by expiry, size or usage limit
	LimitDrops   uint64 // of which dropped for a usage limit
	Purges       uint64 // removed by Purge, PurgeKey, PurgeAll, watch events
	Entries      int    // cached now

	// Seal budgets (budget.go): blocks reserved from the keystore,
	// reservations that failed (store or HSM down), versions found at
	// their seal limit, rotations made for the limit, and SealKey calls
	// refused because a version at its limit could not be rotated.
	SealReservations   uint64
	SealReserveErrors  uint64
	SealLimitReached   uint64
	SealLimitRotations uint64
	SealRefusals       uint64

	UnwrapLatencySum     time.Duration
	UnwrapLatencyCount   uint64
	UnwrapLatencyBuckets []LatencyBucket
}

type counters struct {
	hits, misses, unwraps, unwrapErrors, evictions, limitDrops, purges    atomic.Uint64
	reservations, reserveErrors, sealLimits, limitRotations, sealRefusals atomic.Uint64
	latencySum                                                            atomic.Int64
	buckets                                                               []atomic.Uint64 // len(latencyBounds)+1
}

func (s *counters) init() { s.buckets = make([]atomic.Uint64, len(latencyBounds)+1) }

func (s *counters) observeUnwrap(d time.Duration) {
	s.unwraps.Add(1)
	s.latencySum.Add(int64(d))
	i := 0
	for i < len(latencyBounds) && d > latencyBounds[i] {
		i++
	}
	s.buckets[i].Add(1)
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	s := Stats{
		Hits:               c.st.hits.Load(),
		Misses:             c.st.misses.Load(),
		Unwraps:            c.st.unwraps.Load(),
		UnwrapErrors:       c.st.unwrapErrors.Load(),
		Evictions:          c.st.evictions.Load(),
		LimitDrops:         c.st.limitDrops.Load(),
		Purges:             c.st.purges.Load(),
		SealReservations:   c.st.reservations.Load(),
		SealReserveErrors:  c.st.reserveErrors.Load(),
		SealLimitReached:   c.st.sealLimits.Load(),
		SealLimitRotations: c.st.limitRotations.Load(),
		SealRefusals:       c.st.sealRefusals.Load(),
		Entries:            c.lru.Len(),
		UnwrapLatencySum:   time.Duration(c.st.latencySum.Load()),
		UnwrapLatencyCount: c.st.unwraps.Load(),
	}
	var cum uint64
	for i := range c.st.buckets {
		cum += c.st.buckets[i].Load()
		var le time.Duration
		if i < len(latencyBounds) {
			le = latencyBounds[i]
		}
		s.UnwrapLatencyBuckets = append(s.UnwrapLatencyBuckets, LatencyBucket{Le: le, Count: cum})
	}
	return s
}
