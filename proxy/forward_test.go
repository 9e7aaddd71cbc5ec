package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/rules"
)

// forwardClient sends requests through the proxy at proxyURL, as an
// application with HTTP_PROXY/HTTPS_PROXY set would, trusting only roots
// for HTTPS.
func forwardClient(t testing.TB, proxyURL *url.URL, roots *x509.CertPool) *http.Client {
	t.Helper()
	tr := &http.Transport{
		Proxy:              http.ProxyURL(proxyURL),
		TLSClientConfig:    &tls.Config{RootCAs: roots},
		DisableCompression: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func poolOf(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// hostsPlan is the clinic plan with every route restricted to hosts.
func hostsPlan(t testing.TB, hosts string, edits ...string) *rules.Plan {
	return clinicPlan(t, append([]string{"    match:\n", "    match:\n      hosts: [" + hosts + "]\n"}, edits...)...)
}

func TestForwardPlainHTTP(t *testing.T) {
	keys := testKeyring(t)
	ca, _ := InitCA(t.TempDir(), false)
	rc, up := startUpstream(t, nil)
	tp := startProxy(t, Config{Rules: rules.Static(hostsPlan(t, "127.0.0.1")), Keys: keys, CA: ca})
	c := forwardClient(t, tp.URL, nil)
	status, _, b := do(t, c, "PUT", up.String()+"/clinic/p1", http.Header{"Content-Type": {"application/json"}}, strings.NewReader(patient))
	if status != 200 {
		t.Fatalf("status %d %s", status, b)
	}
	assertStoredPatient(t, rc.last(t).Body)
	if got := rc.last(t).Header.Get("X-Forwarded-For"); got != "" {
		t.Errorf("forward mode added X-Forwarded-For %q", got)
	}

	t.Run("another name for the datastore is the datastore", func(t *testing.T) {
		// localhost reaches 127.0.0.1, which the rules name: the same
		// datastore under another name must get the same rules.
		other := mustURL(t, strings.Replace(up.String(), "127.0.0.1", "localhost", 1))
		status, _, b := do(t, c, "PUT", other.String()+"/clinic/p1", http.Header{"Content-Type": {"application/json"}}, strings.NewReader(patient))
		if status != 200 {
			t.Fatalf("status %d %s", status, b)
		}
		assertStoredPatient(t, rc.last(t).Body)
	})
	t.Run("a host the rules do not name is refused", func(t *testing.T) {
		before := rc.count()
		other := mustURL(t, strings.Replace(up.String(), "127.0.0.1", "127.0.0.2", 1))
		status, _, b := do(t, c, "PUT", other.String()+"/clinic/p1", http.Header{"Content-Type": {"application/json"}}, strings.NewReader(patient))
		if status != 403 || errorCode(t, b) != CodeEgressRefused || rc.count() != before {
			t.Errorf("got %d %s", status, b)
		}
	})
	t.Run("origin-form request refused", func(t *testing.T) {
		status, _, b := do(t, client(t), "GET", tp.URL.String()+"/clinic/p1", nil, nil)
		if status != 400 || errorCode(t, b) != CodeNotProxyRequest {
			t.Fatalf("got %d %s", status, b)
		}
	})
}

func TestForwardInterceptsNamedHTTPSHost(t *testing.T) {
	keys := testKeyring(t)
	ca, _ := InitCA(t.TempDir(), false)
	rc := &recorder{}
	upSrv := httptest.NewTLSServer(rc)
	t.Cleanup(upSrv.Close)
	upCert := upSrv.Certificate()
	src := newStaticRules(hostsPlan(t, "127.0.0.1"))
	tp := startProxy(t, Config{
		Rules:       src,
		Keys:        keys,
		CA:          ca,
		UpstreamTLS: &tls.Config{RootCAs: poolOf(upCert)},
		// Once the rules stop naming 127.0.0.1, it may still be reached,
		// tunnelled: loopback is reachable only when listed by address.
		PassThrough: []string{"127.0.0.1"},
	})

	// The application trusts only sidecrypt's CA: a request succeeds only
	// if it was intercepted.
	c := forwardClient(t, tp.URL, poolOf(ca.Certificate()))
	req, _ := http.NewRequest("PUT", upSrv.URL+"/clinic/p1", strings.NewReader(patient))
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("intercepted request: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if issuer := resp.TLS.PeerCertificates[0].Issuer.CommonName; issuer != ca.Certificate().Subject.CommonName {
		t.Errorf("client saw a certificate issued by %q", issuer)
	}
	assertStoredPatient(t, rc.last(t).Body)

	// Keep-alive inside the tunnel, and decryption on the way back.
	sealed := seal(t, keys, patient, piiRule("$.ssn"), piiRule("$..diagnosis"), contactRule("$.email"))
	rc.h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, sealed)
	})
	status, _, b := do(t, c, "GET", upSrv.URL+"/clinic/p1", nil, nil)
	if status != 200 || string(b) != patient {
		t.Errorf("read back through the tunnel: %d %s", status, b)
	}

	t.Run("tunnel for a pass-through host the rules do not name", func(t *testing.T) {
		src.p.Store(hostsPlan(t, "clinic.example"))
		c := forwardClient(t, tp.URL, poolOf(upCert))
		resp, err := c.Get(upSrv.URL + "/other")
		if err != nil {
			t.Fatalf("tunnelled request: %v", err)
		}
		resp.Body.Close()
		if !resp.TLS.PeerCertificates[0].Equal(upCert) {
			t.Error("a host no rule names was intercepted")
		}
	})
	t.Run("reload adds the host", func(t *testing.T) {
		src.p.Store(hostsPlan(t, `"*.example.com", 127.0.0.1`))
		c := forwardClient(t, tp.URL, poolOf(ca.Certificate()))
		resp, err := c.Get(upSrv.URL + "/clinic/p1")
		if err != nil {
			t.Fatalf("after reload: %v", err)
		}
		resp.Body.Close()
		if resp.TLS.PeerCertificates[0].Issuer.CommonName != ca.Certificate().Subject.CommonName {
			t.Error("not intercepted after the rules named the host")
		}
	})
}

func TestForwardVerifiesUpstream(t *testing.T) {
	ca, _ := InitCA(t.TempDir(), false)
	rc := &recorder{}
	upSrv := httptest.NewTLSServer(rc)
	t.Cleanup(upSrv.Close)
	// No UpstreamTLS: system roots, which do not include httptest's CA.
	tp := startProxy(t, Config{Rules: rules.Static(hostsPlan(t, "127.0.0.1")), Keys: testKeyring(t), CA: ca})
	c := forwardClient(t, tp.URL, poolOf(ca.Certificate()))
	status, _, b := do(t, c, "PUT", upSrv.URL+"/clinic/p1", http.Header{"Content-Type": {"application/json"}}, strings.NewReader(patient))
	if status != http.StatusBadGateway || errorCode(t, b) != CodeUpstreamUnavailable {
		t.Fatalf("untrusted upstream: %d %s", status, b)
	}
	if rc.count() != 0 {
		t.Fatal("request reached an upstream whose certificate does not verify")
	}
	if !strings.Contains(tp.Log.String(), "certificate") {
		t.Errorf("log does not say why:\n%s", tp.Log.String())
	}
	fw := tp.fw
	if fw.gp.Tr != tp.transport || fw.gp.Tr.TLSClientConfig.InsecureSkipVerify {
		t.Error("goproxy's transport is not the verifying one")
	}
	if fw.gp.ConnectDial != nil {
		t.Error("goproxy dials tunnels through the environment's proxy")
	}
}

func TestConfigValidate(t *testing.T) {
	ca, _ := InitCA(t.TempDir(), false)
	base := Config{Rules: newStaticRules(nil), Keys: testKeyring(t)}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		ok   bool
	}{
		{"forward with CA", func(c *Config) { c.CA = ca }, true},
		{"forward without CA", func(c *Config) {}, false},
		{"reverse", func(c *Config) { c.Upstream = mustURL(t, "http://127.0.0.1:5984") }, true},
		{"ftp upstream", func(c *Config) { c.Upstream = mustURL(t, "ftp://x") }, false},
		{"credentials in URL", func(c *Config) { c.Upstream = mustURL(t, "http://admin:pw@127.0.0.1:5984") }, false},
		{"no rules", func(c *Config) { c.CA = ca; c.Rules = nil }, false},
		{"no keys", func(c *Config) { c.CA = ca; c.Keys = nil }, false},
		{"skip verify", func(c *Config) { c.CA = ca; c.UpstreamTLS = &tls.Config{InsecureSkipVerify: true} }, false},
		{"negative limit", func(c *Config) { c.CA = ca; c.MaxBody = -1 }, false},
		{"fasthttp reverse", func(c *Config) { c.Upstream = mustURL(t, "http://127.0.0.1:5984"); c.Engine = EngineFastHTTP }, true},
		{"fasthttp forward", func(c *Config) { c.CA = ca; c.Engine = EngineFastHTTP }, false},
		{"unknown engine", func(c *Config) { c.Upstream = mustURL(t, "http://127.0.0.1:5984"); c.Engine = "nginx" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.edit(&c)
			_, err := New(c)
			if (err == nil) != tc.ok {
				t.Fatalf("New: %v", err)
			}
			if err != nil && (!errors.Is(err, ErrConfig) || strings.Contains(err.Error(), "pw")) {
				t.Errorf("error %q", err)
			}
		})
	}
}
