package admin

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns PEM certificate and key for cn, a server (with an IP
// SAN) or a client.
func (ca *testCA) issue(t *testing.T, cn string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// TestClientCertificates: over TLS a verified client certificate mapped
// in the principals file is a principal; an unmapped or foreign one is
// not; probes need no certificate.
func TestClientCertificates(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	appendPrincipal(t, f.tokensFile, "  - principal: deployer\n    roles: [compliance]\n    cert_names: [ci-deployer.ops.example]\n")
	time.Sleep(1100 * time.Millisecond)

	dir := t.TempDir()
	ca, other := newTestCA(t, "admin clients"), newTestCA(t, "someone else")
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	sc, sk := ca.issue(t, "sidecar", true)
	tc, err := TLSConfig(write("server.pem", sc), write("server.key", sk), write("ca.pem", ca.pem))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(f.api)
	srv.TLS = tc
	srv.StartTLS()
	defer srv.Close()

	client := func(cert, key []byte) *http.Client {
		roots := x509.NewCertPool()
		roots.AddCert(ca.cert)
		c := &tls.Config{RootCAs: roots}
		if cert != nil {
			pair, err := tls.X509KeyPair(cert, key)
			if err != nil {
				t.Fatal(err)
			}
			c.Certificates = []tls.Certificate{pair}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: c}}
	}
	whoami := func(c *http.Client, token string) (int, map[string]any) {
		req, _ := http.NewRequest("GET", srv.URL+"/v1/whoami", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, map[string]any{"err": err.Error()}
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var out map[string]any
		json.Unmarshal(b, &out)
		return resp.StatusCode, out
	}
	status, out := whoami(client(ca.issue(t, "ci-deployer.ops.example", false)), "")
	if status != 200 || out["principal"] != "deployer" || out["method"] != "certificate" {
		t.Fatalf("mapped certificate: %d %v", status, out)
	}
	if status, out := whoami(client(ca.issue(t, "intern.ops.example", false)), ""); status != 403 {
		t.Fatalf("unmapped certificate: %d %v", status, out)
	}
	// A certificate from another CA counts for nothing (the client does
	// not even offer it for the server's CA list, and the server would
	// not verify it).
	if status, out := whoami(client(other.issue(t, "ci-deployer.ops.example", false)), ""); status != 401 {
		t.Fatalf("foreign certificate: %d %v", status, out)
	}
	// No certificate: a token, or nothing but the probes.
	if status, out := whoami(client(nil, nil), f.tokens["audrey"]); status != 200 || out["principal"] != "audrey" {
		t.Fatalf("token over TLS: %d %v", status, out)
	}
	if status, _ := whoami(client(nil, nil), ""); status != 401 {
		t.Fatalf("no credential over TLS: %d", status)
	}
	resp, err := client(nil, nil).Get(srv.URL + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("probe over TLS: %v %v", resp, err)
	}
	resp.Body.Close()
}
