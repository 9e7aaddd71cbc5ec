package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sidecrypt/sidecrypt/proxy"
)

// TestProxyObserverCache: the cached series are the vectors' own, so the
// exported values are what uncached lookups would give.
func TestProxyObserverCache(t *testing.T) {
	m := New()
	o := m.ProxyObserver()
	for range 3 {
		o.Request("couchdb.doc", proxy.OutcomeForwarded, 201, time.Millisecond)
		o.Request("", proxy.OutcomeRefused, 403, time.Millisecond)
		o.Request("couchdb.doc", "odd_outcome", 200, time.Millisecond)
		o.Fields(proxy.FieldEncrypted, "pii", 3)
		o.Fields(proxy.FieldDecrypted, "pii", 2)
		o.Fields(proxy.FieldMasked, "card", 1)
		o.Fields(proxy.FieldOpenFailed, "pii", 1)
		o.Bytes("couchdb.doc", proxy.DirectionRequest, 100)
		o.Bytes("couchdb.doc", proxy.DirectionResponse, 10)
	}
	for _, c := range []struct {
		got  float64
		want float64
		name string
	}{
		{value(m.Requests.WithLabelValues("couchdb.doc", proxy.OutcomeForwarded)), 3, "forwarded"},
		{value(m.Requests.WithLabelValues("-", proxy.OutcomeRefused)), 3, "refused, no route"},
		{value(m.Requests.WithLabelValues("couchdb.doc", "odd_outcome")), 3, "unknown outcome"},
		{value(m.Fields.WithLabelValues("pii", "encrypt")), 9, "encrypt"},
		{value(m.Fields.WithLabelValues("pii", "decrypt")), 6, "decrypt"},
		{value(m.Fields.WithLabelValues("card", "mask")), 3, "mask"},
		{value(m.OpenFailures.WithLabelValues("pii")), 3, "open failures"},
		{value(m.BodyBytes.WithLabelValues("request")), 300, "request bytes"},
		{value(m.BodyBytes.WithLabelValues("response")), 30, "response bytes"},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
	var d dto.Metric
	if err := m.RequestDuration.WithLabelValues("couchdb.doc").(prometheus.Metric).Write(&d); err != nil || d.GetHistogram().GetSampleCount() != 6 {
		t.Errorf("duration samples of couchdb.doc: %d %v, want 6", d.GetHistogram().GetSampleCount(), err)
	}
}

func value(c prometheus.Counter) float64 {
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		panic(err)
	}
	return d.GetCounter().GetValue()
}

// BenchmarkProxyObserver is what the proxy reports for one request that
// seals fields with two keys (the load test's 4-field write).
func BenchmarkProxyObserver(b *testing.B) {
	m := New()
	o := m.ProxyObserver()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			o.Fields(proxy.FieldEncrypted, "pii", 3)
			o.Fields(proxy.FieldEncrypted, "contact", 1)
			o.Bytes("couchdb.doc", proxy.DirectionRequest, 1400)
			o.UpstreamLatency("couchdb.doc", time.Millisecond)
			o.Request("couchdb.doc", proxy.OutcomeForwarded, 201, 2*time.Millisecond)
		}
	})
}
