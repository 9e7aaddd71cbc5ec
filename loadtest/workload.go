package loadtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
)

// Op is a kind of request.
type Op int

// The operations a workload is made of.
const (
	OpWrite Op = iota // POST /db with one document
	OpBulk            // POST /db/_bulk_docs with BulkSize documents
	OpRead            // GET /db/{id} of a document written in the setup phase
	OpQuery           // POST /db/_find with an equality selector on email
	numOps
)

var opNames = [numOps]string{"write", "bulk", "read", "query"}

func (o Op) String() string { return opNames[o] }

func parseOp(s string) (Op, bool) {
	for i, n := range opNames {
		if n == s {
			return Op(i), true
		}
	}
	return 0, false
}

// Mix is a weighted choice of operations.
type Mix [numOps]int

// ParseMix parses "write=2,read=6,query=1,bulk=1". Operations left out
// have weight 0.
func ParseMix(s string) (Mix, error) {
	var m Mix
	total := 0
	for part := range strings.SplitSeq(s, ",") {
		name, w, ok := strings.Cut(strings.TrimSpace(part), "=")
		op, known := parseOp(strings.TrimSpace(name))
		if !ok || !known {
			return Mix{}, fmt.Errorf("loadtest: mix %q: want op=weight pairs of write, bulk, read, query", s)
		}
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil || n < 0 {
			return Mix{}, fmt.Errorf("loadtest: mix %q: weight of %s must be a non-negative integer", s, name)
		}
		m[op] = n
		total += n
	}
	if total == 0 {
		return Mix{}, fmt.Errorf("loadtest: mix %q: weights add up to zero", s)
	}
	return m, nil
}

// String formats the mix as ParseMix reads it.
func (m Mix) String() string {
	var parts []string
	for op, w := range m {
		if w > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", Op(op), w))
		}
	}
	return strings.Join(parts, ",")
}

func (m Mix) uses(op Op) bool { return m[op] > 0 }

func (m Mix) pick(r *rand.Rand) Op {
	total := 0
	for _, w := range m {
		total += w
	}
	n := r.IntN(total)
	for op, w := range m {
		if n < w {
			return Op(op)
		}
		n -= w
	}
	return OpWrite
}

// MixFor returns the mix of a named workload: write, bulk, read and query
// are one operation each; mixed uses mix.
func MixFor(workload, mix string) (Mix, error) {
	if op, ok := parseOp(workload); ok {
		var m Mix
		m[op] = 1
		return m, nil
	}
	if workload == "mixed" {
		return ParseMix(mix)
	}
	return Mix{}, fmt.Errorf("loadtest: unknown workload %q (want write, bulk, read, query or mixed)", workload)
}

// corpusSize is how many documents are generated before a run. Requests
// cycle through them so that the load generator spends its CPU on sending,
// not on making data; 1024 keeps sizes well spread for distributions.
const corpusSize = 1024

// setupBase numbers the setup phase's documents apart from the corpus, so
// that their emails are unique and a query finds exactly its document.
const setupBase = 1 << 40

// Workload builds requests. It is safe for concurrent use.
type Workload struct {
	mix      Mix
	bulkSize int
	seed     uint64
	gen      *Generator
	corpus   [][]byte
}

// NewWorkload generates the corpus for a mix.
func NewWorkload(mix Mix, gen *Generator, seed uint64, bulkSize int) *Workload {
	w := &Workload{mix: mix, bulkSize: bulkSize, seed: seed, gen: gen}
	w.corpus = make([][]byte, corpusSize)
	for i := range w.corpus {
		w.corpus[i] = gen.Doc(uint64(i))
	}
	return w
}

// Request is one HTTP request of a workload.
type Request struct {
	Op     Op
	Method string
	Path   string
	Body   []byte
	// Docs is how many documents it writes (0 for reads and queries).
	Docs int
	// check, when set, looks at a 2xx body; false means a wrong answer.
	check func(body []byte) bool
}

// Pool holds what a target's setup phase wrote: ids to read and emails to
// query, in the same order.
type Pool struct {
	IDs    []string
	Emails []string
}

// Build returns request number seq for database db. The same seq gives the
// same request on every target (apart from ids, which the datastore chose
// during each target's setup), so targets get like-for-like traffic.
func (w *Workload) Build(seq uint64, db string, pool *Pool) Request {
	r := rand.New(rand.NewPCG(w.seed^0x72657173, seq)) // "reqs"
	op := w.mix.pick(r)
	switch op {
	case OpBulk:
		var b bytes.Buffer
		b.WriteString(`{"docs":[`)
		for j := range w.bulkSize {
			if j > 0 {
				b.WriteByte(',')
			}
			b.Write(w.corpus[(seq*uint64(w.bulkSize)+uint64(j))%corpusSize])
		}
		b.WriteString("]}")
		return Request{Op: op, Method: "POST", Path: "/" + db + "/_bulk_docs", Body: b.Bytes(), Docs: w.bulkSize, check: bulkOK}
	case OpRead:
		i := r.IntN(len(pool.IDs))
		return Request{Op: op, Method: "GET", Path: "/" + db + "/" + url.PathEscape(pool.IDs[i]), check: readOK}
	case OpQuery:
		i := r.IntN(len(pool.Emails))
		body, _ := json.Marshal(map[string]any{"selector": map[string]string{"email": pool.Emails[i]}, "limit": 10})
		return Request{Op: op, Method: "POST", Path: "/" + db + "/_find", Body: body, check: foundSome}
	}
	return Request{Op: OpWrite, Method: "POST", Path: "/" + db, Body: w.corpus[seq%corpusSize], Docs: 1}
}

// readOK is false when a document read comes back with a sidecrypt token
// in it: every target's reads are of documents written through it, so a
// token means that sidecrypt stored the fields sealed but did not open
// them on the way back.
func readOK(body []byte) bool {
	return bytes.Contains(body, []byte(`"_id"`)) && !bytes.Contains(body, []byte(`"sc1.`)) && !bytes.Contains(body, []byte(`"sc2.`))
}

// bulkOK is false when any document of a batch failed.
func bulkOK(body []byte) bool { return !bytes.Contains(body, []byte(`"error"`)) }

// foundSome is false when a query found nothing: every queried email was
// written in the setup phase, so an empty answer means the datastore
// holds the field in a form the query does not match (with sidecrypt,
// deterministic encryption not lining up).
func foundSome(body []byte) bool { return bytes.Contains(body, []byte(`"_id"`)) }

// setupDocs returns the setup phase's documents and their emails.
func (w *Workload) setupDocs(n int) (docs [][]byte, emails []string) {
	for k := range n {
		i := uint64(setupBase + k)
		rec, _ := w.gen.Record(i)
		docs = append(docs, w.gen.Doc(i))
		emails = append(emails, rec.Email)
	}
	return docs, emails
}
