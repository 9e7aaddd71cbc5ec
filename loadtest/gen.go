package loadtest

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
)

// Record is one synthetic patient/customer document. The fields that the
// load test's rules protect are SSN, Card.Number and Diagnosis (random
// mode, key "pii") and Email (deterministic mode, key "contact"): four per
// document. Every value is invented: emails use the reserved example.*
// domains, and card numbers are random digits that only look real (a Visa
// or Mastercard prefix and a valid Luhn check digit), so that validators
// in front of a datastore accept them.
type Record struct {
	Type      string    `json:"type"`
	Name      Name      `json:"name"`
	Email     string    `json:"email"`
	SSN       string    `json:"ssn"`
	BirthDate string    `json:"birth_date,omitempty"`
	Phone     string    `json:"phone,omitempty"`
	Address   *Address  `json:"address,omitempty"`
	Card      Card      `json:"card"`
	Diagnosis Diagnosis `json:"diagnosis"`
	Visits    []Visit   `json:"visits,omitempty"`
	Note      string    `json:"note"`
}

// Name is a person's name.
type Name struct {
	Given  string `json:"given"`
	Family string `json:"family"`
}

// Address is a postal address.
type Address struct {
	Street   string `json:"street"`
	City     string `json:"city"`
	Postcode string `json:"postcode"`
	Country  string `json:"country"`
}

// Card is a payment card.
type Card struct {
	Number string `json:"number"`
	Expiry string `json:"expiry,omitempty"`
	Holder string `json:"holder,omitempty"`
}

// Diagnosis is an ICD-10 code with its text.
type Diagnosis struct {
	Code string `json:"code"`
	Text string `json:"text,omitempty"`
}

// Visit is one entry of a visit history.
type Visit struct {
	Date   string `json:"date"`
	Clinic string `json:"clinic"`
	Reason string `json:"reason"`
}

// Generator makes documents from a seed. Document i depends only on the
// seed and i (a PCG stream per document, from math/rand/v2), so the same
// seed gives the same documents byte for byte, in any order and from any
// number of goroutines.
type Generator struct {
	seed  uint64
	sizes SizeDist
}

// NewGenerator returns a generator of documents whose sizes follow sizes.
func NewGenerator(seed uint64, sizes SizeDist) *Generator {
	return &Generator{seed: seed, sizes: sizes}
}

// Record returns record i and the size its JSON encoding is padded to.
func (g *Generator) Record(i uint64) (Record, int) {
	r := rand.New(rand.NewPCG(g.seed, i))
	size := g.sizes.pick(r)
	given, family := pick(r, givenNames), pick(r, familyNames)
	rec := Record{
		Type:      pick(r, []string{"patient", "patient", "patient", "customer"}),
		Name:      Name{Given: given, Family: family},
		Email:     fmt.Sprintf("%s.%s.%d@%s", strings.ToLower(given), strings.ToLower(family), i, pick(r, domains)),
		SSN:       ssn(r),
		BirthDate: fmt.Sprintf("%04d-%02d-%02d", 1930+r.IntN(80), 1+r.IntN(12), 1+r.IntN(28)),
		Phone:     fmt.Sprintf("+1-555-%03d-%04d", r.IntN(1000), r.IntN(10000)),
		Address: &Address{
			Street:   fmt.Sprintf("%d %s", 1+r.IntN(2500), pick(r, streets)),
			City:     pick(r, cities),
			Postcode: fmt.Sprintf("%05d", r.IntN(100000)),
			Country:  pick(r, []string{"US", "CA", "GB", "DE", "FR", "NO", "ES"}),
		},
		Card: Card{
			Number: cardNumber(r),
			Expiry: fmt.Sprintf("%02d/%02d", 1+r.IntN(12), 27+r.IntN(6)),
			Holder: given + " " + family,
		},
	}
	dx := diagnoses[r.IntN(len(diagnoses))]
	rec.Diagnosis = Diagnosis{Code: dx[0], Text: dx[1]}
	for range min(20, size/1200) {
		rec.Visits = append(rec.Visits, Visit{
			Date:   fmt.Sprintf("20%02d-%02d-%02d", 10+r.IntN(16), 1+r.IntN(12), 1+r.IntN(28)),
			Clinic: pick(r, cities) + " " + pick(r, []string{"General", "Family Practice", "Cardiology", "Outpatient", "Pediatrics"}),
			Reason: sentence(r, 4+r.IntN(8)),
		})
	}
	return rec, size
}

// Doc returns document i as JSON: record i with its note filled with text
// until the encoding is the chosen size (optional members are dropped for
// sizes below what a full record needs; no document is smaller than its
// required members, about 200 bytes).
func (g *Generator) Doc(i uint64) []byte {
	rec, size := g.Record(i)
	r := rand.New(rand.NewPCG(g.seed^0x6e6f7465, i)) // "note": its own stream
	b := mustJSON(rec)
	// Shed optional members, least important first, until it fits.
	for shed := 0; len(b) > size && shed < 6; shed++ {
		switch shed {
		case 0:
			rec.Visits = nil
		case 1:
			rec.Address = nil
		case 2:
			rec.Phone = ""
		case 3:
			rec.BirthDate = ""
		case 4:
			rec.Card.Expiry, rec.Card.Holder = "", ""
		case 5:
			rec.Diagnosis.Text = ""
		}
		b = mustJSON(rec)
	}
	need := size - len(b)
	if need <= 0 {
		return b
	}
	var note strings.Builder
	for note.Len() < need {
		note.WriteString(sentence(r, 5+r.IntN(12)))
		note.WriteByte(' ')
	}
	text := note.String()[:need]
	if strings.HasSuffix(text, " ") {
		text = text[:need-1] + "."
	}
	rec.Note = text
	return mustJSON(rec)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("loadtest: encoding a generated record: " + err.Error())
	}
	return b
}

func pick(r *rand.Rand, from []string) string { return from[r.IntN(len(from))] }

// ssn returns a US social security number in a valid shape: area 001-899
// but not 666, group 01-99, serial 0001-9999.
func ssn(r *rand.Rand) string {
	area := 1 + r.IntN(899)
	if area == 666 {
		area = 667
	}
	return fmt.Sprintf("%03d-%02d-%04d", area, 1+r.IntN(99), 1+r.IntN(9999))
}

// cardNumber returns a 16-digit number with a valid Luhn check digit and a
// Visa or Mastercard prefix.
func cardNumber(r *rand.Rand) string {
	d := make([]byte, 16)
	prefix := 1
	if r.IntN(2) == 0 {
		d[0] = 4
	} else {
		d[0], d[1] = 5, byte(1+r.IntN(5))
		prefix = 2
	}
	for i := prefix; i < 15; i++ {
		d[i] = byte(r.IntN(10))
	}
	d[15] = luhnCheck(d[:15])
	var b strings.Builder
	for _, x := range d {
		b.WriteByte('0' + x)
	}
	return b.String()
}

// luhnCheck returns the check digit that makes digits+check pass Luhn.
func luhnCheck(digits []byte) byte {
	sum := 0
	for i := len(digits) - 1; i >= 0; i-- {
		v := int(digits[i])
		if (len(digits)-1-i)%2 == 0 {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
	}
	return byte((10 - sum%10) % 10)
}

// luhnValid reports whether a digit string passes the Luhn check.
func luhnValid(s string) bool {
	sum := 0
	for i := len(s) - 1; i >= 0; i-- {
		v := int(s[i] - '0')
		if (len(s)-1-i)%2 == 1 {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
	}
	return sum%10 == 0
}

func sentence(r *rand.Rand, words int) string {
	var b strings.Builder
	for w := range words {
		word := noteWords[r.IntN(len(noteWords))]
		if w == 0 {
			word = strings.ToUpper(word[:1]) + word[1:]
		} else {
			b.WriteByte(' ')
		}
		b.WriteString(word)
	}
	b.WriteByte('.')
	return b.String()
}

// SizeDist is a distribution of document sizes in bytes: one size, a
// range (log-uniform, so small and large sizes are both well represented),
// or weighted sizes.
type SizeDist struct {
	text    string
	sizes   []int // weighted choice among these, or [lo, hi] for a range
	weights []int
	isRange bool
}

// Document sizes a generator accepts.
const (
	MinDocSize = 200
	MaxDocSize = 64 << 10
)

// ParseSizeDist parses "1KiB", "512B..8KiB" or "1KiB:8,16KiB:2" (size:weight).
func ParseSizeDist(s string) (SizeDist, error) {
	d := SizeDist{text: s}
	if lo, hi, ok := strings.Cut(s, ".."); ok {
		a, err := parseSize(lo)
		if err != nil {
			return SizeDist{}, err
		}
		b, err := parseSize(hi)
		if err != nil {
			return SizeDist{}, err
		}
		if a > b {
			return SizeDist{}, fmt.Errorf("loadtest: doc size range %q: low end above high end", s)
		}
		d.sizes, d.isRange = []int{a, b}, true
		return d, nil
	}
	for part := range strings.SplitSeq(s, ",") {
		sz, w, hasWeight := strings.Cut(strings.TrimSpace(part), ":")
		n, err := parseSize(sz)
		if err != nil {
			return SizeDist{}, err
		}
		weight := 1
		if hasWeight {
			weight, err = strconv.Atoi(w)
			if err != nil || weight < 1 {
				return SizeDist{}, fmt.Errorf("loadtest: doc size weight %q: want a positive integer", w)
			}
		}
		d.sizes = append(d.sizes, n)
		d.weights = append(d.weights, weight)
	}
	return d, nil
}

func parseSize(orig string) (int, error) {
	s := strings.TrimSpace(orig)
	mult := 1
	for _, u := range []struct {
		suffix string
		mult   int
	}{{"MiB", 1 << 20}, {"MB", 1 << 20}, {"KiB", 1 << 10}, {"KB", 1 << 10}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n > MaxDocSize {
		if err == nil {
			n = MaxDocSize + 1 // keep n*mult from overflowing
		} else {
			return 0, fmt.Errorf("loadtest: doc size %q: want e.g. 200B, 1KiB, 64KiB", orig)
		}
	}
	n *= mult
	if n < MinDocSize || n > MaxDocSize {
		return 0, fmt.Errorf("loadtest: doc size %d bytes: must be between %d B and %d KiB", n, MinDocSize, MaxDocSize>>10)
	}
	return n, nil
}

// String returns the distribution as it was given.
func (d SizeDist) String() string { return d.text }

// Mean is the distribution's expected size in bytes.
func (d SizeDist) Mean() float64 {
	if d.isRange {
		lo, hi := float64(d.sizes[0]), float64(d.sizes[1])
		if lo == hi {
			return lo
		}
		// Mean of a log-uniform distribution on [lo, hi].
		return (hi - lo) / (math.Log(hi) - math.Log(lo))
	}
	total, sum := 0, 0.0
	for i, s := range d.sizes {
		total += d.weights[i]
		sum += float64(s * d.weights[i])
	}
	return sum / float64(total)
}

func (d SizeDist) pick(r *rand.Rand) int {
	if d.isRange {
		lo, hi := float64(d.sizes[0]), float64(d.sizes[1])
		return int(math.Exp(math.Log(lo) + r.Float64()*(math.Log(hi)-math.Log(lo))))
	}
	total := 0
	for _, w := range d.weights {
		total += w
	}
	n := r.IntN(total)
	for i, w := range d.weights {
		if n < w {
			return d.sizes[i]
		}
		n -= w
	}
	return d.sizes[len(d.sizes)-1]
}
