package memcouch

import (
	"bytes"
	"cmp"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// MaxBodyBytes is the largest request body accepted (CouchDB's default
// max_http_request_size is 4 GiB; 64 MiB covers any load-test batch and
// bounds what one request can make the process hold).
const MaxBodyBytes = 64 << 20

// numShards spreads documents over independent locks. 64 keeps lock
// contention negligible at the concurrency a 2..64-core load test reaches
// while keeping a full scan (_changes, _all_docs) cheap.
const numShards = 64

// Server is the in-memory datastore. The zero value is not usable; call New.
type Server struct {
	mu      sync.RWMutex
	dbs     map[string]*database
	maxBody int64
}

// New returns an empty server.
func New() *Server {
	return &Server{dbs: make(map[string]*database), maxBody: MaxBodyBytes}
}

type database struct {
	name     string
	shards   [numShards]shard
	seq      atomic.Uint64
	docCount atomic.Int64
	delCount atomic.Int64
}

type shard struct {
	mu   sync.RWMutex
	docs map[string]*doc
	// index maps a field path ("address.city") to canonical JSON value to
	// the ids holding that value. A path is indexed the first time _find
	// names it.
	index map[string]map[string]map[string]struct{}
}

type doc struct {
	id      string
	rev     string
	gen     int
	body    []byte // the JSON that GET returns, _id and _rev first
	deleted bool
	seq     uint64
	// indexed holds this revision's value for each indexed path, so that
	// replacing it removes the right index entry without re-parsing.
	indexed map[string]string
}

func (d *doc) setIndexed(path, value string) {
	if d.indexed == nil {
		d.indexed = make(map[string]string, 1)
	}
	d.indexed[path] = value
}

// couchError is an error answered with CouchDB's shape.
type couchError struct {
	status int
	code   string
	reason string
}

func (e *couchError) Error() string { return "memcouch: " + e.code + ": " + e.reason }

func errf(status int, code, format string, args ...any) *couchError {
	return &couchError{status: status, code: code, reason: fmt.Sprintf(format, args...)}
}

var (
	errConflict   = errf(http.StatusConflict, "conflict", "Document update conflict.")
	errMissing    = errf(http.StatusNotFound, "not_found", "missing")
	errDeleted    = errf(http.StatusNotFound, "not_found", "deleted")
	errNoDatabase = errf(http.StatusNotFound, "not_found", "Database does not exist.")
)

// dbNameRE is CouchDB's rule for database names.
var dbNameRE = regexp.MustCompile(`^[a-z][a-z0-9_$()+/-]*$`)

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, s.maxBody)
	}
	status, body, err := s.route(r)
	if err != nil {
		var ce *couchError
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &ce):
		case errors.As(err, &mbe):
			ce = errf(http.StatusRequestEntityTooLarge, "too_large", "the request entity is too large")
		default:
			ce = errf(http.StatusBadRequest, "bad_request", "%v", err)
		}
		status = ce.status
		body, _ = json.Marshal(map[string]string{"error": ce.code, "reason": ce.reason})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	h.Set("Server", "memcouch (sidecrypt loadtest)")
	w.WriteHeader(status)
	w.Write(body)
	w.Write([]byte{'\n'})
}

// route dispatches on the path's segments.
func (s *Server) route(r *http.Request) (int, []byte, error) {
	segs, err := splitPath(r.URL.EscapedPath())
	if err != nil {
		return 0, nil, err
	}
	method := r.Method
	if method == http.MethodHead {
		method = http.MethodGet
	}
	switch {
	case len(segs) == 0:
		if method != http.MethodGet {
			return notAllowed("GET,HEAD")
		}
		return ok(http.StatusOK, map[string]any{"couchdb": "Welcome", "version": "3.3.3", "vendor": map[string]string{"name": "memcouch (sidecrypt loadtest)"}})
	case segs[0] == "_up":
		return ok(http.StatusOK, map[string]string{"status": "ok"})
	case segs[0] == "_all_dbs":
		return ok(http.StatusOK, s.names())
	case strings.HasPrefix(segs[0], "_"):
		return 0, nil, errf(http.StatusBadRequest, "illegal_database_name", "Name: '%s'. Only lowercase characters (a-z), digits (0-9), and any of the characters _, $, (, ), +, -, and / are allowed. Must begin with a letter.", segs[0])
	case len(segs) == 1:
		return s.database(r, method, segs[0])
	}
	db := s.db(segs[0])
	if db == nil {
		return 0, nil, errNoDatabase
	}
	rest := segs[1:]
	if strings.HasPrefix(rest[0], "_") && rest[0] != "_design" && rest[0] != "_local" {
		if len(rest) != 1 {
			return 0, nil, errMissing
		}
		return s.special(r, method, db, rest[0])
	}
	id := strings.Join(rest, "/")
	if (rest[0] == "_design" || rest[0] == "_local") != (len(rest) == 2) || len(rest) > 2 {
		return 0, nil, errMissing
	}
	return s.document(r, method, db, id)
}

func splitPath(escaped string) ([]string, error) {
	var segs []string
	for _, p := range strings.Split(strings.Trim(escaped, "/"), "/") {
		if p == "" {
			continue
		}
		u, err := url.PathUnescape(p)
		if err != nil {
			return nil, errf(http.StatusBadRequest, "bad_request", "bad path escape %q", p)
		}
		segs = append(segs, u)
	}
	return segs, nil
}

func ok(status int, v any) (int, []byte, error) {
	b, err := json.Marshal(v)
	return status, b, err
}

func notAllowed(allowed string) (int, []byte, error) {
	return 0, nil, errf(http.StatusMethodNotAllowed, "method_not_allowed", "Only %s allowed", allowed)
}

func (s *Server) db(name string) *database {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.dbs[name]
}

func (s *Server) names() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	names := make([]string, 0, len(s.dbs))
	for n := range s.dbs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (s *Server) database(r *http.Request, method, name string) (int, []byte, error) {
	switch method {
	case http.MethodPut:
		if !dbNameRE.MatchString(name) {
			return 0, nil, errf(http.StatusBadRequest, "illegal_database_name", "Name: '%s'. Only lowercase characters (a-z), digits (0-9), and any of the characters _, $, (, ), +, -, and / are allowed. Must begin with a letter.", name)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.dbs[name] != nil {
			return 0, nil, errf(http.StatusPreconditionFailed, "file_exists", "The database could not be created, the file already exists.")
		}
		db := &database{name: name}
		for i := range db.shards {
			db.shards[i].docs = make(map[string]*doc)
			db.shards[i].index = make(map[string]map[string]map[string]struct{})
		}
		s.dbs[name] = db
		return ok(http.StatusCreated, map[string]bool{"ok": true})
	case http.MethodDelete:
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.dbs[name] == nil {
			return 0, nil, errNoDatabase
		}
		delete(s.dbs, name)
		return ok(http.StatusOK, map[string]bool{"ok": true})
	case http.MethodGet:
		db := s.db(name)
		if db == nil {
			return 0, nil, errNoDatabase
		}
		return ok(http.StatusOK, map[string]any{
			"db_name":             name,
			"doc_count":           db.docCount.Load(),
			"doc_del_count":       db.delCount.Load(),
			"update_seq":          db.seq.Load(),
			"instance_start_time": "0",
		})
	case http.MethodPost:
		db := s.db(name)
		if db == nil {
			return 0, nil, errNoDatabase
		}
		if err := requireJSON(r); err != nil {
			return 0, nil, err
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return 0, nil, err
		}
		d, err := parseDoc(body)
		if err != nil {
			return 0, nil, err
		}
		if d.id == "" {
			d.id = newID()
		}
		rev, err := db.put(d)
		if err != nil {
			return 0, nil, err
		}
		return ok(http.StatusCreated, map[string]any{"ok": true, "id": d.id, "rev": rev})
	}
	return notAllowed("DELETE,GET,HEAD,POST,PUT")
}

func requireJSON(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	if !strings.EqualFold(strings.TrimSpace(ct), "application/json") {
		return errf(http.StatusUnsupportedMediaType, "bad_content_type", "Content-Type must be application/json")
	}
	return nil
}

func (s *Server) special(r *http.Request, method string, db *database, name string) (int, []byte, error) {
	switch name {
	case "_bulk_docs":
		if method != http.MethodPost {
			return notAllowed("POST")
		}
		return db.bulkDocs(r)
	case "_all_docs":
		if method != http.MethodGet {
			return notAllowed("GET,HEAD")
		}
		return db.allDocs(r.URL.Query())
	case "_find":
		if method != http.MethodPost {
			return notAllowed("POST")
		}
		return db.find(r)
	case "_changes":
		if method != http.MethodGet {
			return notAllowed("GET,HEAD")
		}
		return db.changes(r.URL.Query())
	}
	return 0, nil, errf(http.StatusBadRequest, "bad_request", "memcouch does not implement %s", name)
}

func (s *Server) document(r *http.Request, method string, db *database, id string) (int, []byte, error) {
	switch method {
	case http.MethodGet:
		d, err := db.get(id)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, d.body, nil
	case http.MethodPut:
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return 0, nil, err
		}
		d, err := parseDoc(body)
		if err != nil {
			return 0, nil, err
		}
		if d.id != "" && d.id != id {
			return 0, nil, errf(http.StatusBadRequest, "bad_request", "Document id must match the URL")
		}
		d.id = id
		if q := r.URL.Query().Get("rev"); q != "" {
			if d.rev != "" && d.rev != q {
				return 0, nil, errf(http.StatusBadRequest, "bad_request", "Document rev from request body and query string have different values")
			}
			d.rev = q
		}
		rev, err := db.put(d)
		if err != nil {
			return 0, nil, err
		}
		return ok(http.StatusCreated, map[string]any{"ok": true, "id": id, "rev": rev})
	case http.MethodDelete:
		rev := r.URL.Query().Get("rev")
		if rev == "" {
			return 0, nil, errConflict
		}
		newRev, err := db.put(&incoming{id: id, rev: rev, deleted: true})
		if err != nil {
			return 0, nil, err
		}
		return ok(http.StatusOK, map[string]any{"ok": true, "id": id, "rev": newRev})
	}
	return notAllowed("DELETE,GET,HEAD,PUT")
}

// incoming is a document as a client sent it.
type incoming struct {
	id, rev string
	deleted bool
	members []member // without _id, _rev, _deleted
}

type member struct {
	key string
	raw json.RawMessage
}

// parseDoc reads a JSON object, keeping its members in order.
func parseDoc(body []byte) (*incoming, error) {
	members, err := parseObject(body)
	if err != nil {
		return nil, err
	}
	d := &incoming{}
	kept := members[:0]
	for _, m := range members {
		switch m.key {
		case "_id":
			if err := json.Unmarshal(m.raw, &d.id); err != nil || d.id == "" {
				return nil, errf(http.StatusBadRequest, "illegal_docid", "Document id must be a non-empty string")
			}
		case "_rev":
			if err := json.Unmarshal(m.raw, &d.rev); err != nil {
				return nil, errf(http.StatusBadRequest, "bad_request", "Invalid rev format")
			}
		case "_deleted":
			if err := json.Unmarshal(m.raw, &d.deleted); err != nil {
				return nil, errf(http.StatusBadRequest, "doc_validation", "_deleted must be a boolean")
			}
		default:
			if strings.HasPrefix(m.key, "_") {
				return nil, errf(http.StatusBadRequest, "doc_validation", "Bad special document member: %s", m.key)
			}
			kept = append(kept, m)
		}
	}
	d.members = kept
	if strings.HasPrefix(d.id, "_") && !strings.HasPrefix(d.id, "_design/") && !strings.HasPrefix(d.id, "_local/") {
		return nil, errf(http.StatusBadRequest, "illegal_docid", "Only reserved document ids may start with underscore.")
	}
	return d, nil
}

var errNotObject = errf(http.StatusBadRequest, "bad_request", "Document must be a JSON object")

// parseObject splits a JSON object into its members, in order, checking
// that body is exactly one valid object. It validates with json.Valid and
// then only scans for member boundaries, which is several times faster
// than decoding token by token (the upstream must stay out of the
// measurement).
func parseObject(body []byte) ([]member, error) {
	if !json.Valid(body) {
		return nil, errf(http.StatusBadRequest, "bad_request", "invalid UTF-8 JSON")
	}
	i := skipSpace(body, 0)
	if body[i] != '{' {
		return nil, errNotObject
	}
	i = skipSpace(body, i+1)
	var members []member
	for body[i] != '}' {
		keyEnd := skipString(body, i)
		key := string(body[i+1 : keyEnd-1])
		if bytes.IndexByte(body[i:keyEnd], '\\') >= 0 {
			json.Unmarshal(body[i:keyEnd], &key)
		}
		i = skipSpace(body, keyEnd)
		i = skipSpace(body, i+1) // the colon
		valEnd := skipValue(body, i)
		members = append(members, member{key: key, raw: body[i:valEnd]})
		i = skipSpace(body, valEnd)
		if body[i] == ',' {
			i = skipSpace(body, i+1)
		}
	}
	return members, nil
}

// The scanners below run only on input json.Valid accepted.

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the string starting at b[i].
func skipString(b []byte, i int) int {
	for i++; ; i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
}

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; ; i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
	}
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
		i++
	}
	return i
}

func newID() string {
	var b [16]byte
	for i := 0; i < 16; i += 8 {
		v := rand.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return hex.EncodeToString(b[:])
}

func (db *database) shardOf(id string) *shard {
	h := fnv.New32a()
	h.Write([]byte(id))
	return &db.shards[h.Sum32()%numShards]
}

func (db *database) get(id string) (*doc, error) {
	sh := db.shardOf(id)
	sh.mu.RLock()
	d := sh.docs[id]
	sh.mu.RUnlock()
	switch {
	case d == nil:
		return nil, errMissing
	case d.deleted:
		return nil, errDeleted
	}
	return d, nil
}

// put stores a new revision of in, enforcing CouchDB's revision rules, and
// returns the new rev.
func (db *database) put(in *incoming) (string, error) {
	sh := db.shardOf(in.id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	cur := sh.docs[in.id]
	gen := 1
	switch {
	case cur == nil:
		if in.deleted {
			return "", errMissing
		}
		if in.rev != "" {
			return "", errConflict
		}
	case cur.deleted:
		// A deleted document is recreated without a rev, or with the
		// tombstone's rev.
		if in.rev != "" && in.rev != cur.rev {
			return "", errConflict
		}
		if in.deleted {
			return "", errDeleted
		}
		gen = cur.gen + 1
	default:
		if in.rev != cur.rev {
			return "", errConflict
		}
		gen = cur.gen + 1
	}
	d := &doc{id: in.id, gen: gen, deleted: in.deleted}
	d.rev = strconv.Itoa(gen) + "-" + revHash(in, cur)
	d.body = render(d, in.members)
	d.seq = db.seq.Add(1)
	sh.docs[in.id] = d
	switch {
	case cur == nil || cur.deleted:
		db.docCount.Add(1)
		if cur != nil {
			db.delCount.Add(-1)
		}
	case d.deleted:
		db.docCount.Add(-1)
		db.delCount.Add(1)
	}
	for path, byValue := range sh.index {
		if cur != nil && !cur.deleted {
			if v, ok := cur.indexed[path]; ok {
				removeID(byValue, v, in.id)
			}
		}
		if !d.deleted {
			if v, ok := memberValue(in.members, path); ok {
				addID(byValue, v, in.id)
				d.setIndexed(path, v)
			}
		}
	}
	return d.rev, nil
}

// revHash derives a revision's hash from the previous revision and the
// content, as CouchDB does (it uses MD5; FNV-128a serves the same purpose
// here: telling revisions apart, not security).
func revHash(in *incoming, prev *doc) string {
	h := fnv.New128a()
	if prev != nil {
		io.WriteString(h, prev.rev)
	}
	if in.deleted {
		h.Write([]byte{1})
	}
	for _, m := range in.members {
		io.WriteString(h, m.key)
		h.Write(m.raw)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// render builds the stored JSON: _id and _rev first, then the client's
// members in the client's order.
func render(d *doc, members []member) []byte {
	n := 32 + len(d.id) + len(d.rev)
	for _, m := range members {
		n += len(m.key) + len(m.raw) + 4
	}
	b := make([]byte, 0, n)
	b = append(b, `{"_id":`...)
	b = appendString(b, d.id)
	b = append(b, `,"_rev":`...)
	b = appendString(b, d.rev)
	if d.deleted {
		b = append(b, `,"_deleted":true`...)
	} else {
		for _, m := range members {
			b = append(b, ',')
			b = appendString(b, m.key)
			b = append(b, ':')
			b = append(b, m.raw...)
		}
	}
	return append(b, '}')
}

func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s)
	return append(b, q...)
}

func (db *database) bulkDocs(r *http.Request) (int, []byte, error) {
	if err := requireJSON(r); err != nil {
		return 0, nil, err
	}
	var req struct {
		Docs     []json.RawMessage `json:"docs"`
		NewEdits *bool             `json:"new_edits"`
	}
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(&req); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return 0, nil, err
		}
		return 0, nil, errf(http.StatusBadRequest, "bad_request", "invalid UTF-8 JSON")
	}
	if req.Docs == nil {
		return 0, nil, errf(http.StatusBadRequest, "bad_request", "POST body must include `docs` parameter.")
	}
	if req.NewEdits != nil && !*req.NewEdits {
		return 0, nil, errf(http.StatusBadRequest, "bad_request", "memcouch does not implement new_edits=false (replication)")
	}
	docs := make([]*incoming, len(req.Docs))
	for i, raw := range req.Docs {
		d, err := parseDoc(raw)
		if err != nil {
			return 0, nil, err
		}
		if d.id == "" {
			d.id = newID()
		}
		docs[i] = d
	}
	type result struct {
		OK     bool   `json:"ok,omitempty"`
		ID     string `json:"id"`
		Rev    string `json:"rev,omitempty"`
		Error  string `json:"error,omitempty"`
		Reason string `json:"reason,omitempty"`
	}
	results := make([]result, len(docs))
	for i, d := range docs {
		rev, err := db.put(d)
		if err != nil {
			var ce *couchError
			errors.As(err, &ce)
			if ce == errMissing || ce == errDeleted {
				ce = errConflict // CouchDB reports a bad delete in a batch as a conflict
			}
			results[i] = result{ID: d.id, Error: ce.code, Reason: ce.reason}
			continue
		}
		results[i] = result{OK: true, ID: d.id, Rev: rev}
	}
	return ok(http.StatusCreated, results)
}

// snapshot returns the live (or, with deleted, all) documents, sorted by less.
func (db *database) snapshot(deleted bool, less func(a, b *doc) int) []*doc {
	var out []*doc
	for i := range db.shards {
		sh := &db.shards[i]
		sh.mu.RLock()
		for _, d := range sh.docs {
			if deleted || !d.deleted {
				out = append(out, d)
			}
		}
		sh.mu.RUnlock()
	}
	slices.SortFunc(out, less)
	return out
}

func byID(a, b *doc) int { return strings.Compare(a.id, b.id) }

func intParam(q url.Values, name string, def int) (int, error) {
	v := q.Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, errf(http.StatusBadRequest, "query_parse_error", "Invalid value for %s: %q", name, v)
	}
	return n, nil
}

func boolParam(q url.Values, name string) (bool, error) {
	switch v := q.Get(name); v {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	default:
		return false, errf(http.StatusBadRequest, "query_parse_error", "Invalid boolean parameter for %s: %q", name, v)
	}
}

func (db *database) allDocs(q url.Values) (int, []byte, error) {
	includeDocs, err := boolParam(q, "include_docs")
	if err != nil {
		return 0, nil, err
	}
	limit, err := intParam(q, "limit", -1)
	if err != nil {
		return 0, nil, err
	}
	skip, err := intParam(q, "skip", 0)
	if err != nil {
		return 0, nil, err
	}
	docs := db.snapshot(false, byID)
	total := len(docs)
	docs = window(docs, skip, limit)
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"total_rows":%d,"offset":%d,"rows":[`, total, min(skip, total))
	for i, d := range docs {
		if i > 0 {
			b.WriteByte(',')
		}
		id := appendString(nil, d.id)
		fmt.Fprintf(&b, `{"id":%s,"key":%s,"value":{"rev":%s}`, id, id, appendString(nil, d.rev))
		if includeDocs {
			b.WriteString(`,"doc":`)
			b.Write(d.body)
		}
		b.WriteByte('}')
	}
	b.WriteString("]}")
	return http.StatusOK, b.Bytes(), nil
}

func window[T any](s []T, skip, limit int) []T {
	if skip >= len(s) {
		return nil
	}
	s = s[skip:]
	if limit >= 0 && limit < len(s) {
		s = s[:limit]
	}
	return s
}

func (db *database) changes(q url.Values) (int, []byte, error) {
	switch q.Get("feed") {
	case "", "normal":
	default:
		return 0, nil, errf(http.StatusBadRequest, "bad_request", "memcouch only implements feed=normal")
	}
	includeDocs, err := boolParam(q, "include_docs")
	if err != nil {
		return 0, nil, err
	}
	limit, err := intParam(q, "limit", -1)
	if err != nil {
		return 0, nil, err
	}
	var since uint64
	if v := q.Get("since"); v != "" && v != "0" {
		if v == "now" {
			since = db.seq.Load()
		} else if since, err = strconv.ParseUint(v, 10, 64); err != nil {
			return 0, nil, errf(http.StatusBadRequest, "bad_request", "Malformed sequence supplied in 'since' parameter.")
		}
	}
	all := db.snapshot(true, func(a, b *doc) int { return cmp.Compare(a.seq, b.seq) })
	i := sort.Search(len(all), func(i int) bool { return all[i].seq > since })
	docs := window(all[i:], 0, limit)
	last := since
	var b bytes.Buffer
	b.WriteString(`{"results":[`)
	for i, d := range docs {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"seq":%d,"id":%s,"changes":[{"rev":%s}]`, d.seq, appendString(nil, d.id), appendString(nil, d.rev))
		if d.deleted {
			b.WriteString(`,"deleted":true`)
		}
		if includeDocs {
			b.WriteString(`,"doc":`)
			b.Write(d.body)
		}
		b.WriteByte('}')
		last = d.seq
	}
	fmt.Fprintf(&b, `],"last_seq":%d,"pending":%d}`, last, len(all)-i-len(docs))
	return http.StatusOK, b.Bytes(), nil
}

var _ http.Handler = (*Server)(nil)
