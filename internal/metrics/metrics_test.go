package metrics

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/keycache"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
	"github.com/sidecrypt/sidecrypt/proxy"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func TestProxyObserver(t *testing.T) {
	m := New()
	o := m.ProxyObserver()
	o.Request("patients-write", proxy.OutcomeForwarded, 201, 3*time.Millisecond)
	o.Request("", proxy.OutcomeForwarded, 200, time.Millisecond)
	o.Refused("patients-write", "invalid_json")
	o.Fields(proxy.FieldEncrypted, "pii", 4)
	o.Fields(proxy.FieldMasked, "card", 1)
	o.Fields(proxy.FieldOpenFailed, "phi", 2)
	o.UpstreamLatency("patients-write", 2*time.Millisecond)
	out := scrape(t, m)
	for _, want := range []string{
		`sidecrypt_requests_total{outcome="forwarded",route="patients-write"} 1`,
		`sidecrypt_requests_total{outcome="forwarded",route="-"} 1`,
		`sidecrypt_refusals_total{reason="invalid_json"} 1`,
		`sidecrypt_fields_total{key="pii",op="encrypt"} 4`,
		`sidecrypt_fields_total{key="card",op="mask"} 1`,
		`sidecrypt_token_open_failures_total{key="phi"} 2`,
		`sidecrypt_upstream_duration_seconds_count 1`,
		`go_goroutines`, `process_cpu_seconds_total`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// failingProvider fails every operation, as an unreachable HSM would.
type failingProvider struct{ hsm.Provider }

func (failingProvider) Unwrap(context.Context, hsm.Wrapped, hsm.Binding) ([]byte, error) {
	return nil, hsm.ErrUnavailable
}

func TestInstrumentHSM(t *testing.T) {
	m := New()
	kek := keystoretest.NewFakeKEK()
	p := m.InstrumentHSM(kek)
	ctx := context.Background()
	w, err := p.Wrap(ctx, make([]byte, 64), hsm.Binding{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Unwrap(ctx, w, hsm.Binding{}); err != nil {
		t.Fatal(err)
	}
	bad := m.InstrumentHSM(failingProvider{kek})
	if _, err := bad.Unwrap(ctx, w, hsm.Binding{}); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("the wrapper changed the error: %v", err)
	}
	out := scrape(t, m)
	for _, want := range []string{
		`sidecrypt_hsm_operation_duration_seconds_count{op="wrap"} 1`,
		`sidecrypt_hsm_operation_duration_seconds_count{op="unwrap"} 2`,
		`sidecrypt_hsm_errors_total{op="unwrap"} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(out, `sidecrypt_hsm_errors_total{op="wrap"}`) {
		t.Error("a successful wrap was counted as an error")
	}
}

func TestKeyCacheCollector(t *testing.T) {
	m := New()
	m.RegisterKeyCache(func() keycache.Stats {
		return keycache.Stats{Hits: 10, Misses: 2, Unwraps: 2, Entries: 1,
			UnwrapLatencySum: 3 * time.Millisecond, UnwrapLatencyCount: 2,
			UnwrapLatencyBuckets: []keycache.LatencyBucket{{Le: time.Millisecond, Count: 1}, {Le: 10 * time.Millisecond, Count: 2}, {Le: 0, Count: 2}}}
	})
	out := scrape(t, m)
	for _, want := range []string{
		"sidecrypt_keycache_hits_total 10", "sidecrypt_keycache_misses_total 2", "sidecrypt_keycache_entries 1",
		`sidecrypt_keycache_unwrap_duration_seconds_bucket{le="0.001"} 1`,
		`sidecrypt_keycache_unwrap_duration_seconds_bucket{le="0.01"} 2`,
		`sidecrypt_keycache_unwrap_duration_seconds_bucket{le="+Inf"} 2`,
		"sidecrypt_keycache_unwrap_duration_seconds_count 2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestRules(t *testing.T) {
	m := New()
	m.SetRules("sha256:aaa", time.Unix(100, 0))
	m.SetRules("sha256:bbb", time.Unix(200, 0))
	out := scrape(t, m)
	if strings.Contains(out, "sha256:aaa") || !strings.Contains(out, `sidecrypt_rules_info{hash="sha256:bbb"} 1`) ||
		!strings.Contains(out, "sidecrypt_rules_loaded_timestamp_seconds 200") {
		t.Fatalf("rules metrics:\n%s", out)
	}
}
