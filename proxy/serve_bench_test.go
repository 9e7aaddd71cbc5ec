package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/sidecrypt/sidecrypt/rules"
)

// This file measures Proxy.ServeHTTP in process: the pipeline with the
// rules that ship (a version 2 CouchDB rule file, the one the load test's
// sidecrypt target uses), httputil.ReverseProxy and the upstream
// Transport, against a hand-written upstream on loopback that answers
// from memory and allocates nothing per request, so that allocs/op is the
// proxy's own. The front side (the net/http server) is left out: the load
// test measures it (docs/BENCHMARKS.md).
//
//	go test -run '^$' -bench BenchmarkServeHTTP -benchmem ./proxy/
//
// allocs/op must not grow with the number of documents in a body
// (BenchmarkServeHTTP/bulk-N and all_docs-N).

// benchRulesV2 is loadtest.RulesV2For("clinic").
const benchRulesV2 = `version: 2
datastore: couchdb
collections:
  - name: clinic
    fields:
      ssn:         {key: pii}
      card.number: {key: pii}
      diagnosis:   {key: pii}
      email:       {key: contact, searchable: true}
decrypt:
  keys: [pii, contact]
`

// benchPatient is a ~1 KiB document shaped like the load test's, with its
// four protected fields.
func benchPatient(i int) string {
	d := fmt.Sprintf(`{"type":"patient","name":{"given":"Ada","family":"Lovelace"},"email":"ada.lovelace.%d@example.org",`+
		`"ssn":"078-05-%04d","birth_date":"1915-12-10","phone":"+1-555-010-%04d",`+
		`"address":{"street":"12 St James's Square","city":"London","postcode":"01234","country":"GB"},`+
		`"card":{"number":"4111111111111111","expiry":"12/29","holder":"Ada Lovelace"},`+
		`"diagnosis":{"code":"J45","text":"Asthma"},"note":"`, i, i%10000, i%10000)
	pad := 1024 - len(d) - 2
	return d + strings.Repeat("n", pad) + `"}`
}

// memUpstream is a minimal HTTP/1.1 server on loopback answering from a
// table of canned responses by request line; it remembers the last body
// received per request line, so that a benchmark can read back what the
// proxy stored.
type memUpstream struct {
	ln   net.Listener
	mu   sync.Mutex
	resp map[string][]byte // "METHOD /path?query" -> full response
	seen map[string][]byte // request line -> last body
}

func startMemUpstream(b testing.TB) *memUpstream {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	u := &memUpstream{ln: ln, resp: map[string][]byte{}, seen: map[string][]byte{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go u.serve(c)
		}
	}()
	b.Cleanup(func() { ln.Close() })
	return u
}

func (u *memUpstream) answer(line, contentType, body string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.resp[line] = fmt.Appendf(nil, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s", contentType, len(body), body)
}

func (u *memUpstream) received(line string) []byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[line]
}

func (u *memUpstream) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 64<<10)
	var body []byte
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return
		}
		reqLine := string(bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r")))
		method, rest, _ := strings.Cut(reqLine, " ")
		target, _, _ := strings.Cut(rest, " ")
		key := method + " " + target
		n := 0
		for {
			h, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(h) <= 2 {
				break
			}
			if k, v, ok := bytes.Cut(h, []byte(":")); ok && bytes.EqualFold(k, []byte("Content-Length")) {
				n, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
			}
		}
		if cap(body) < n {
			body = make([]byte, n)
		}
		body = body[:n]
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
		u.mu.Lock()
		resp := u.resp[key]
		if n > 0 {
			if _, ok := u.seen[key]; !ok || len(u.seen) < 64 {
				u.seen[key] = bytes.Clone(body)
			}
		}
		u.mu.Unlock()
		if resp == nil {
			resp = []byte("HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
		}
		if _, err := c.Write(resp); err != nil {
			return
		}
	}
}

// discardWriter is a reusable http.ResponseWriter that keeps nothing.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(s int)   { w.status = s }
func (w *discardWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = 200
	}
	w.n += len(b)
	return len(b), nil
}
func (w *discardWriter) Flush() {}

func (w *discardWriter) reset() {
	clear(w.h)
	w.status, w.n = 0, 0
}

// benchCase is one kind of request.
type benchCase struct {
	name, method, target string
	body                 []byte
}

func (bc benchCase) request() *http.Request {
	r, _ := http.NewRequestWithContext(context.Background(), bc.method, "http://sidecar"+bc.target, nil)
	r.RequestURI = bc.target
	r.RemoteAddr = "127.0.0.1:40000"
	r.Header.Set("Accept", "application/json")
	r.Header.Set("User-Agent", "bench")
	if bc.body != nil {
		r.Header.Set("Content-Type", "application/json")
		r.ContentLength = int64(len(bc.body))
		r.Body = io.NopCloser(bytes.NewReader(bc.body))
	}
	return r
}

// benchProxy builds a proxy with the v2 rule file (passthrough: the rules
// protect a database the traffic never uses) in front of a memUpstream.
func benchProxy(b testing.TB, protect string) (*Proxy, *memUpstream) {
	plan, diags, err := rules.Compile("bench", []byte(strings.Replace(benchRulesV2, "name: clinic", "name: "+protect, 1)))
	if err != nil {
		b.Fatalf("rules: %v %v", err, diags)
	}
	up := startMemUpstream(b)
	p, err := New(Config{
		Upstream: mustURL(b, "http://"+up.ln.Addr().String()),
		Rules:    rules.Static(plan),
		Keys:     testKeyring(b),
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p, up
}

func serveOnce(b testing.TB, p *Proxy, w *discardWriter, bc benchCase) {
	w.reset()
	p.ServeHTTP(w, bc.request())
	if w.status != http.StatusOK && w.status != http.StatusCreated {
		b.Fatalf("%s %s: status %d", bc.method, bc.target, w.status)
	}
}

func bulkBody(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"docs":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(benchPatient(i))
	}
	b.WriteString("]}")
	return b.Bytes()
}

// BenchmarkServeHTTP: pass-through (no rule matches the database),
// a 1 KiB document write with its 4 fields sealed, a read of it with the
// fields opened, and _bulk_docs / _all_docs with 1, 10 and 100 documents
// (allocs/op must not grow with the count).
func BenchmarkServeHTTP(b *testing.B) {
	w := &discardWriter{h: http.Header{}}
	doc := []byte(benchPatient(1))
	okWrite := `{"ok":true,"id":"p1","rev":"1-a"}`

	b.Run("passthrough", func(b *testing.B) {
		p, up := benchProxy(b, "not-this-database")
		up.answer("POST /clinic", "application/json", okWrite)
		up.answer("GET /clinic/p1", "application/json", string(doc))
		for _, bc := range []benchCase{
			{"write-1KiB", "POST", "/clinic", doc},
			{"read-1KiB", "GET", "/clinic/p1", nil},
		} {
			b.Run(bc.name, func(b *testing.B) { runBench(b, p, w, bc) })
		}
	})

	p, up := benchProxy(b, "clinic")
	up.answer("POST /clinic", "application/json", okWrite)
	serveOnce(b, p, w, benchCase{"", "POST", "/clinic", doc})
	sealed := up.received("POST /clinic")
	if bytes.Contains(sealed, []byte("078-05-")) || !bytes.Contains(sealed, []byte(`"ssn":"sc`)) {
		b.Fatalf("the write was not sealed: %s", sealed)
	}
	up.answer("GET /clinic/p1", "application/json", string(sealed))
	b.Run("encrypt/write-1KiB-4-fields", func(b *testing.B) { runBench(b, p, w, benchCase{"", "POST", "/clinic", doc}) })
	b.Run("decrypt/read-1KiB-4-fields", func(b *testing.B) {
		runBench(b, p, w, benchCase{"", "GET", "/clinic/p1", nil})
		if w.n >= len(sealed) {
			b.Fatalf("the read was not opened: %d bytes out of %d", w.n, len(sealed))
		}
	})
	for _, n := range []int{1, 10, 100} {
		body := bulkBody(n)
		var res, rows strings.Builder
		res.WriteString("[")
		rows.WriteString(`{"total_rows":` + strconv.Itoa(n) + `,"offset":0,"rows":[`)
		for i := range n {
			if i > 0 {
				res.WriteString(",")
				rows.WriteString(",")
			}
			fmt.Fprintf(&res, `{"ok":true,"id":"p%d","rev":"1-a"}`, i)
			fmt.Fprintf(&rows, `{"id":"p%d","key":"p%d","value":{"rev":"1-a"},"doc":%s}`, i, i, sealed)
		}
		res.WriteString("]")
		rows.WriteString("]}")
		up.answer("POST /clinic/_bulk_docs", "application/json", res.String())
		up.answer("GET /clinic/_all_docs?include_docs=true", "application/json", rows.String())
		b.Run(fmt.Sprintf("encrypt/bulk-%d", n), func(b *testing.B) {
			runBench(b, p, w, benchCase{"", "POST", "/clinic/_bulk_docs", body})
		})
		b.Run(fmt.Sprintf("decrypt/all_docs-%d", n), func(b *testing.B) {
			runBench(b, p, w, benchCase{"", "GET", "/clinic/_all_docs?include_docs=true", nil})
		})
	}
	b.Run("query/find-email", func(b *testing.B) {
		up.answer("POST /clinic/_find", "application/json", `{"docs":[]}`)
		runBench(b, p, w, benchCase{"", "POST", "/clinic/_find", []byte(`{"selector":{"email":"ada.lovelace.1@example.org"},"limit":10}`)})
	})
}

func runBench(b *testing.B, p *Proxy, w *discardWriter, bc benchCase) {
	serveOnce(b, p, w, bc) // warm the pools and the connection
	b.ReportAllocs()
	if bc.body != nil {
		b.SetBytes(int64(len(bc.body)))
	}
	b.ResetTimer()
	for b.Loop() {
		serveOnce(b, p, w, bc)
	}
}
