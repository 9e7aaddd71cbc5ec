package proxy

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/rules"
)

// TestForwardLoopRefused: a forward-mode request, or a CONNECT, addressed
// to the proxy itself is refused with 508 instead of proxying to itself
// until sockets run out.
func TestForwardLoopRefused(t *testing.T) {
	ca, err := InitCA(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	tp := startProxy(t, Config{Rules: rules.Static(hostsPlan(t, "127.0.0.1")), Keys: testKeyring(t), CA: ca})
	self := tp.URL.Host
	_, port, _ := net.SplitHostPort(self)

	app := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(tp.URL)}, Timeout: 10 * time.Second}
	for _, target := range []string{"http://" + self + "/clinic/p1", "http://localhost:" + port + "/x"} {
		resp, err := app.Get(target)
		if err != nil {
			t.Fatalf("GET %s: %v", target, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusLoopDetected {
			t.Fatalf("GET %s through the proxy: %d, want 508", target, resp.StatusCode)
		}
	}

	// A CONNECT to itself, for a host no rule names (so it would be
	// tunnelled rather than intercepted), is not tunnelled either.
	tunnelOnly := startProxy(t, Config{Rules: rules.Static(hostsPlan(t, "datastore.example")), Keys: testKeyring(t), CA: ca})
	self = tunnelOnly.URL.Host
	c, err := net.DialTimeout("tcp", self, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", self, self)
	status, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(status, " 200 ") {
		t.Fatalf("CONNECT to the proxy itself was tunnelled: %q", status)
	}
}

func TestSelfAddr(t *testing.T) {
	tcp := func(s string) net.Addr { a, _ := net.ResolveTCPAddr("tcp", s); return a }
	specific := newSelfAddr(tcp("127.0.0.1:8080"))
	any := newSelfAddr(tcp("0.0.0.0:8080"))
	for _, tc := range []struct {
		self   *selfAddr
		remote string
		want   bool
	}{
		{specific, "127.0.0.1:8080", true},
		{specific, "127.0.0.1:5984", false},
		{specific, "127.0.0.2:8080", false},
		{any, "127.0.0.1:8080", true},
		{any, "127.0.0.1:5984", false},
		{any, "192.0.2.10:8080", false}, // not one of this host's addresses
		{nil, "127.0.0.1:8080", false},
	} {
		if got := tc.self.is(tcp(tc.remote)); got != tc.want {
			t.Errorf("self %+v, remote %s: %v, want %v", tc.self, tc.remote, got, tc.want)
		}
	}
}
