package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

// testForward: forward mode (the application sets HTTP_PROXY), a second
// sidecar in front of TestAttacks' relay and store. The rules name the
// datastore as localhost:PORT; it must be recognised by every name and
// address that reaches it, and nothing else may be reached: not another
// local service, not a blind CONNECT tunnel.
func testForward(t *testing.T, reverse *stack) {
	store, relay := reverse.store, reverse.relay
	_, port, _ := net.SplitHostPort(relay.Addr)
	rules := strings.Replace(attackRules, "datastore: couchdb\n", "datastore: couchdb\nhosts: [\"localhost:"+port+"\"]\n", 1)
	sc := startSidecar(t, sidecarConfig{rules: rules, keys: clinicKeys})
	st := &stack{store: store, relay: relay, sc: sc}

	// Another local service the sidecar must not reach (a cloud metadata
	// service, an admin API...): it records what it gets.
	var other testenv.SyncBuffer
	otherSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(&other, "%s %s %s\n", r.Method, r.URL, b)
		w.WriteHeader(200)
	}))
	t.Cleanup(otherSrv.Close)
	otherHost := strings.TrimPrefix(otherSrv.URL, "http://")

	proxyURL, _ := url.Parse(sc.url)
	app := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL), DisableCompression: true}, Timeout: 30 * time.Second}
	via := func(t *testing.T, method, target, body string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, target, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := app.Do(req)
		if err != nil {
			return 0, []byte(err.Error())
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}

	// The datastore by the name in the rules, by its address and by
	// other spellings of either: each write is sealed.
	for i, host := range []string{
		"localhost:" + port,
		"127.0.0.1:" + port,
		"LOCALHOST:" + port,
		"localhost.:" + port,
		"[::ffff:127.0.0.1]:" + port,
		"user@127.0.0.1:" + port,
	} {
		t.Run("datastore as "+host, func(t *testing.T) {
			m := relay.Mark()
			id := fmt.Sprintf("fw-%d", i)
			status, body := via(t, "PUT", "http://"+host+"/clinic/"+id, secretDoc)
			switch {
			case status == http.StatusCreated:
				sealedAt("/clinic/"+id)(t, st)
			case status == http.StatusUnauthorized && strings.Contains(host, "@"):
				// The client sends the user as Basic credentials, which
				// pouchdb-server refuses; the body went out sealed.
			case status == http.StatusForbidden && errorCode(body) == "egress_refused":
				relay.AssertNothingForwarded(t, m)
				t.Logf("refused rather than recognised: %s", body)
			default:
				t.Errorf("PUT via %s: %d %s", host, status, clip(body))
			}
			relay.AssertNoPlaintext(t, m, attackSecrets...)
		})
	}

	// Spellings of the loopback address that Go's resolver may or may
	// not read; whatever the sidecar does, nothing leaves in plaintext.
	for i, host := range []string{"127.1:" + port, "2130706433:" + port, "0x7f000001:" + port, "127.000.000.001:" + port} {
		t.Run("datastore spelled "+host, func(t *testing.T) {
			m := relay.Mark()
			status, body := via(t, "PUT", "http://"+host+"/clinic/fws-"+fmt.Sprint(i), secretDoc)
			t.Logf("%s: %d %s", host, status, clip(body))
			relay.AssertNoPlaintext(t, m, attackSecrets...)
		})
	}

	t.Run("absolute target and Host header disagree", func(t *testing.T) {
		m := relay.Mark()
		raw := crlf("PUT http://127.0.0.1:"+port+"/clinic/fw-host HTTP/1.1\nHost: "+otherHost+"\nContent-Type: application/json\nContent-Length: "+itoa(len(secretDoc))+"\nConnection: close\n\n") + secretDoc
		resps := rawExchange(t, strings.TrimPrefix(sc.url, "http://"), raw, 1)
		if len(resps) == 0 {
			t.Fatal("no answer")
		}
		t.Logf("answer: %d %s", resps[0].status, clip(resps[0].body))
		relay.AssertNoPlaintext(t, m, attackSecrets...)
		if strings.Contains(other.String(), "123-45-6789") {
			t.Errorf("the other service got the document: %s", other.String())
		}
	})

	t.Run("another local service", func(t *testing.T) {
		status, body := via(t, "PUT", otherSrv.URL+"/clinic/fw-x", secretDoc)
		if status != http.StatusForbidden || errorCode(body) != "egress_refused" {
			t.Errorf("PUT to an unlisted service: %d %s", status, clip(body))
		}
		if other.String() != "" {
			t.Errorf("the unlisted service was reached: %s", other.String())
		}
	})

	t.Run("CONNECT to a host the rules do not name", func(t *testing.T) {
		status, body := connect(t, sc.url, otherHost, "")
		if status != http.StatusForbidden || errorCode(body) != "egress_refused" {
			t.Errorf("CONNECT %s: %d %s", otherHost, status, clip(body))
		}
		if other.String() != "" {
			t.Errorf("the unlisted service was reached: %s", other.String())
		}
	})

	t.Run("CONNECT to the datastore by address, plain HTTP inside", func(t *testing.T) {
		m := relay.Mark()
		inner := crlf("PUT /clinic/fw-tunnel HTTP/1.1\nHost: 127.0.0.1:"+port+"\nContent-Type: application/json\nContent-Length: "+itoa(len(secretDoc))+"\nConnection: close\n\n") + secretDoc
		status, body := connect(t, sc.url, "127.0.0.1:"+port, inner)
		t.Logf("CONNECT 127.0.0.1:%s: %d %s", port, status, clip(body))
		relay.AssertNothingForwarded(t, m)
	})

	st.assertProtectedDBsClean(t)
}

// connect sends CONNECT host to the proxy; when the tunnel opens, it
// writes inner into it and returns what comes back as the body.
func connect(t *testing.T, proxy, host, inner string) (int, []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(proxy, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", host, host)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", host, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if inner == "" {
		return resp.StatusCode, nil
	}
	_, _ = io.WriteString(c, inner)
	b, _ := io.ReadAll(br)
	return resp.StatusCode, b
}
