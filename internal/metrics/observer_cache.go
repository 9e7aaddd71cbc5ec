package metrics

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sidecrypt/sidecrypt/proxy"
)

// The proxy reports every request to its Observer (proxyObserver): a
// request count by route and outcome, a duration by route, fields by key
// and action, transformed bytes by direction. WithLabelValues hashes the
// label values and looks the series up under the vector's lock on every
// call, three to six times per request. The series a proxy uses are few
// (routes and endpoints come from the rule file and the profiles, keys
// from the rule file), so each is looked up once and kept here, in maps
// that are copied on a miss and read without a lock.

// outcomes are proxy.Outcome*, indexed for routeSeries.requests.
var outcomes = [...]string{proxy.OutcomeForwarded, proxy.OutcomeRefused, proxy.OutcomeUpstreamError, proxy.OutcomeCanceled}

func outcomeIndex(o string) int {
	for i, x := range outcomes {
		if x == o {
			return i
		}
	}
	return -1
}

// routeSeries are one route's series.
type routeSeries struct {
	requests [len(outcomes)]prometheus.Counter
	duration prometheus.Observer
}

// fieldSeries is the fields_total (or token_open_failures_total) series
// of one key and action.
type fieldKey struct{ key, action string }

// seriesCache holds the series looked up so far. Its maps are never
// changed once published: a miss builds a new map under mu.
type seriesCache struct {
	mu     sync.Mutex
	routes atomic.Pointer[map[string]*routeSeries]
	fields atomic.Pointer[map[fieldKey]prometheus.Counter]
	bytes  [2]prometheus.Counter // request, response
}

// maxCachedSeries bounds each map: label values come from configuration,
// but a bug that fed request data into a label must not grow memory
// without bound here (past it, lookups go to the vector every time).
const maxCachedSeries = 4096

func newSeriesCache(m *Metrics) *seriesCache {
	c := &seriesCache{}
	c.routes.Store(&map[string]*routeSeries{})
	c.fields.Store(&map[fieldKey]prometheus.Counter{})
	c.bytes[0] = m.BodyBytes.WithLabelValues(proxy.DirectionRequest)
	c.bytes[1] = m.BodyBytes.WithLabelValues(proxy.DirectionResponse)
	return c
}

func (c *seriesCache) route(m *Metrics, route string) *routeSeries {
	if s, ok := (*c.routes.Load())[route]; ok {
		return s
	}
	s := &routeSeries{duration: m.RequestDuration.WithLabelValues(route)}
	for i, o := range outcomes {
		s.requests[i] = m.Requests.WithLabelValues(route, o)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.routes.Load()
	if len(old) >= maxCachedSeries {
		return s
	}
	next := make(map[string]*routeSeries, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[route] = s
	c.routes.Store(&next)
	return s
}

func (c *seriesCache) field(m *Metrics, key, action string) prometheus.Counter {
	fk := fieldKey{key, action}
	if s, ok := (*c.fields.Load())[fk]; ok {
		return s
	}
	var s prometheus.Counter
	switch action {
	case proxy.FieldEncrypted:
		s = m.Fields.WithLabelValues(key, "encrypt")
	case proxy.FieldDecrypted:
		s = m.Fields.WithLabelValues(key, "decrypt")
	case proxy.FieldMasked:
		s = m.Fields.WithLabelValues(key, "mask")
	case proxy.FieldOpenFailed:
		s = m.OpenFailures.WithLabelValues(key)
	default:
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.fields.Load()
	if len(old) >= maxCachedSeries {
		return s
	}
	next := make(map[fieldKey]prometheus.Counter, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[fk] = s
	c.fields.Store(&next)
	return s
}
