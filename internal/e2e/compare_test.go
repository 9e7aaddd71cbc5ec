package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// The comparison harness: a scenario (a func(*target)) runs once through
// the sidecar and once against a second pouchdb-server directly; every
// answer the application gets must be the same on both, once what
// legitimately differs between two stores is normalised: revision
// hashes (CouchDB and PouchDB derive them from the stored content, which
// is ciphertext on one side), sequence numbers, sizes, timestamps and
// server identities.

// target is one side of a comparison.
type target struct {
	t    *testing.T
	name string // "sidecar" or "direct"
	base string
	// revs is the latest revision seen for each document id.
	revs    map[string]string
	answers []answer
}

// answer is one request's outcome.
type answer struct {
	label   string
	request string
	status  int
	media   string
	body    []byte
	opt     options
}

// options change how an answer is compared.
type options struct {
	headers []string
	// unordered: arrays under these member names are compared as sets
	// (view rows sorted by a protected key come in ciphertext order).
	unordered []string
	// status only: the body is not compared (an error text that names
	// a server-side detail).
	statusOnly bool
	// fails: the request is expected to fail (status 400 or more) on
	// both stores; every other one must succeed, so that two equal
	// errors do not pass for a working endpoint.
	fails bool
	// echo: members whose value echoes what the request compared
	// (_explain's selector). The sidecar sealed those values, and opens
	// tokens only in documents (docs/FORMAT.md, section 7.1), so the
	// application sees them sealed there: they are left out of the
	// comparison, and must hold no protected value in plaintext.
	echo []string
}

type option func(*options)

func header(name, value string) option {
	return func(o *options) { o.headers = append(o.headers, name, value) }
}
func unordered(members ...string) option {
	return func(o *options) { o.unordered = append(o.unordered, members...) }
}
func statusOnly() option { return func(o *options) { o.statusOnly = true } }
func fails() option      { return func(o *options) { o.fails = true } }
func echo(members ...string) option {
	return func(o *options) { o.echo = append(o.echo, members...) }
}

// do sends a request and records the answer under label. It learns the
// revisions in the answer.
func (tg *target) do(label, method, path, body string, opts ...option) *answer {
	tg.t.Helper()
	var o options
	for _, f := range opts {
		f(&o)
	}
	r := send(tg.t, method, tg.base+path, body, o.headers...)
	media, _, _ := mime.ParseMediaType(r.header.Get("Content-Type"))
	a := answer{label: label, request: method + " " + path, status: r.status, media: media, body: r.body, opt: o}
	tg.learn(r.body)
	tg.answers = append(tg.answers, a)
	return &tg.answers[len(tg.answers)-1]
}

// stream reads a streaming answer (a continuous changes feed) until it
// has lines non-empty lines or the timeout passes, then hangs up. The
// lines are recorded as the answer's body.
func (tg *target) stream(label, path string, lines int, timeout time.Duration, during func(), opts ...option) *answer {
	tg.t.Helper()
	var o options
	for _, f := range opts {
		f(&o)
	}
	req, _ := http.NewRequest("GET", tg.base+path, nil)
	req.Header.Set("Accept", "application/json")
	for i := 0; i+1 < len(o.headers); i += 2 {
		req.Header.Set(o.headers[i], o.headers[i+1])
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableCompression: true}}
	resp, err := client.Do(req)
	if err != nil {
		tg.t.Fatalf("%s: GET %s: %v", tg.name, path, err)
	}
	defer resp.Body.Close()
	got := make(chan []byte, 1)
	go func() {
		var out bytes.Buffer
		sc := bufio.NewScanner(resp.Body)
		n := 0
		for n < lines && sc.Scan() {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			out.Write(sc.Bytes())
			out.WriteByte('\n')
			n++
		}
		got <- out.Bytes()
	}()
	if during != nil {
		during()
	}
	var body []byte
	select {
	case body = <-got:
	case <-time.After(timeout):
		resp.Body.Close()
		body = <-got
	}
	media, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	tg.learn(body)
	tg.answers = append(tg.answers, answer{label: label, request: "GET " + path, status: resp.StatusCode, media: media, body: body, opt: o})
	return &tg.answers[len(tg.answers)-1]
}

// rev returns the latest revision seen for id.
func (tg *target) rev(id string) string {
	tg.t.Helper()
	r, ok := tg.revs[id]
	if !ok {
		tg.t.Fatalf("%s: no revision seen for %s", tg.name, id)
	}
	return r
}

// readRev reads a document (a recorded request) and learns its current
// revision: pouchdb-server answers COPY with {"ok": true} only.
func (tg *target) readRev(path string) string {
	tg.t.Helper()
	a := tg.do("read "+path, "GET", path, "")
	var d struct {
		ID  string `json:"_id"`
		Rev string `json:"_rev"`
	}
	if err := json.Unmarshal(a.body, &d); err != nil || d.Rev == "" {
		tg.t.Fatalf("%s: GET %s: %d %s", tg.name, path, a.status, a.body)
	}
	tg.revs[d.ID] = d.Rev
	return d.Rev
}

// learn records the revisions that writes answer with ({"ok": true,
// "id": ..., "rev": ...}, alone or in a _bulk_docs list). Documents read
// back are not learnt from: an earlier revision read must not become
// "the latest".
func (tg *target) learn(body []byte) {
	for _, v := range decodeAny(body) {
		walk(v, func(m map[string]any) {
			id, _ := m["id"].(string)
			rev, _ := m["rev"].(string)
			if ok, _ := m["ok"].(bool); ok && id != "" && rev != "" {
				tg.revs[id] = rev
			}
		})
	}
}

// doWhile sends a request that waits (a long poll), runs during while it
// waits, and records the answer after during's own.
func (tg *target) doWhile(label, method, path, body string, during func(), opts ...option) {
	tg.t.Helper()
	var o options
	for _, f := range opts {
		f(&o)
	}
	done := make(chan *response, 1)
	go func() { done <- sendNoFail(method, tg.base+path, body, o.headers...) }()
	// Let the request reach the store first; the feed starts from a
	// sequence number, so a write that wins the race is still in it.
	time.Sleep(200 * time.Millisecond)
	during()
	var r *response
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		tg.t.Fatalf("%s: %s %s did not answer", tg.name, method, path)
	}
	media, _, _ := mime.ParseMediaType(r.header.Get("Content-Type"))
	tg.learn(r.body)
	tg.answers = append(tg.answers, answer{label: label, request: method + " " + path, status: r.status, media: media, body: r.body, opt: o})
}

func walk(v any, f func(map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		f(x)
		for _, e := range x {
			walk(e, f)
		}
	case []any:
		for _, e := range x {
			walk(e, f)
		}
	}
}

// decodeAny reads a body as one JSON value, as JSON lines, or as
// server-sent events with JSON data; anything else is returned as one
// string.
func decodeAny(body []byte) []any {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil
	}
	var v any
	if err := json.Unmarshal(trimmed, &v); err == nil {
		return []any{v}
	}
	var out []any
	ok := true
	for _, line := range bytes.Split(trimmed, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if rest, isData := bytes.CutPrefix(line, []byte("data:")); isData {
			line = bytes.TrimSpace(rest)
		} else if bytes.HasPrefix(line, []byte("id:")) || bytes.HasPrefix(line, []byte("event:")) || bytes.HasPrefix(line, []byte(":")) {
			continue
		}
		var e any
		if err := json.Unmarshal(line, &e); err != nil {
			ok = false
			break
		}
		out = append(out, e)
	}
	if ok {
		return out
	}
	return []any{string(body)}
}

var (
	revPattern     = regexp.MustCompile(`^([0-9]+)-[0-9a-f]{32}$`)
	revHashPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)
	uuidPattern    = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
)

// What differs between two stores given the same requests.
var (
	seqMembers  = []string{"seq", "last_seq", "update_seq", "committed_update_seq", "purge_seq", "pending"}
	sizeMembers = []string{"disk_size", "data_size", "sizes", "other", "doc_del_count_size"}
	idMembers   = []string{"instance_start_time", "uuid", "bookmark", "start_time", "end_time", "session_id"}
)

// normalize makes an answer comparable. literal revisions (those the
// scenario wrote itself, new_edits=false) are kept.
func normalize(v any, literal map[string]bool, unorderedMembers []string) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			switch {
			case slices.Contains(seqMembers, k) && e != nil:
				out[k] = "SEQ"
			case slices.Contains(sizeMembers, k):
				out[k] = "SIZE"
			case slices.Contains(idMembers, k):
				out[k] = "ID"
			case k == "ids" && x["start"] != nil:
				// _revisions: the hashes of the path to a revision
				ids, _ := e.([]any)
				norm := make([]any, len(ids))
				for i, h := range ids {
					if s, ok := h.(string); ok && literal[fmt.Sprintf("%v-%s", startMinus(x["start"], i), s)] {
						norm[i] = s
					} else {
						norm[i] = "REVHASH"
					}
				}
				out[k] = norm
			default:
				n := normalize(e, literal, unorderedMembers)
				if arr, ok := n.([]any); ok && slices.Contains(unorderedMembers, k) {
					n = sortCanonical(arr)
				}
				out[k] = n
			}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e, literal, unorderedMembers)
		}
		return out
	case string:
		if literal[x] {
			return x
		}
		if m := revPattern.FindStringSubmatch(x); m != nil {
			return m[1] + "-REV"
		}
		if revHashPattern.MatchString(x) || uuidPattern.MatchString(x) {
			return "HASH"
		}
		return x
	default:
		return x
	}
}

func startMinus(start any, i int) int {
	f, _ := start.(float64)
	return int(f) - i
}

func sortCanonical(arr []any) []any {
	keyed := make([]struct {
		k string
		v any
	}, len(arr))
	for i, e := range arr {
		b, _ := json.Marshal(e)
		keyed[i].k, keyed[i].v = string(b), e
	}
	slices.SortFunc(keyed, func(a, b struct {
		k string
		v any
	}) int {
		return strings.Compare(a.k, b.k)
	})
	out := make([]any, len(arr))
	for i := range keyed {
		out[i] = keyed[i].v
	}
	return out
}

func canonical(v any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return strings.TrimSpace(b.String())
}

// compare runs scenario on both targets (sidecar first) and fails the
// test for every answer that differs. It returns the sidecar's target
// for further checks.
func (st *stack) compare(t *testing.T, scenario func(tg *target), literalRevs ...string) *target {
	t.Helper()
	if st.direct == nil {
		t.Fatal("compare needs a stack with a direct store")
	}
	literal := map[string]bool{}
	for _, r := range literalRevs {
		literal[r] = true
		if _, h, ok := strings.Cut(r, "-"); ok {
			literal[h] = true
		}
	}
	via := &target{t: t, name: "sidecar", base: st.sc.url, revs: map[string]string{}}
	direct := &target{t: t, name: "direct", base: st.direct.URL, revs: map[string]string{}}
	scenario(via)
	scenario(direct)
	if len(via.answers) != len(direct.answers) {
		t.Fatalf("the scenario made %d requests through the sidecar and %d directly", len(via.answers), len(direct.answers))
	}
	for i := range via.answers {
		a, b := via.answers[i], direct.answers[i]
		if os.Getenv("SIDECRYPT_TEST_E2E_DUMP") != "" {
			t.Logf("%s (%s)\n  sidecar %d: %s\n  direct  %d: %s", a.label, a.request, a.status, clip(a.body), b.status, clip(b.body))
		}
		if ok := a.status < 400; ok == a.opt.fails {
			t.Errorf("%s (%s): status %d through the sidecar (expected to %s)\n  %s", a.label, a.request, a.status, map[bool]string{true: "fail", false: "succeed"}[a.opt.fails], clip(a.body))
		}
		if a.status != b.status {
			t.Errorf("%s (%s): status %d through the sidecar, %d directly\n  sidecar: %s\n  direct:  %s", a.label, a.request, a.status, b.status, clip(a.body), clip(b.body))
			continue
		}
		if a.media != b.media && a.status < 300 {
			t.Errorf("%s (%s): Content-Type %q through the sidecar, %q directly", a.label, a.request, a.media, b.media)
		}
		if a.opt.statusOnly {
			continue
		}
		ab, bb := a.body, b.body
		if len(a.opt.echo) > 0 {
			for _, m := range a.opt.echo {
				for _, secret := range patientSecrets {
					if strings.Contains(string(echoed(ab, m)), secret) {
						t.Errorf("%s (%s): the %s echo holds %q in plaintext: %s", a.label, a.request, m, secret, clip(ab))
					}
				}
			}
			ab, bb = blankMembers(ab, a.opt.echo), blankMembers(bb, a.opt.echo)
		}
		na, nb := canonical(normalizeAll(ab, literal, a.opt.unordered)), canonical(normalizeAll(bb, literal, b.opt.unordered))
		if na != nb {
			t.Errorf("%s (%s): the application gets a different answer through the sidecar\n  sidecar: %s\n  direct:  %s", a.label, a.request, clip([]byte(na)), clip([]byte(nb)))
		}
	}
	return via
}

// echoed returns the JSON of every value of the member called name in
// body, at any depth.
func echoed(body []byte, name string) []byte {
	var out []byte
	for _, v := range decodeAny(body) {
		walk(v, func(m map[string]any) {
			if e, ok := m[name]; ok {
				b, _ := json.Marshal(e)
				out = append(out, b...)
			}
		})
	}
	return out
}

// blankMembers replaces the value of every member called one of names,
// at any depth, with "ECHO".
func blankMembers(body []byte, names []string) []byte {
	var out []byte
	for _, v := range decodeAny(body) {
		walk(v, func(m map[string]any) {
			for _, n := range names {
				if _, ok := m[n]; ok {
					m[n] = "ECHO"
				}
			}
		})
		b, _ := json.Marshal(v)
		out = append(append(out, b...), '\n')
	}
	return out
}

func normalizeAll(body []byte, literal map[string]bool, unorderedMembers []string) any {
	vals := decodeAny(body)
	out := make([]any, len(vals))
	for i, v := range vals {
		out[i] = normalize(v, literal, unorderedMembers)
		if arr, ok := out[i].([]any); ok && slices.Contains(unorderedMembers, "") {
			out[i] = sortCanonical(arr)
		}
	}
	return out
}

func clip(b []byte) string {
	if len(b) > 1500 {
		return string(b[:1500]) + "…"
	}
	return string(b)
}
