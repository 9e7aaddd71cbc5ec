package loadtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

func mustSizes(t testing.TB, s string) SizeDist {
	t.Helper()
	d, err := ParseSizeDist(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestGeneratorRepeatable(t *testing.T) {
	sizes := mustSizes(t, "200B..64KiB")
	a, b, c := NewGenerator(42, sizes), NewGenerator(42, sizes), NewGenerator(43, sizes)
	// Same seed: same bytes, whatever the order documents are made in.
	for _, i := range []uint64{0, 1, 2, 1000, 1 << 40, 1, 0} {
		if !bytes.Equal(a.Doc(i), b.Doc(i)) {
			t.Fatalf("seed 42 doc %d differs between generators", i)
		}
	}
	// A different seed or a different index: different documents.
	same := 0
	for i := range uint64(50) {
		if bytes.Equal(a.Doc(i), c.Doc(i)) {
			same++
		}
		if i > 0 && bytes.Equal(a.Doc(i), a.Doc(i-1)) {
			t.Fatalf("docs %d and %d are equal", i-1, i)
		}
	}
	if same > 0 {
		t.Fatalf("%d of 50 documents equal across seeds 42 and 43", same)
	}
	// Workloads built from the same seed send the same bytes.
	mix, _ := MixFor("mixed", "write=1,bulk=1,query=1,read=1")
	w1 := NewWorkload(mix, a, 42, 5)
	w2 := NewWorkload(mix, b, 42, 5)
	pool := &Pool{IDs: []string{"x", "y"}, Emails: []string{"x@example.org", "y@example.org"}}
	for seq := range uint64(40) {
		r1, r2 := w1.Build(seq, "db", pool), w2.Build(seq, "db", pool)
		if r1.Method != r2.Method || r1.Path != r2.Path || !bytes.Equal(r1.Body, r2.Body) {
			t.Fatalf("request %d differs: %s %s vs %s %s", seq, r1.Method, r1.Path, r2.Method, r2.Path)
		}
	}
}

var (
	ssnRE   = regexp.MustCompile(`^(\d{3})-(\d{2})-(\d{4})$`)
	emailRE = regexp.MustCompile(`^[a-z]+\.[a-z]+\.\d+@example\.(com|org|net)$`)
)

func TestGeneratedDocuments(t *testing.T) {
	for _, size := range []string{"200B", "1KiB", "4KiB", "64KiB"} {
		t.Run(size, func(t *testing.T) {
			d := mustSizes(t, size)
			want, _ := parseSize(size)
			g := NewGenerator(1, d)
			emails := map[string]bool{}
			for i := range uint64(200) {
				doc := g.Doc(i)
				var rec Record
				if err := json.Unmarshal(doc, &rec); err != nil {
					t.Fatalf("doc %d is not a record: %v", i, err)
				}
				// Exactly the size asked for, except where the required
				// members alone are larger (200 B with long names).
				if len(doc) != want && !(want == MinDocSize && len(doc) < MinDocSize+40 && rec.Note == "") {
					t.Fatalf("doc %d is %d bytes, want %d", i, len(doc), want)
				}
				m := ssnRE.FindStringSubmatch(rec.SSN)
				if m == nil || m[1] == "000" || m[1] == "666" || m[1] >= "900" || m[2] == "00" || m[3] == "0000" {
					t.Fatalf("doc %d ssn %q is not a valid-shaped SSN", i, rec.SSN)
				}
				if len(rec.Card.Number) != 16 || !luhnValid(rec.Card.Number) || !strings.ContainsAny(rec.Card.Number[:1], "45") {
					t.Fatalf("doc %d card %q: want 16 digits, Luhn-valid, Visa/Mastercard prefix", i, rec.Card.Number)
				}
				if !emailRE.MatchString(rec.Email) || emails[rec.Email] {
					t.Fatalf("doc %d email %q: malformed or repeated", i, rec.Email)
				}
				emails[rec.Email] = true
				if rec.Diagnosis.Code == "" || rec.Name.Given == "" {
					t.Fatalf("doc %d lacks a protected or required field: %s", i, doc)
				}
				if want >= 4096 && (rec.Address == nil || rec.Note == "") {
					t.Fatalf("a %d-byte doc should carry every member: %s", want, doc[:200])
				}
			}
		})
	}
}

func TestLuhn(t *testing.T) {
	for _, tc := range []struct {
		n  string
		ok bool
	}{{"4111111111111111", true}, {"5555555555554444", true}, {"4111111111111112", false}, {"79927398713", true}, {"79927398710", false}} {
		if luhnValid(tc.n) != tc.ok {
			t.Errorf("luhnValid(%s) = %v", tc.n, !tc.ok)
		}
	}
}

func TestParseSizeDist(t *testing.T) {
	tests := []struct {
		in      string
		mean    float64
		wantErr string
	}{
		{"1KiB", 1024, ""},
		{"1024", 1024, ""},
		{"200B", 200, ""},
		{"64KiB", 65536, ""},
		{"1KiB:3,4KiB:1", (3*1024 + 4096) / 4.0, ""},
		{"1KiB..1KiB", 1024, ""},
		{"100B", 0, "between 200 B and 64 KiB"},
		{"65KiB", 0, "between 200 B and 64 KiB"},
		{"8KiB..1KiB", 0, "low end above high end"},
		{"1KiB:0", 0, "positive integer"},
		{"1MiB", 0, "between 200 B and 64 KiB"},
		{"99999999999MiB", 0, "between 200 B and 64 KiB"},
		{"1GiB", 0, "want e.g."},
		{"", 0, "want e.g."},
		{"abc", 0, "want e.g."},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			d, err := ParseSizeDist(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "loadtest: ") {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.Mean() != tt.mean {
				t.Errorf("mean = %v, want %v", d.Mean(), tt.mean)
			}
		})
	}
	// A range is log-uniform: its draws stay inside it and its median is
	// near the geometric mean (1 KiB for 256 B..4 KiB).
	d := mustSizes(t, "256B..4KiB")
	g := NewGenerator(3, d)
	below := 0
	for i := range uint64(2000) {
		_, size := g.Record(i)
		if size < 256 || size > 4096 {
			t.Fatalf("size %d outside the range", size)
		}
		if size < 1024 {
			below++
		}
	}
	if below < 850 || below > 1150 {
		t.Errorf("%d of 2000 sizes below the geometric mean, want about half", below)
	}
}

func TestParseMix(t *testing.T) {
	tests := []struct {
		workload, mix string
		want          string
		wantErr       bool
	}{
		{"write", "", "write=1", false},
		{"query", "", "query=1", false},
		{"mixed", "write=2,read=6,query=1,bulk=1", "write=2,bulk=1,read=6,query=1", false},
		{"mixed", " read = 3 ", "read=3", false},
		{"mixed", "read=0", "", true},
		{"mixed", "delete=1", "", true},
		{"mixed", "read=-1", "", true},
		{"mixed", "read", "", true},
		{"scan", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.workload+" "+tt.mix, func(t *testing.T) {
			m, err := MixFor(tt.workload, tt.mix)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if err == nil && m.String() != tt.want {
				t.Errorf("mix = %q, want %q", m.String(), tt.want)
			}
		})
	}
	// Weights are honoured: 6 of 10 requests of the default mix are reads.
	m, _ := ParseMix("write=2,read=6,query=1,bulk=1")
	w := NewWorkload(m, NewGenerator(1, mustSizes(t, "200B")), 1, 2)
	pool := &Pool{IDs: []string{"a"}, Emails: []string{"a@example.org"}}
	counts := map[Op]int{}
	for seq := range uint64(10000) {
		counts[w.Build(seq, "db", pool).Op]++
	}
	if r := counts[OpRead]; r < 5700 || r > 6300 {
		t.Errorf("reads: %d of 10000, want about 6000 (%v)", r, counts)
	}
}

func TestBuildRequests(t *testing.T) {
	g := NewGenerator(1, mustSizes(t, "1KiB"))
	pool := &Pool{IDs: []string{"id/1"}, Emails: []string{"ana@example.org"}}
	for _, tt := range []struct {
		workload   string
		method     string
		path, body string
		docs       int
	}{
		{"write", "POST", "/db", `"ssn":`, 1},
		{"bulk", "POST", "/db/_bulk_docs", `{"docs":[{`, 3},
		{"read", "GET", "/db/id%2F1", "", 0},
		{"query", "POST", "/db/_find", `{"limit":10,"selector":{"email":"ana@example.org"}}`, 0},
	} {
		t.Run(tt.workload, func(t *testing.T) {
			m, _ := MixFor(tt.workload, "")
			r := NewWorkload(m, g, 1, 3).Build(5, "db", pool)
			if r.Method != tt.method || r.Path != tt.path || r.Docs != tt.docs || !strings.Contains(string(r.Body), tt.body) {
				t.Fatalf("got %s %s docs=%d body %.80s", r.Method, r.Path, r.Docs, r.Body)
			}
			if r.Body != nil && !json.Valid(r.Body) {
				t.Fatalf("body is not JSON: %.80s", r.Body)
			}
			if tt.workload == "bulk" {
				var b struct{ Docs []Record }
				json.Unmarshal(r.Body, &b)
				if len(b.Docs) != 3 {
					t.Fatalf("bulk of %d docs, want 3", len(b.Docs))
				}
			}
		})
	}
}

func FuzzParseSizeDist(f *testing.F) {
	for _, s := range []string{"1KiB", "200B..64KiB", "1KiB:8,16KiB:2", "..", ":", "1K"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseSizeDist(s)
		if err != nil {
			return
		}
		m := d.Mean()
		if m < MinDocSize || m > MaxDocSize {
			t.Fatalf("%q: mean %v outside the document size limits", s, m)
		}
		g := NewGenerator(1, d)
		for i := range uint64(3) {
			if _, size := g.Record(i); size < MinDocSize || size > MaxDocSize {
				t.Fatalf("%q: size %d", s, size)
			}
		}
	})
}

func ExampleGenerator() {
	sizes, _ := ParseSizeDist("1KiB")
	g := NewGenerator(1, sizes)
	rec, _ := g.Record(0)
	doc := g.Doc(0)
	fmt.Println(len(doc), rec.Email)
	// Output: 1024 olu.costa.0@example.net
}
