package testenv

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// Relay is a TCP relay on a free loopback port in front of a datastore
// that keeps every byte the datastore received through it (what the
// sidecar sent) and every byte it sent back, per connection. Tests put it
// between the sidecar and pouchdb-server to prove that no protected value
// reached the datastore, not even in a request the datastore then
// rejected, a query string, a header or a request the sidecar sent on
// its own.
//
// The relay records before it forwards, so once the application has its
// answer, every byte the datastore saw for it is in the record.
type Relay struct {
	// Addr is the relay's listening address, 127.0.0.1:PORT; URL is
	// http://Addr.
	Addr string
	URL  string

	target string
	ln     net.Listener

	mu     sync.Mutex
	conns  []*relayConn
	closed bool
	wg     sync.WaitGroup
}

// relayConn is one connection through the relay.
type relayConn struct {
	toStore   lockedBuffer // what the datastore received
	fromStore lockedBuffer // what it sent back
	client    net.Conn
	store     net.Conn
}

type lockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b = append(l.b, p...)
	l.mu.Unlock()
	return len(p), nil
}

func (l *lockedBuffer) bytesFrom(off int) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	if off > len(l.b) {
		off = len(l.b)
	}
	return bytes.Clone(l.b[off:])
}

func (l *lockedBuffer) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.b)
}

// StartRelay listens on a free loopback port and relays every connection
// to target (host:port, or a URL whose host is used). It stops when the
// test ends.
func StartRelay(t testing.TB, target string) *Relay {
	t.Helper()
	if u, err := url.Parse(target); err == nil && u.Host != "" {
		target = u.Host
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: relay: listen: %v", err)
	}
	r := &Relay{Addr: ln.Addr().String(), target: target, ln: ln}
	r.URL = "http://" + r.Addr
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.Close)
	return r
}

func (r *Relay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.DialTimeout("tcp", r.target, 10*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		rc := &relayConn{client: c, store: s}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		r.conns = append(r.conns, rc)
		r.mu.Unlock()
		r.wg.Add(2)
		// Recording happens in the Read of the tee, before the Write to
		// the other side: a byte is on record before the peer can see it.
		go func() {
			defer r.wg.Done()
			_, _ = io.Copy(s, io.TeeReader(c, &rc.toStore))
			closeWrite(s)
		}()
		go func() {
			defer r.wg.Done()
			_, _ = io.Copy(c, io.TeeReader(s, &rc.fromStore))
			closeWrite(c)
		}()
	}
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
		return
	}
	c.Close()
}

// Close stops listening, closes every relayed connection and waits for
// the relay's goroutines. The record stays readable.
func (r *Relay) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	conns := r.conns
	r.mu.Unlock()
	r.ln.Close()
	for _, c := range conns {
		c.client.Close()
		c.store.Close()
	}
	r.wg.Wait()
}

// DropConnections closes every connection open through the relay (the
// record stays), as a datastore restart would; the relay keeps listening.
func (r *Relay) DropConnections() {
	r.mu.Lock()
	conns := r.conns
	r.mu.Unlock()
	for _, c := range conns {
		c.client.Close()
		c.store.Close()
	}
}

// Mark is a position in the relay's record: Since returns what was
// recorded after it.
type Mark struct {
	toStore, fromStore []int
}

// Mark returns the current end of the record.
func (r *Relay) Mark() Mark {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := Mark{toStore: make([]int, len(r.conns)), fromStore: make([]int, len(r.conns))}
	for i, c := range r.conns {
		m.toStore[i] = c.toStore.len()
		m.fromStore[i] = c.fromStore.len()
	}
	return m
}

// Record is what went through the relay, one element per connection, in
// the order the connections were accepted.
type Record struct {
	ToStore   [][]byte // bytes the datastore received
	FromStore [][]byte // bytes it sent back
}

// Len is the number of bytes the datastore received.
func (rec Record) Len() int {
	n := 0
	for _, b := range rec.ToStore {
		n += len(b)
	}
	return n
}

// Received returns every byte recorded in both directions since the
// relay started.
func (r *Relay) Received() Record { return r.Since(Mark{}) }

// Since returns what was recorded after m; connections without new bytes
// are left out.
func (r *Relay) Since(m Mark) Record {
	r.mu.Lock()
	conns := append([]*relayConn(nil), r.conns...)
	r.mu.Unlock()
	var rec Record
	for i, c := range conns {
		to, from := 0, 0
		if i < len(m.toStore) {
			to, from = m.toStore[i], m.fromStore[i]
		}
		tb, fb := c.toStore.bytesFrom(to), c.fromStore.bytesFrom(from)
		if len(tb) == 0 && len(fb) == 0 {
			continue
		}
		rec.ToStore = append(rec.ToStore, tb)
		rec.FromStore = append(rec.FromStore, fb)
	}
	return rec
}

// Quiet waits until nothing new has been recorded for d (at most 5s), so
// that a request the sidecar might still be sending after it answered the
// application is on record too.
func (r *Relay) Quiet(d time.Duration) {
	deadline := time.Now().Add(5 * time.Second)
	last := r.Since(Mark{}).Len()
	for time.Now().Before(deadline) {
		time.Sleep(d)
		n := r.Since(Mark{}).Len()
		if n == last {
			return
		}
		last = n
	}
}

// Requests parses what the datastore received since m into HTTP requests
// (request line, headers and the decoded body), for assertions on what
// was forwarded. A stream that does not parse as HTTP ends its list.
func (r *Relay) Requests(m Mark) []StoreRequest {
	var out []StoreRequest
	for _, b := range r.Since(m).ToStore {
		out = append(out, ParseRequests(b)...)
	}
	return out
}

// StoreRequest is one request the datastore received.
type StoreRequest struct {
	Method, Target, Proto string
	Header                http.Header
	// Chunked: the body came in chunks (Transfer-Encoding: chunked).
	Chunked bool
	// Body is the body as sent (after de-chunking); Decoded is Body with
	// its Content-Encoding (gzip, deflate) undone, or Body.
	Body, Decoded []byte
}

// ParseRequests reads a stream of HTTP/1.x requests. It stops at the
// first one that does not parse; that one and the rest are left out.
func ParseRequests(stream []byte) []StoreRequest {
	var out []StoreRequest
	br := bufio.NewReader(bytes.NewReader(stream))
	for {
		if _, err := br.Peek(1); err != nil {
			return out
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			return out
		}
		body, err := io.ReadAll(req.Body)
		req.Body.Close()
		sr := StoreRequest{Method: req.Method, Target: req.RequestURI, Proto: req.Proto, Header: req.Header,
			Chunked: len(req.TransferEncoding) > 0, Body: body, Decoded: body}
		if dec, ok := decodeContent(req.Header.Get("Content-Encoding"), body); ok {
			sr.Decoded = dec
		}
		out = append(out, sr)
		if err != nil {
			return out
		}
	}
}

// decodeContent undoes a gzip or deflate content coding; ok is false for
// identity, other codings and bodies that do not decode.
func decodeContent(coding string, body []byte) ([]byte, bool) {
	var rd io.Reader
	switch strings.ToLower(strings.TrimSpace(coding)) {
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, false
		}
		rd = zr
	case "deflate":
		// RFC 9110 says zlib; some clients send raw deflate.
		if zr, err := zlib.NewReader(bytes.NewReader(body)); err == nil {
			rd = zr
		} else {
			rd = flate.NewReader(bytes.NewReader(body))
		}
	default:
		return nil, false
	}
	out, err := io.ReadAll(io.LimitReader(rd, 64<<20))
	if err != nil && len(out) == 0 {
		return nil, false
	}
	return out, true
}

// Leak is one place where a plaintext value was found.
type Leak struct {
	Secret string
	// Where: "to store, connection 2", "store dump", ...
	Where string
	// Encoding: how the value was written there ("raw", "json-escaped",
	// "percent-encoded", "base64", "utf-16le", ...).
	Encoding string
	// Context is a few bytes around the find, for the failure message.
	Context string
}

func (l Leak) String() string {
	return fmt.Sprintf("%q found %s in %s: …%s…", l.Secret, l.Encoding, l.Where, l.Context)
}

// FindPlaintext looks for each secret in data, written as is or in the
// re-encodings a datastore (or a sidecar bug) could carry it in: JSON
// string escapes (\u0041, \/, ...), percent-encoding (once or twice, '+'
// for space, either case of hex digits), those combined, base64 (standard
// and URL alphabets, at any alignment inside a longer base64 text), and
// UTF-16 (either byte order). where labels the finds.
//
// Secrets shorter than 4 bytes are refused (a panic): they would be found
// by chance in ciphertext.
func FindPlaintext(where string, data []byte, secrets []string) []Leak {
	for _, s := range secrets {
		if len(s) < 4 {
			panic("testenv: FindPlaintext: secret " + strconv.Quote(s) + " is too short to look for")
		}
	}
	var leaks []Leak
	seen := map[string]bool{}
	add := func(secret, enc string, hay []byte, at int, n int) {
		k := secret + "\x00" + enc
		if seen[k] {
			return
		}
		seen[k] = true
		leaks = append(leaks, Leak{Secret: secret, Where: where, Encoding: enc, Context: around(hay, at, n)})
	}
	for _, v := range views(data) {
		for _, s := range secrets {
			if i := bytes.Index(v.data, []byte(s)); i >= 0 {
				add(s, v.name, v.data, i, len(s))
			}
			for _, n := range needles(s) {
				if i := bytes.Index(v.data, n.data); i >= 0 {
					add(s, joinEnc(v.name, n.name), v.data, i, len(n.data))
				}
			}
		}
	}
	return leaks
}

func joinEnc(view, needle string) string {
	if view == "raw" {
		return needle
	}
	return view + ", then " + needle
}

func around(b []byte, at, n int) string {
	lo, hi := max(at-40, 0), min(at+n+40, len(b))
	return strconv.Quote(string(b[lo:hi]))
}

type named struct {
	name string
	data []byte
}

// views are the data as stored and the data with each decoding undone,
// once and twice in any order.
func views(data []byte) []named {
	decoders := []struct {
		name string
		fn   func([]byte) []byte
	}{
		{"json-escaped", jsonUnescape},
		{"percent-encoded", func(b []byte) []byte { return percentDecode(b, false) }},
		{"form-encoded", func(b []byte) []byte { return percentDecode(b, true) }},
	}
	out := []named{{"raw", data}}
	have := map[string]bool{string(data): true}
	for round := 0; round < 2; round++ {
		for _, v := range out {
			if round == 1 && !strings.Contains(v.name, "encoded") && !strings.Contains(v.name, "escaped") {
				continue
			}
			for _, d := range decoders {
				b := d.fn(v.data)
				if have[string(b)] {
					continue
				}
				have[string(b)] = true
				name := d.name
				if v.name != "raw" {
					name = d.name + " inside " + v.name
				}
				out = append(out, named{name, b})
			}
		}
	}
	return out
}

// needles are re-encodings of s that are searched for as they are.
func needles(s string) []named {
	var out []named
	u := utf16.Encode([]rune(s))
	le, be := make([]byte, 2*len(u)), make([]byte, 2*len(u))
	for i, c := range u {
		le[2*i], le[2*i+1] = byte(c), byte(c>>8)
		be[2*i], be[2*i+1] = byte(c>>8), byte(c)
	}
	out = append(out, named{"utf-16le", le}, named{"utf-16be", be})
	for _, enc := range []struct {
		name string
		e    *base64.Encoding
	}{{"base64", base64.StdEncoding}, {"base64url", base64.URLEncoding}} {
		for _, core := range base64Cores(enc.e, []byte(s)) {
			out = append(out, named{enc.name, core})
		}
	}
	return out
}

// base64Cores returns, for each of the three alignments at which s can
// start inside a longer base64 text, the characters that encode only
// bytes of s. Any base64 text containing s contains one of them.
func base64Cores(e *base64.Encoding, s []byte) [][]byte {
	var out [][]byte
	for pad := 0; pad < 3; pad++ {
		buf := append(make([]byte, pad), s...)
		enc := e.WithPadding(base64.NoPadding).EncodeToString(buf)
		// Characters 0..start-1 depend on the padding bytes; the last
		// character depends on what follows s unless s ends on a group.
		start := (pad*8 + 5) / 6
		end := (len(buf) * 8) / 6
		if end-start < 6 {
			continue // too short to tell from chance
		}
		out = append(out, []byte(enc[start:end]))
	}
	return out
}

// jsonUnescape undoes JSON string escapes wherever they occur.
func jsonUnescape(b []byte) []byte {
	if bytes.IndexByte(b, '\\') < 0 {
		return b
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' || i+1 >= len(b) {
			out = append(out, b[i])
			continue
		}
		c := b[i+1]
		switch c {
		case '"', '\\', '/':
			out = append(out, c)
			i++
		case 'b':
			out = append(out, '\b')
			i++
		case 'f':
			out = append(out, '\f')
			i++
		case 'n':
			out = append(out, '\n')
			i++
		case 'r':
			out = append(out, '\r')
			i++
		case 't':
			out = append(out, '\t')
			i++
		case 'u':
			r, n := hexRune(b[i+2:])
			if n == 0 {
				out = append(out, b[i])
				continue
			}
			consumed := 2 + n
			if utf16.IsSurrogate(r) && i+consumed+1 < len(b) && b[i+consumed] == '\\' && b[i+consumed+1] == 'u' {
				if r2, n2 := hexRune(b[i+consumed+2:]); n2 > 0 {
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						r = dec
						consumed += 2 + n2
					}
				}
			}
			out = utf8.AppendRune(out, r)
			i += consumed - 1
		default:
			out = append(out, b[i])
		}
	}
	return out
}

func hexRune(b []byte) (rune, int) {
	if len(b) < 4 {
		return 0, 0
	}
	v, err := strconv.ParseUint(string(b[:4]), 16, 32)
	if err != nil {
		return 0, 0
	}
	return rune(v), 4
}

// percentDecode undoes %XX escapes (either case) wherever they occur,
// leaving malformed ones; plus also turns '+' into a space.
func percentDecode(b []byte, plus bool) []byte {
	if bytes.IndexByte(b, '%') < 0 && (!plus || bytes.IndexByte(b, '+') < 0) {
		return b
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		switch {
		case b[i] == '%' && i+2 < len(b) && isHex(b[i+1]) && isHex(b[i+2]):
			v, _ := strconv.ParseUint(string(b[i+1:i+3]), 16, 8)
			out = append(out, byte(v))
			i += 2
		case plus && b[i] == '+':
			out = append(out, ' ')
		default:
			out = append(out, b[i])
		}
	}
	return out
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// Leaks returns every secret found in what the datastore received through
// the relay since m: the raw byte stream of each connection and, for the
// requests in it, their de-chunked and decompressed bodies.
func (r *Relay) Leaks(m Mark, secrets []string) []Leak {
	var leaks []Leak
	for i, b := range r.Since(m).ToStore {
		where := fmt.Sprintf("bytes the store received (connection %d)", i+1)
		leaks = append(leaks, FindPlaintext(where, b, secrets)...)
		for j, req := range ParseRequests(b) {
			if req.Chunked || !bytes.Equal(req.Body, req.Decoded) {
				w := fmt.Sprintf("decoded body of request %d (%s %s) on connection %d", j+1, req.Method, req.Target, i+1)
				leaks = append(leaks, FindPlaintext(w, req.Decoded, secrets)...)
			}
		}
	}
	return leaks
}

// AssertNoPlaintext fails the test if any secret is found, in any of the
// encodings FindPlaintext knows, in what the datastore received through
// the relay since m.
func (r *Relay) AssertNoPlaintext(t testing.TB, m Mark, secrets ...string) {
	t.Helper()
	if leaks := r.Leaks(m, secrets); len(leaks) > 0 {
		t.Errorf("plaintext reached the datastore:\n%s", joinLeaks(leaks))
	}
}

// AssertNothingForwarded fails the test if the datastore received any
// byte through the relay since m (a refused request must not be
// forwarded, not even in part).
func (r *Relay) AssertNothingForwarded(t testing.TB, m Mark) {
	t.Helper()
	r.Quiet(20 * time.Millisecond)
	if rec := r.Since(m); rec.Len() > 0 {
		var parts []string
		for _, b := range rec.ToStore {
			if len(b) > 0 {
				parts = append(parts, strconv.Quote(string(b[:min(len(b), 300)])))
			}
		}
		t.Errorf("the datastore received %d bytes that should not have been forwarded: %s", rec.Len(), strings.Join(parts, " | "))
	}
}

func joinLeaks(leaks []Leak) string {
	var b strings.Builder
	for _, l := range leaks {
		b.WriteString("  ")
		b.WriteString(l.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// StoreDump reads everything a CouchDB-API datastore at storeURL holds,
// directly, bypassing the sidecar: for each database (dbs, or every
// database from /_all_dbs when none is given) its info and security
// object, every document with every leaf revision (conflicts and
// deletions included) and every earlier revision it still keeps,
// attachments inline, local documents named in localIDs, indexes, and the
// full changes feed. The result is the concatenated raw responses, for
// FindPlaintext.
func StoreDump(t testing.TB, storeURL string, localIDs []string, dbs ...string) []byte {
	t.Helper()
	var out bytes.Buffer
	get := func(path string) []byte {
		req, _ := http.NewRequest(http.MethodGet, storeURL+path, nil)
		req.Header.Set("Accept", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("testenv: store dump: GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		out.WriteString("\n== GET " + path + " " + resp.Status + "\n")
		out.Write(b)
		return b
	}
	if len(dbs) == 0 {
		if err := json.Unmarshal(get("/_all_dbs"), &dbs); err != nil {
			t.Fatalf("testenv: store dump: _all_dbs: %v", err)
		}
	}
	for _, db := range dbs {
		p := "/" + url.PathEscape(db)
		get(p)
		get(p + "/_security")
		get(p + "/_index")
		get(p + "/_changes?style=all_docs&include_docs=true&conflicts=true&attachments=true")
		var all struct {
			Rows []struct {
				ID string `json:"id"`
			} `json:"rows"`
		}
		_ = json.Unmarshal(get(p+"/_all_docs?include_docs=true&conflicts=true&attachments=true"), &all)
		ids := map[string]bool{}
		for _, row := range all.Rows {
			ids[row.ID] = true
		}
		// Deleted documents are only in the changes feed.
		var ch struct {
			Results []struct {
				ID string `json:"id"`
			} `json:"results"`
		}
		_ = json.Unmarshal(get(p+"/_changes"), &ch)
		for _, c := range ch.Results {
			ids[c.ID] = true
		}
		for _, id := range sortedKeys(ids) {
			dp := p + "/" + escapeDocID(id)
			var leaves []struct {
				OK *struct {
					Revisions struct {
						Start int      `json:"start"`
						IDs   []string `json:"ids"`
					} `json:"_revisions"`
				} `json:"ok"`
			}
			_ = json.Unmarshal(get(dp+"?open_revs=all&revs=true&attachments=true"), &leaves)
			// Every revision on the path to each leaf whose body the
			// store still keeps (a deleted document's last body too).
			revs := map[string]bool{}
			for _, l := range leaves {
				if l.OK == nil {
					continue
				}
				for i, h := range l.OK.Revisions.IDs {
					revs[fmt.Sprintf("%d-%s", l.OK.Revisions.Start-i, h)] = true
				}
			}
			for _, rev := range sortedKeys(revs) {
				get(dp + "?attachments=true&rev=" + url.QueryEscape(rev))
			}
		}
		for _, id := range localIDs {
			get(p + "/_local/" + url.PathEscape(id))
		}
	}
	return out.Bytes()
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// escapeDocID escapes a document id for a path, keeping the "_design/"
// prefix's slash (which CouchDB expects literal).
func escapeDocID(id string) string {
	if rest, ok := strings.CutPrefix(id, "_design/"); ok {
		return "_design/" + url.PathEscape(rest)
	}
	return url.PathEscape(id)
}

// AssertStoreHoldsNoPlaintext reads the datastore directly (StoreDump)
// and fails the test if any secret is found in it, in any encoding
// FindPlaintext knows.
func AssertStoreHoldsNoPlaintext(t testing.TB, storeURL string, localIDs []string, dbs []string, secrets ...string) {
	t.Helper()
	dump := StoreDump(t, storeURL, localIDs, dbs...)
	if leaks := FindPlaintext("the datastore, read directly", dump, secrets); len(leaks) > 0 {
		t.Errorf("the datastore holds plaintext:\n%s", joinLeaks(leaks))
	}
}
