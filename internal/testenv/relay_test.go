package testenv

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"unicode/utf16"
)

// failRecorder is a testing.TB that records failures instead of failing.
type failRecorder struct {
	testing.TB
	mu     sync.Mutex
	failed []string
}

func (f *failRecorder) Helper() {}
func (f *failRecorder) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = append(f.failed, fmt.Sprintf(format, args...))
}

func echoServer(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "%s %s %d", r.Method, r.URL.RequestURI(), len(b))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestRelayRecordsBothDirections(t *testing.T) {
	srv := echoServer(t)
	r := StartRelay(t, srv.URL)
	if !strings.HasPrefix(r.Addr, "127.0.0.1:") {
		t.Fatalf("relay listens on %s, want loopback", r.Addr)
	}
	start := r.Mark()
	resp, err := http.Post(r.URL+"/clinic/doc?x=1", "application/json", strings.NewReader(`{"ssn":"123-45-6789"}`))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != "POST /clinic/doc?x=1 21" {
		t.Fatalf("through the relay: %q", got)
	}
	rec := r.Since(start)
	if len(rec.ToStore) != 1 || !bytes.Contains(rec.ToStore[0], []byte(`{"ssn":"123-45-6789"}`)) ||
		!bytes.HasPrefix(rec.ToStore[0], []byte("POST /clinic/doc?x=1 HTTP/1.1\r\n")) {
		t.Fatalf("to store: %q", rec.ToStore)
	}
	if !bytes.Contains(rec.FromStore[0], []byte("POST /clinic/doc?x=1 21")) {
		t.Fatalf("from store: %q", rec.FromStore)
	}
	reqs := r.Requests(start)
	if len(reqs) != 1 || reqs[0].Method != "POST" || reqs[0].Target != "/clinic/doc?x=1" || string(reqs[0].Body) != `{"ssn":"123-45-6789"}` {
		t.Fatalf("parsed: %+v", reqs)
	}

	// The assertions: the secret is found, and a mark after it sees
	// nothing; AssertNothingForwarded notices any byte.
	rt := &failRecorder{TB: t}
	r.AssertNoPlaintext(rt, start, "123-45-6789")
	if len(rt.failed) != 1 || !strings.Contains(rt.failed[0], `"123-45-6789" found raw`) {
		t.Fatalf("AssertNoPlaintext: %q", rt.failed)
	}
	after := r.Mark()
	rt = &failRecorder{TB: t}
	r.AssertNoPlaintext(rt, after, "123-45-6789")
	r.AssertNothingForwarded(rt, after)
	if len(rt.failed) != 0 {
		t.Fatalf("nothing was sent after the mark: %q", rt.failed)
	}
	resp, err = http.Get(r.URL + "/other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	r.AssertNothingForwarded(rt, after)
	if len(rt.failed) != 1 || !strings.Contains(rt.failed[0], "GET /other") {
		t.Fatalf("AssertNothingForwarded: %q", rt.failed)
	}
}

// TestRelayConnections: several connections at once, each recorded on
// its own, and a dropped connection leaves its record.
func TestRelayConnections(t *testing.T) {
	srv := echoServer(t)
	r := StartRelay(t, srv.URL)
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", r.Addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			fmt.Fprintf(c, "GET /conn-%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", i)
			b, _ := io.ReadAll(c)
			if !bytes.Contains(b, []byte(fmt.Sprintf("GET /conn-%d 0", i))) {
				t.Errorf("connection %d got %q", i, b)
			}
		}()
	}
	wg.Wait()
	rec := r.Received()
	if len(rec.ToStore) != 5 {
		t.Fatalf("%d connections recorded, want 5", len(rec.ToStore))
	}
	seen := map[string]bool{}
	for _, b := range rec.ToStore {
		seen[strings.Fields(string(b))[1]] = true
	}
	if len(seen) != 5 {
		t.Fatalf("each connection's bytes apart: %v", seen)
	}
	r.DropConnections()
	r.Close()
	if r.Received().Len() == 0 {
		t.Fatal("the record must outlive the relay")
	}
}

func TestFindPlaintext(t *testing.T) {
	const secret = "Ann Example 123"
	b64 := func(prefix string, e *base64.Encoding) string {
		return e.EncodeToString([]byte(prefix + secret + " and more"))
	}
	u16 := func(bigEndian bool) string {
		var b []byte
		for _, c := range utf16.Encode([]rune(secret)) {
			if bigEndian {
				b = append(b, byte(c>>8), byte(c))
			} else {
				b = append(b, byte(c), byte(c>>8))
			}
		}
		return string(b)
	}
	for _, tc := range []struct {
		name, data, enc string // enc "" = not found
	}{
		{"raw", `{"name":"Ann Example 123"}`, "raw"},
		{"json escaped, some", `{"name":"\u0041nn Ex\u0061mple 123"}`, "json-escaped"},
		{"json escaped, all", `"\u0041\u006E\u006e\u0020\u0045\u0078\u0061\u006d\u0070\u006c\u0065\u0020\u0031\u0032\u0033"`, "json-escaped"},
		{"percent", `GET /db/_design/v/_view/x?key=%22Ann%20Example%20123%22`, "percent-encoded"},
		{"percent, lower-case hex, every byte", "key=" + strings.ToLower(pctAll(secret)), "percent-encoded"},
		{"form", `key=Ann+Example+123`, "form-encoded"},
		{"percent twice", `key=Ann%2520Example%2520123`, "percent-encoded inside percent-encoded"},
		{"json escape inside percent", `key=%22%5Cu0041nn%20Example%20123%22`, "json-escaped inside percent-encoded"},
		{"base64 aligned", b64("", base64.StdEncoding), "base64"},
		{"base64 offset 1", b64("x", base64.StdEncoding), "base64"},
		{"base64 offset 2", b64("xy", base64.StdEncoding), "base64"},
		{"base64url", b64("?>", base64.URLEncoding), "base64"},
		{"utf-16le", "\xff\xfe" + u16(false), "utf-16le"},
		{"utf-16be", "\xfe\xff" + u16(true), "utf-16be"},
		{"other text", `{"name":"Ann Exampl3 123","x":"sc1.AQFzA3BpaQAAAAEabc"}`, ""},
		{"base64 of something else", base64.StdEncoding.EncodeToString([]byte("Ann Example 12")), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaks := FindPlaintext("test", []byte(tc.data), []string{secret, "not-there-at-all"})
			if tc.enc == "" {
				if len(leaks) != 0 {
					t.Fatalf("false positive: %v", leaks)
				}
				return
			}
			for _, l := range leaks {
				if l.Secret != secret {
					t.Fatalf("wrong secret: %v", l)
				}
				if strings.HasPrefix(l.Encoding, tc.enc) || (tc.enc == "base64" && strings.HasPrefix(l.Encoding, "base64")) {
					return
				}
			}
			t.Fatalf("not found as %s: %v", tc.enc, leaks)
		})
	}
}

func pctAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}

// TestRelayDecodesBodies: a secret split across chunks, or compressed,
// is found in the request's decoded body.
func TestRelayDecodesBodies(t *testing.T) {
	srv := echoServer(t)
	r := StartRelay(t, srv.URL)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(`{"ssn":"987-65-4321"}`))
	zw.Close()

	c, err := net.Dial("tcp", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	send := func(raw string) {
		t.Helper()
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	send("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"e\r\n{\"name\":\"Bob S\r\n" + "c\r\nample Smith\"\r\n" + "1\r\n}\r\n0\r\n\r\n")
	send(fmt.Sprintf("POST /b HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s", gz.Len(), gz.Bytes()))

	reqs := r.Requests(Mark{})
	if len(reqs) != 2 || !reqs[0].Chunked || string(reqs[0].Body) != `{"name":"Bob Sample Smith"}` || string(reqs[1].Decoded) != `{"ssn":"987-65-4321"}` {
		t.Fatalf("parsed: %+v", reqs)
	}
	leaks := r.Leaks(Mark{}, []string{"Bob Sample Smith", "987-65-4321"})
	found := map[string]bool{}
	for _, l := range leaks {
		found[l.Secret] = true
	}
	if !found["Bob Sample Smith"] || !found["987-65-4321"] {
		t.Fatalf("leaks: %v", leaks)
	}
}

// TestStoreDump reads a real pouchdb-server directly: current, deleted,
// conflicting and earlier revisions, local documents and attachments.
func TestStoreDump(t *testing.T) {
	if testing.Short() {
		t.Skip("starts pouchdb-server")
	}
	db := StartPouchDB(t)
	do := func(method, path, body string) string {
		t.Helper()
		req, _ := http.NewRequest(method, db.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		return string(b)
	}
	do("PUT", "/d", "")
	do("PUT", "/d/old", `{"v":"secret-old-revision"}`)
	cur := do("GET", "/d/old", "")
	rev := cur[strings.Index(cur, `"_rev":"`)+8:]
	rev = rev[:strings.IndexByte(rev, '"')]
	do("PUT", "/d/old", `{"_rev":"`+rev+`","v":"current"}`)
	do("PUT", "/d/gone", `{"v":"secret-deleted"}`)
	g := do("GET", "/d/gone", "")
	grev := g[strings.Index(g, `"_rev":"`)+8:]
	grev = grev[:strings.IndexByte(grev, '"')]
	do("DELETE", "/d/gone?rev="+url.QueryEscape(grev), "")
	do("POST", "/d/_bulk_docs", `{"new_edits":false,"docs":[
	  {"_id":"c","_rev":"1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","v":"secret-conflict-a"},
	  {"_id":"c","_rev":"1-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","v":"secret-conflict-b"}]}`)
	do("PUT", "/d/_local/l", `{"v":"secret-local"}`)
	do("PUT", "/d/att", `{"_attachments":{"a.txt":{"content_type":"text/plain","data":"`+
		base64.StdEncoding.EncodeToString([]byte("secret-attachment"))+`"}}}`)

	secrets := []string{"secret-old-revision", "secret-deleted", "secret-conflict-a", "secret-conflict-b", "secret-local", "secret-attachment"}
	dump := StoreDump(t, db.URL, []string{"l"})
	found := map[string]bool{}
	for _, l := range FindPlaintext("dump", dump, secrets) {
		found[l.Secret] = true
	}
	for _, s := range secrets {
		if !found[s] {
			t.Errorf("the dump misses %s", s)
		}
	}
	rt := &failRecorder{TB: t}
	AssertStoreHoldsNoPlaintext(rt, db.URL, nil, []string{"d"}, "secret-conflict-b")
	if len(rt.failed) != 1 {
		t.Fatalf("AssertStoreHoldsNoPlaintext: %q", rt.failed)
	}
}
