package proxy

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestFastEngineHeadersAsNetHTTP: the fasthttp engine builds the
// pipeline's header maps without one allocation per field (fillHeader,
// canonicalHeaderName, countRawHeader, the remote address kept per
// connection). Whatever the fields' number, order, repetition, spelling
// and length, the upstream must get the header block the net/http
// engine sends, byte for byte, and the client the same decrypted
// response header.
func TestFastEngineHeadersAsNetHTTP(t *testing.T) {
	long := strings.Repeat("v", 3000) // past the engine's stack buffer
	var many []string
	for i := range 24 { // past the engine's stack array of fields
		many = append(many, fmt.Sprintf("x-field-%02d: %d", 23-i, i))
	}
	reqHeaders := append([]string{
		"Accept: application/json",
		"X-Dup: first",
		"x-lower-case-name: lower",
		"X-Dup: second",
		"Authorization: Basic dTpw",
		"X-Long: " + long,
		"X-Dup: third",
		"X-Empty:",
		"Content-Type: application/json",
		"Cookie: a=1; b=\"quoted\"",
		"Cookie: c=3",
		"X-Forwarded-For: 10.9.9.9",
		"User-Agent: headers-test",
	}, many...)
	doc := feDoc(0)
	respond := func(c net.Conn, s feSeen) bool {
		body := `{"ok":true,"id":"x","rev":"1-a"}`
		if s.Method == http.MethodGet {
			body = string(s.Body)
		}
		var h strings.Builder
		h.WriteString("HTTP/1.1 200 OK\r\n")
		h.WriteString("X-Resp-Dup: one\r\nContent-Type: application/json\r\nx-resp-lower: l\r\nX-Resp-Dup: two\r\n")
		h.WriteString("X-Resp-Long: " + long + "\r\nEtag: \"1-a\"\r\nX-Resp-Dup: three\r\n")
		for i := range 20 {
			fmt.Fprintf(&h, "X-Resp-%02d: %d\r\n", 19-i, i)
		}
		fmt.Fprintf(&h, "Content-Length: %d\r\n\r\n%s", len(body), body)
		c.Write([]byte(h.String()))
		return true
	}
	type result struct {
		upHead []string // the upstream's header lines, request line first
		upBody []byte
		resp   http.Header
		body   string
	}
	results := map[string][]result{}
	for _, engine := range feEngines {
		up := startFeUpstream(t, nil)
		tp := startFeProxy(t, engine, up)
		var sealedDoc []byte
		for _, req := range []struct{ method, path, body string }{
			{"PUT", "/clinic/p1", doc}, // sealed: a protected write
			{"PUT", "/other/p1", doc},  // passed through
			{"GET", "/clinic/p1", ""},  // decrypted: the upstream echoes the sealed document
		} {
			m := up.mark()
			raw := req.method + " " + req.path + " HTTP/1.1\r\nHost: sidecar.test\r\n" + strings.Join(reqHeaders, "\r\n") + "\r\n"
			if req.body != "" {
				raw += fmt.Sprintf("Content-Length: %d\r\n", len(req.body))
			}
			raw += "\r\n" + req.body
			if req.method == http.MethodGet {
				up.mu.Lock()
				up.respond = func(c net.Conn, s feSeen) bool {
					s.Body = sealedDoc
					return respond(c, s)
				}
				up.mu.Unlock()
			} else {
				up.mu.Lock()
				up.respond = respond
				up.mu.Unlock()
			}
			fc := feDial(t, tp)
			fc.send(raw)
			r, ok := fc.read(req.method)
			if !ok || r.Status != http.StatusOK {
				t.Fatalf("%s %s %s: status %d (answered %v) %s", engine, req.method, req.path, r.Status, ok, r.Body)
			}
			seen := up.since(m)
			if len(seen) != 1 {
				t.Fatalf("%s %s %s: the upstream framed %d requests", engine, req.method, req.path, len(seen))
			}
			if req.method == http.MethodPut && req.path == "/clinic/p1" {
				sealedDoc = seen[0].Body
				if !sealed(sealedDoc) || bytes.Contains(sealedDoc, []byte(feMarker)) {
					t.Fatalf("%s: the protected write was not sealed: %s", engine, sealedDoc)
				}
			}
			lines := strings.Split(strings.TrimSuffix(string(seen[0].RawHead), "\r\n\r\n"), "\r\n")
			for j, l := range lines {
				if l == "Host: "+up.URL.Host { // each engine has its own upstream
					lines[j] = "Host: upstream"
				}
			}
			results[engine] = append(results[engine], result{lines, seen[0].Body, r.Header, r.Body})
		}
	}
	net, fast := results[EngineNetHTTP], results[EngineFastHTTP]
	for i := range net {
		n, f := net[i], fast[i]
		if strings.Join(n.upHead, "\n") != strings.Join(f.upHead, "\n") {
			t.Errorf("request %d: the upstream's header differs between engines:\n%s", i, lineDiff(n.upHead, f.upHead))
		}
		if i == 1 && !bytes.Equal(n.upBody, f.upBody) {
			t.Errorf("request %d: the upstream's body differs between engines", i)
		}
		for _, h := range []http.Header{n.resp, f.resp} {
			h.Del("Date")
		}
		if fmt.Sprint(n.resp) != fmt.Sprint(f.resp) {
			var nl, fl []string
			for k, v := range n.resp {
				nl = append(nl, fmt.Sprintf("%s: %q", k, v))
			}
			for k, v := range f.resp {
				fl = append(fl, fmt.Sprintf("%s: %q", k, v))
			}
			slices.Sort(nl)
			slices.Sort(fl)
			t.Errorf("request %d: the client's response header differs between engines:\n%s", i, lineDiff(nl, fl))
		}
		if n.body != f.body {
			t.Errorf("request %d: the client's body differs between engines:\nnethttp:  %s\nfasthttp: %s", i, n.body, f.body)
		}
	}
	if got := fast[2].body; !strings.Contains(got, feMarker) {
		t.Errorf("the decrypted read was not opened on the fasthttp engine: %s", got)
	}
	for _, want := range []string{"X-Dup: first", "X-Dup: second", "X-Dup: third", "X-Long: " + long, "X-Field-00: 23", "X-Lower-Case-Name: lower"} {
		found := false
		for _, l := range fast[0].upHead {
			found = found || l == want
		}
		if !found {
			t.Errorf("the fasthttp engine did not forward %.40q", want)
		}
	}
	if v := fast[2].resp.Values("X-Resp-Dup"); fmt.Sprint(v) != "[one two three]" {
		t.Errorf("the decrypted response's repeated field: %q", v)
	}
}

// lineDiff lists the lines only one engine had, each cut to 80 bytes.
func lineDiff(nethttp, fasthttp []string) string {
	var b strings.Builder
	for _, side := range []struct {
		name      string
		have, not []string
	}{{"only nethttp", nethttp, fasthttp}, {"only fasthttp", fasthttp, nethttp}} {
		for _, l := range side.have {
			if !slices.Contains(side.not, l) {
				fmt.Fprintf(&b, "%s: %.80q\n", side.name, l)
			}
		}
	}
	return b.String()
}
