package couchdb

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// bulkBody builds a _bulk_docs body of about size bytes: patient
// documents with protected and unprotected fields, nested objects and
// lists, strings with escapes and brackets.
func bulkBody(size int) []byte {
	var b strings.Builder
	b.WriteString(`{"new_edits":true,"docs":[`)
	for i := 0; b.Len() < size; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"_id":"p-%06d","type":"patient","ssn":"%03d-45-6789","email":"p%d@example.com",`+
			`"patient":{"name":"Ann \"Example\" %d"},"ward":"B","age":%d,"notes":"inhaler [twice] {daily}\\n",`+
			`"visits":[{"date":"2026-01-02","diagnosis":"J45.909"},{"date":"2026-02-03","diagnosis":"R05"}],`+
			`"accounts":[{"iban":"DE%020d"}],"address":{"city":"Paris","zip":"75001"}}`, i, i%1000, i, i, i%90, i)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// The shape check's cost next to the encryption it precedes, on a 1 MiB
// _bulk_docs body: BenchmarkBulkShape alone, BenchmarkBulkEncrypt the
// encryptor alone (rules under docs[*] only), BenchmarkBulkShapeAndEncrypt
// both as the proxy runs them, and BenchmarkBulkEncryptOddShapes the
// encryptor with the rules the profile used before the shape check (every
// field also under the root and its members, for bodies of other shapes).
func BenchmarkBulkShape(b *testing.B) {
	body := bulkBody(1 << 20)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := bulkShape(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBulkEncrypt(b *testing.B) {
	op := newProfile(b).Classify(request("POST", "/clinic/_bulk_docs", "", true))
	benchEncrypt(b, op.Encryptor, false)
}

func BenchmarkBulkShapeAndEncrypt(b *testing.B) {
	p := newProfile(b)
	op := p.Classify(request("POST", "/clinic/_bulk_docs", "", true))
	benchEncrypt(b, op.Encryptor, true)
}

func BenchmarkBulkEncryptOddShapes(b *testing.B) {
	c := clinic()
	every := fieldcrypt.Step{Kind: fieldcrypt.StepWildcard}
	rules, err := documentRules(c, fieldcrypt.Step{Kind: fieldcrypt.StepMember, Name: "docs"}, every)
	if err != nil {
		b.Fatal(err)
	}
	for _, prefix := range [][]fieldcrypt.Step{{every}, nil} {
		more, err := c.DocumentRules(prefix...)
		if err != nil {
			b.Fatal(err)
		}
		rules = append(rules, more...)
	}
	enc, err := fieldcrypt.NewEncryptor(rules, fieldcrypt.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	benchEncrypt(b, enc, false)
}

func benchEncrypt(b *testing.B, enc *fieldcrypt.Encryptor, shape bool) {
	body := bulkBody(1 << 20)
	kr := keyring(b)
	ctx := context.Background()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if shape {
			if err := bulkShape(body); err != nil {
				b.Fatal(err)
			}
		}
		if _, _, err := enc.EncryptBytes(ctx, body, kr, nil); err != nil {
			b.Fatal(err)
		}
	}
}
