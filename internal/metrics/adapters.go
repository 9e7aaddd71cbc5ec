package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sidecrypt/sidecrypt/keycache"
	"github.com/sidecrypt/sidecrypt/proxy"
)

// ProxyObserver returns the proxy.Observer that feeds m. It keeps the
// series it has used (observer_cache.go), so that a request costs no
// label lookup.
func (m *Metrics) ProxyObserver() proxy.Observer { return proxyObserver{m, newSeriesCache(m)} }

type proxyObserver struct {
	m *Metrics
	c *seriesCache
}

// routeLabel names requests that matched no route "-", so that the label
// is never empty (empty label values are easy to miss in queries).
func routeLabel(route string) string {
	if route == "" {
		return "-"
	}
	return route
}

func (o proxyObserver) Request(route, outcome string, _ int, d time.Duration) {
	s := o.c.route(o.m, routeLabel(route))
	if i := outcomeIndex(outcome); i >= 0 {
		s.requests[i].Inc()
	} else {
		o.m.Requests.WithLabelValues(routeLabel(route), outcome).Inc()
	}
	s.duration.Observe(d.Seconds())
}

func (o proxyObserver) Refused(_, code string) { o.m.Refusals.WithLabelValues(code).Inc() }

func (o proxyObserver) Fields(action, key string, n int) {
	if s := o.c.field(o.m, key, action); s != nil {
		s.Add(float64(n))
	}
}

func (o proxyObserver) UpstreamLatency(_ string, d time.Duration) {
	o.m.UpstreamLatency.Observe(d.Seconds())
}

func (o proxyObserver) Bytes(_, direction string, n int64) {
	switch direction {
	case proxy.DirectionRequest:
		o.c.bytes[0].Add(float64(n))
	case proxy.DirectionResponse:
		o.c.bytes[1].Add(float64(n))
	default:
		o.m.BodyBytes.WithLabelValues(direction).Add(float64(n))
	}
}

var _ proxy.Observer = proxyObserver{}

// RegisterKeyCache exports the key cache's counters. They are read at
// scrape time, so the cache's hot path only bumps atomics.
func (m *Metrics) RegisterKeyCache(stats func() keycache.Stats) {
	m.Registry.MustRegister(&cacheCollector{stats: stats})
}

type cacheCollector struct{ stats func() keycache.Stats }

var (
	descCacheHits      = prometheus.NewDesc(ns+"_keycache_hits_total", "Key lookups answered from the cache.", nil, nil)
	descCacheMisses    = prometheus.NewDesc(ns+"_keycache_misses_total", "Key lookups that went to the keystore and HSM.", nil, nil)
	descCacheUnwraps   = prometheus.NewDesc(ns+"_keycache_unwraps_total", "Data keys unwrapped through the HSM (concurrent misses for one key count once).", nil, nil)
	descCacheUnwrapErr = prometheus.NewDesc(ns+"_keycache_unwrap_errors_total", "Unwraps that failed because the keystore or HSM failed.", nil, nil)
	descCacheEvictions = prometheus.NewDesc(ns+"_keycache_evictions_total", "Cached keys dropped for expiry, size or a usage limit.", nil, nil)
	descCacheLimit     = prometheus.NewDesc(ns+"_keycache_usage_limit_drops_total", "Cached keys dropped because they reached a usage limit.", nil, nil)
	descCachePurges    = prometheus.NewDesc(ns+"_keycache_purges_total", "Cached keys purged and zeroed (revoke, destroy, key change).", nil, nil)
	descCacheEntries   = prometheus.NewDesc(ns+"_keycache_entries", "Data key versions cached now.", nil, nil)
	descCacheLatency   = prometheus.NewDesc(ns+"_keycache_unwrap_duration_seconds", "Time to fetch and unwrap a data key on a cache miss.", nil, nil)

	descSealReservations = prometheus.NewDesc(ns+"_keycache_seal_reservations_total", "Blocks of seals reserved from the keystore's per-version counters.", nil, nil)
	descSealReserveErr   = prometheus.NewDesc(ns+"_keycache_seal_reserve_errors_total", "Seal reservations that failed because the keystore or HSM failed.", nil, nil)
	descSealLimit        = prometheus.NewDesc(ns+"_keycache_seal_limit_reached_total", "Key versions found at their seal limit (NIST SP 800-38D).", nil, nil)
	descSealRotations    = prometheus.NewDesc(ns+"_keycache_seal_limit_rotations_total", "Keys rotated because their primary version neared its seal limit.", nil, nil)
	descSealRefusals     = prometheus.NewDesc(ns+"_keycache_seal_refusals_total", "Requests refused because a version at its seal limit could not be rotated.", nil, nil)
)

func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCacheHits, descCacheMisses, descCacheUnwraps, descCacheUnwrapErr,
		descCacheEvictions, descCacheLimit, descCachePurges, descCacheEntries, descCacheLatency,
		descSealReservations, descSealReserveErr, descSealLimit, descSealRotations, descSealRefusals} {
		ch <- d
	}
}

func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	counter(descCacheHits, s.Hits)
	counter(descCacheMisses, s.Misses)
	counter(descCacheUnwraps, s.Unwraps)
	counter(descCacheUnwrapErr, s.UnwrapErrors)
	counter(descCacheEvictions, s.Evictions)
	counter(descCacheLimit, s.LimitDrops)
	counter(descCachePurges, s.Purges)
	counter(descSealReservations, s.SealReservations)
	counter(descSealReserveErr, s.SealReserveErrors)
	counter(descSealLimit, s.SealLimitReached)
	counter(descSealRotations, s.SealLimitRotations)
	counter(descSealRefusals, s.SealRefusals)
	ch <- prometheus.MustNewConstMetric(descCacheEntries, prometheus.GaugeValue, float64(s.Entries))
	buckets := make(map[float64]uint64, len(s.UnwrapLatencyBuckets))
	for _, b := range s.UnwrapLatencyBuckets {
		if b.Le > 0 { // the +Inf bucket is implied by the count
			buckets[b.Le.Seconds()] = b.Count
		}
	}
	ch <- prometheus.MustNewConstHistogram(descCacheLatency, s.UnwrapLatencyCount, s.UnwrapLatencySum.Seconds(), buckets)
}

// RegisterKeystore exports the count of keystore records that failed
// their integrity check (keystore.Manager.IntegrityFailures), read at
// scrape time. Alert on any increase: a record was changed, replayed or
// deleted outside sidecrypt (docs/KEYS.md, "Record integrity").
func (m *Metrics) RegisterKeystore(integrityFailures func() uint64) {
	m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: ns, Name: "keystore_integrity_failures_total",
		Help: "Keystore record reads refused because the record failed its HSM MAC, generation or head-record check.",
	}, func() float64 { return float64(integrityFailures()) }))
}
