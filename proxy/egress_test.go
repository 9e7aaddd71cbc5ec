package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// fakeDNS maps names to addresses for the proxy's forward-mode lookups.
type fakeDNS map[string][]string

func (f fakeDNS) lookup(_ context.Context, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range f[host] {
		out = append(out, netip.MustParseAddr(s))
	}
	if len(out) == 0 {
		return nil, errors.New("no such host")
	}
	return out, nil
}

// listenOn starts a recording upstream on a given loopback address.
func listenOn(t *testing.T, ip string) (*recorder, string) {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Skipf("cannot listen on %s: %v", ip, err)
	}
	rc := &recorder{}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: rc}}
	srv.Start()
	t.Cleanup(srv.Close)
	return rc, ln.Addr().String()
}

// A client of the forward proxy tries every way out: the datastore under
// other names and addresses, hosts nobody listed, loopback and link-local
// addresses behind listed names, the sidecar's own listeners, CONNECT
// tunnels. Only the datastore (protected) and what is listed by address
// (untouched) may be reached.
func TestForwardEgress(t *testing.T) {
	keys := testKeyring(t)
	ca, _ := InitCA(t.TempDir(), false)
	store, storeAddr := listenOn(t, "127.0.0.1")
	other, otherAddr := listenOn(t, "127.0.0.2")
	listed, listedAddr := listenOn(t, "127.0.0.3")
	_, adminAddr := listenOn(t, "127.0.0.4") // stands for the admin API
	_, storePort, _ := net.SplitHostPort(storeAddr)

	coll := &datastore.Collection{Name: "clinic", Fields: []*datastore.Field{
		{Name: "ssn", Path: []string{"ssn"}, AnyDepth: true, Key: "pii", Mode: fieldcrypt.ModeRandom},
	}}
	docRules, _ := coll.DocumentRules()
	enc := mustEncryptor(docRules)
	prof := &prefixProfile{coll: coll, enc: enc}
	plan := v2Plan(t, prof)
	plan.Schema = &datastore.Schema{Datastore: "scripted", Hosts: []string{"couch.test:" + storePort}}

	dns := fakeDNS{
		"couch.test":    {"127.0.0.1"},
		"alias.test":    {"127.0.0.1"}, // a second name for the datastore
		"other.test":    {"127.0.0.2"},
		"listed.test":   {"127.0.0.3"},
		"metadata.test": {"169.254.169.254"},
		"admin.test":    {"127.0.0.4"},
		"both.test":     {"127.0.0.2", "127.0.0.1"},
	}
	tp := startProxy(t, Config{
		Rules:       newStaticRules(plan),
		Keys:        keys,
		CA:          ca,
		Lookup:      dns.lookup,
		PassThrough: []string{"metadata.test", "other.test", "127.0.0.3", "127.0.0.4"},
		Guard:       []string{adminAddr},
	})
	c := forwardClient(t, tp.URL, nil)
	doc := `{"ssn":"123-45-6789","ward":"B"}`
	json := http.Header{"Content-Type": {"application/json"}}
	_, otherPort, _ := net.SplitHostPort(otherAddr)
	_, listedPort, _ := net.SplitHostPort(listedAddr)
	_, adminPort, _ := net.SplitHostPort(adminAddr)

	for _, tc := range []struct {
		name   string
		url    string
		status int
		code   string
		rec    *recorder
		sealed bool
	}{
		{"the datastore by its name", "http://couch.test:" + storePort + "/clinic/p1", 200, "", store, true},
		{"the datastore by its address", "http://" + storeAddr + "/clinic/p1", 200, "", store, true},
		{"the datastore by another name", "http://alias.test:" + storePort + "/clinic/p1", 200, "", store, true},
		{"the datastore as an IPv4-mapped IPv6 address", "http://[::ffff:127.0.0.1]:" + storePort + "/clinic/p1", 200, "", store, true},
		{"the datastore name with a trailing dot and capitals", "http://COUCH.test.:" + storePort + "/clinic/p1", 200, "", store, true},
		{"a name resolving to the datastore and elsewhere", "http://both.test:" + storePort + "/clinic/p1", 200, "", store, true},
		{"a host nobody listed", "http://127.0.0.5:" + otherPort + "/x", 403, CodeEgressRefused, nil, false},
		{"a listed name behind a loopback address", "http://other.test:" + otherPort + "/x", 403, CodeEgressRefused, other, false},
		{"a listed name behind a link-local address", "http://metadata.test/latest/meta-data/", 403, CodeEgressRefused, nil, false},
		{"a listed address", "http://listed.test:" + listedPort + "/x", 200, "", listed, false},
		{"a listed address, literally", "http://" + listedAddr + "/x", 200, "", listed, false},
		{"the admin listener, although listed", "http://admin.test:" + adminPort + "/v1/keys", 508, CodeProxyLoop, nil, false},
		{"the proxy itself", tp.URL.String() + "/x", 508, CodeProxyLoop, nil, false},
		{"an unresolvable name", "http://nowhere.test/x", 502, CodeUpstreamUnavailable, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			counts := map[*recorder]int{store: store.count(), other: other.count(), listed: listed.count()}
			status, _, b := do(t, c, "PUT", tc.url, json, strings.NewReader(doc))
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, b)
			}
			if tc.code != "" && errorCode(t, b) != tc.code {
				t.Errorf("code %s, want %s", errorCode(t, b), tc.code)
			}
			for rc, n := range counts {
				want := n
				if rc == tc.rec && tc.status == 200 {
					want++
				}
				if rc.count() != want {
					t.Errorf("an upstream saw %d new requests, want %d", rc.count()-n, want-n)
				}
			}
			if tc.status != 200 {
				return
			}
			got := tc.rec.last(t).Body
			if tc.sealed && strings.Contains(string(got), "123-45-6789") {
				t.Errorf("plaintext reached the datastore: %s", got)
			}
			if !tc.sealed && string(got) != doc {
				t.Errorf("a listed destination got a changed body: %s", got)
			}
		})
	}

	// CONNECT: to the datastore by address it is intercepted, to a listed
	// address tunnelled, to anything else refused.
	for _, tc := range []struct {
		target string
		status int
	}{
		{"127.0.0.1:" + storePort, 200},
		{"alias.test:" + storePort, 200},
		{listedAddr, 200},
		{"127.0.0.5:443", 403},
		{"other.test:" + otherPort, 403},
		{"metadata.test:80", 403},
	} {
		t.Run("CONNECT "+tc.target, func(t *testing.T) {
			conn, err := net.Dial("tcp", tp.URL.Host)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", tc.target, tc.target)
			resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "CONNECT"})
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Errorf("CONNECT %s: %d", tc.target, resp.StatusCode)
			}
			if tc.status == 403 {
				b, _ := io.ReadAll(resp.Body)
				if errorCode(t, b) != CodeEgressRefused {
					t.Errorf("body %s", b)
				}
			}
		})
	}
}

// prefixProfile protects every path under /clinic/ and passes the rest.
type prefixProfile struct {
	coll *datastore.Collection
	enc  *fieldcrypt.Encryptor
}

func (p *prefixProfile) Name() string { return "scripted" }

func (p *prefixProfile) Classify(r *datastore.Request) *datastore.Operation {
	if strings.HasPrefix(r.Path, "/clinic/") {
		return &datastore.Operation{Collection: p.coll, Endpoint: "t.doc", Body: datastore.BodyEncrypt, Encryptor: p.enc, Keys: []string{"pii"}}
	}
	return &datastore.Operation{Endpoint: "t.pass", Body: datastore.BodyPass}
}

func TestSpecialAddresses(t *testing.T) {
	for s, want := range map[string]bool{
		"127.0.0.1": true, "10.1.2.3": true, "172.16.0.1": true, "192.168.1.1": true,
		"169.254.169.254": true, "100.64.0.1": true, "0.0.0.0": true, "::1": true, "fd00::1": true,
		"fe80::1": true, "::ffff:10.0.0.1": true, "::ffff:169.254.169.254": true,
		"93.184.216.34": false, "2606:2800:220:1::": false, "100.128.0.1": false,
	} {
		if got := special(netip.MustParseAddr(s)); got != want {
			t.Errorf("special(%s) = %v", s, got)
		}
	}
}

func TestParseEgress(t *testing.T) {
	e, err := parseEgress([]string{"api.example.com", "*.svc.test:8443", "10.0.0.0/8", "[::1]:5984", "192.0.2.7"})
	if err != nil {
		t.Fatal(err)
	}
	if !e.nameAllowed("api.example.com", "443") || !e.nameAllowed("a.svc.test", "8443") || e.nameAllowed("a.svc.test", "80") || e.nameAllowed("svc.test", "8443") {
		t.Error("name entries")
	}
	if !e.addrListed(netip.MustParseAddr("10.9.9.9"), "1") || !e.addrListed(netip.MustParseAddr("::1"), "5984") || e.addrListed(netip.MustParseAddr("::1"), "80") || !e.addrListed(netip.MustParseAddr("192.0.2.7"), "80") {
		t.Error("address entries")
	}
	for _, bad := range []string{"host:0", "host:99999", "a b", "http://x/"} {
		if _, err := parseEgress([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
