package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

// The attacker's harness: a table of requests, each with the exact
// outcome it must have, run against one sidecar in front of one store
// behind the recording relay.

// attack is one attempt to get a protected value past the sidecar.
type attack struct {
	name string
	// The request: method, path (with query), body and header pairs,
	// sent with net/http; or raw, sent as is on a TCP connection to the
	// sidecar ("{{host}}" is replaced with its address), for what
	// net/http will not send.
	method, path, body string
	headers            []string
	raw                string
	// responses is how many responses raw expects (pipelining); 1 by
	// default. The last one is checked.
	responses int

	// status is the status the application must get. code is the
	// sidecar's refusal code in the JSON error body; "" means the answer
	// must be the datastore's (the request was forwarded, sealed).
	status int
	code   string
	// forwarded: the request reaches the store. Otherwise the relay must
	// have seen no byte of it.
	forwarded bool
	// unprotected: the request reaches a database the rules do not
	// protect, where plaintext is the application's decision; the relay
	// is not searched, and after must show that nothing protected was
	// reached.
	unprotected bool
	// bypass: a known bypass, reported; the case is skipped with this
	// text until the fix lands (SIDECRYPT_TEST_E2E_BYPASSES=1 runs it, to
	// see whether it still gets through).
	bypass string
	// after runs extra checks (what the store holds).
	after func(t *testing.T, st *stack)
	// fasthttp is the answer on the fasthttp engine (the default;
	// SIDECRYPT_TEST_ENGINE=nethttp runs the other) where it differs
	// from net/http's:
	// its parser refuses, or answers without the JSON body, what
	// net/http's refuses in another way. Nothing else changes: forwarded
	// and the plaintext checks apply as they are.
	fasthttp *engineAnswer
}

// testEngine is the reverse-mode engine the sidecars under test run:
// SIDECRYPT_TEST_ENGINE, or sidecrypt's default, fasthttp.
func testEngine() string {
	if e := os.Getenv("SIDECRYPT_TEST_ENGINE"); e != "" {
		return e
	}
	return "fasthttp"
}

type engineAnswer struct {
	status int
	code   string
}

// contentTypeNone in headers removes the default JSON Content-Type.
const contentTypeNone = "-"

// attackSecrets are the protected values the attacks carry.
var attackSecrets = []string{"123-45-6789", "Ann Example", "ann@example.com", "J45.909 asthma", "4111111111111111"}

// unprotectedDBs may hold plaintext: the attacks' replication source.
var unprotectedDBs = []string{"public"}

// runAttacks runs a class of attacks, then reads every database but the
// unprotected ones directly: none may hold a protected value.
func (st *stack) runAttacks(t *testing.T, cases []attack) {
	t.Helper()
	for _, a := range cases {
		t.Run(a.name, func(t *testing.T) {
			if a.bypass != "" && os.Getenv("SIDECRYPT_TEST_E2E_BYPASSES") == "" {
				t.Skip("BYPASS: " + a.bypass)
			}
			if a.fasthttp != nil && testEngine() == "fasthttp" {
				a.status, a.code = a.fasthttp.status, a.fasthttp.code
			}
			m := st.relay.Mark()
			status, body := st.sendAttack(t, a)
			code := errorCode(body)
			if status != a.status || code != a.code {
				t.Errorf("got %d %s\nwant %d %q", status, clip(body), a.status, a.code)
			}
			if !a.forwarded {
				st.relay.AssertNothingForwarded(t, m)
			}
			st.relay.Quiet(20 * time.Millisecond)
			if !a.unprotected {
				st.relay.AssertNoPlaintext(t, m, attackSecrets...)
			}
			if a.after != nil {
				a.after(t, st)
			}
		})
	}
	st.assertProtectedDBsClean(t)
}

// assertProtectedDBsClean reads every database of the store except the
// unprotected ones, directly, and fails on any protected value.
func (st *stack) assertProtectedDBsClean(t *testing.T) {
	t.Helper()
	var dbs []string
	for _, db := range allDBs(t, st.store.URL) {
		if !slices.Contains(unprotectedDBs, db) {
			dbs = append(dbs, db)
		}
	}
	if len(dbs) == 0 {
		return
	}
	testenv.AssertStoreHoldsNoPlaintext(t, st.store.URL, []string{"x", "state"}, dbs, attackSecrets...)
}

func allDBs(t *testing.T, storeURL string) []string {
	t.Helper()
	var dbs []string
	r := must(t, 200, "GET", storeURL+"/_all_dbs", "")
	if err := json.Unmarshal(r.body, &dbs); err != nil {
		t.Fatalf("_all_dbs: %v", err)
	}
	return dbs
}

func (st *stack) sendAttack(t *testing.T, a attack) (int, []byte) {
	t.Helper()
	addr := strings.TrimPrefix(st.sc.url, "http://")
	if a.raw != "" {
		raw := strings.ReplaceAll(a.raw, "{{host}}", addr)
		n := a.responses
		if n == 0 {
			n = 1
		}
		resps := rawExchange(t, addr, raw, n)
		if len(resps) < n {
			if len(resps) == 0 {
				return 0, nil
			}
		}
		last := resps[len(resps)-1]
		return last.status, last.body
	}
	req, err := http.NewRequest(a.method, st.sc.url+a.path, nil)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	if a.body != "" {
		req.Body = io.NopCloser(strings.NewReader(a.body))
		req.ContentLength = int64(len(a.body))
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	for i := 0; i+1 < len(a.headers); i += 2 {
		k, v := a.headers[i], a.headers[i+1]
		switch {
		case k == "Content-Type" && v == contentTypeNone:
			req.Header.Del(k)
		case k == "Host":
			req.Host = v
		default:
			req.Header.Add(k, v)
		}
	}
	if vals := req.Header.Values("Content-Type"); len(vals) > 1 && vals[0] == "application/json" && a.body != "" {
		// An explicit Content-Type replaces the default one, unless
		// the case sets it twice on purpose.
		if n := countHeader(a.headers, "Content-Type"); n == 1 {
			req.Header["Content-Type"] = vals[1:]
		}
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", a.method, a.path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func countHeader(pairs []string, name string) int {
	n := 0
	for i := 0; i+1 < len(pairs); i += 2 {
		if http.CanonicalHeaderKey(pairs[i]) == http.CanonicalHeaderKey(name) {
			n++
		}
	}
	return n
}

type rawResponse struct {
	status int
	body   []byte
}

// rawExchange writes raw on a new TCP connection and reads up to n
// responses (fewer if the connection closes). HEAD responses are read as
// bodiless when the raw text's request of that index says HEAD.
func rawExchange(t *testing.T, addr, raw string, n int) []rawResponse {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatalf("write: %v", err)
	}
	methods := requestMethods(raw)
	br := bufio.NewReader(c)
	var out []rawResponse
	for i := 0; i < n; i++ {
		var req *http.Request
		if i < len(methods) {
			req = &http.Request{Method: methods[i]}
		}
		resp, err := http.ReadResponse(br, req)
		for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 {
			resp, err = http.ReadResponse(br, req) // 100 Continue
		}
		if err != nil {
			break
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out = append(out, rawResponse{resp.StatusCode, b})
	}
	return out
}

// requestMethods returns the method of each request line in a raw
// pipeline (a line after a blank line or at the start that looks like
// "METHOD target HTTP/x").
func requestMethods(raw string) []string {
	var out []string
	for _, line := range strings.Split(raw, "\n") {
		f := strings.Fields(strings.TrimSpace(line))
		if len(f) == 3 && strings.HasPrefix(f[2], "HTTP/") {
			out = append(out, f[0])
		}
	}
	return out
}

// crlf turns "\n" into "\r\n" for raw HTTP text written readably.
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// rawPut builds a raw PUT of a JSON body with the given extra header
// lines.
func rawPut(path, body string, extra ...string) string {
	var b bytes.Buffer
	b.WriteString("PUT " + path + " HTTP/1.1\r\nHost: {{host}}\r\nContent-Type: application/json\r\n")
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("Content-Length: " + itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body)
	return b.String()
}

func itoa(n int) string { return strconv.Itoa(n) }
