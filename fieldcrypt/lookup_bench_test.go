package fieldcrypt

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
)

// fakeTokenDoc is a JSON array of n strings that parse as format 1 tokens
// of key "pii", each naming its own key version, none of which exists:
// the cheapest document that makes a decryption look up n key versions
// (issue 12, item 6). Format 1 headers so that the benchmark also runs,
// unchanged, on code that reads only format 1, for a before/after.
func fakeTokenDoc(n int) []byte {
	var b strings.Builder
	b.WriteByte('[')
	body := make([]byte, 0, 64)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		body = append(body[:0], 1, 1, 's', 3, 'p', 'i', 'i')
		body = binary.BigEndian.AppendUint32(body, uint32(1000+i))
		body = append(body, make([]byte, 28)...) // nonce and tag: never checked
		b.WriteString(`"sc1.`)
		b.WriteString(base64.RawURLEncoding.EncodeToString(body))
		b.WriteByte('"')
	}
	b.WriteByte(']')
	return []byte(b.String())
}

// BenchmarkFakeTokenHeaders decrypts documents of N distinct made-up token
// headers. Each token's cost must not grow with N (see ns/token): a linear
// search of the key versions seen so far made the whole O(N^2), 46, 153
// and 588 ms for 10k, 20k and 40k tokens. A benchmark, not a timed test:
// timings on a shared machine are no assertion.
func BenchmarkFakeTokenHeaders(b *testing.B) {
	ctx := context.Background()
	kr := testKeyring(b)
	for _, n := range []int{10000, 20000, 40000} {
		doc := fakeTokenDoc(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(doc)))
			for b.Loop() {
				_, rep, err := openAll.DecryptBytes(ctx, doc, kr, nil)
				if err != nil || len(rep.Failures) != n {
					b.Fatalf("%d failures, %v", len(rep.Failures), err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/token")
		})
	}
}
