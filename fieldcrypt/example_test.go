package fieldcrypt_test

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// exampleKeys returns a keyring with fixed, public key material. Real keys
// come from the key cache (data keys unwrapped by the HSM); never hard-code
// one.
func exampleKeys() *fieldcrypt.StaticKeyring {
	material := func(seed byte) []byte {
		b := make([]byte, fieldcrypt.DataKeySize)
		for i := range b {
			b[i] = seed + byte(i)
		}
		return b
	}
	pii, _ := fieldcrypt.NewDataKey("pii", 1, material(0))
	contact, _ := fieldcrypt.NewDataKey("contact", 1, material(64))
	return fieldcrypt.NewStaticKeyring(pii, contact)
}

func ExampleNewEncryptor() {
	enc, err := fieldcrypt.NewEncryptor([]fieldcrypt.FieldRule{
		{Selector: fieldcrypt.MustParseSelector("$.docs[*].ssn"), Key: "pii", Mode: fieldcrypt.ModeRandom},
		{Selector: fieldcrypt.MustParseSelector("$.docs[*].email"), Key: "contact", Mode: fieldcrypt.ModeDeterministic},
	}, fieldcrypt.Limits{})
	if err != nil {
		fmt.Println(err)
		return
	}
	doc := `{"docs": [{"_id": "p1", "ssn": "123-45-6789", "email": "alice@example.org"}]}`
	out, report, err := enc.EncryptBytes(context.Background(), []byte(doc), exampleKeys(), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(strings.Contains(string(out), "123-45-6789"), strings.Count(string(out), fieldcrypt.TokenPrefix))
	fmt.Println(report.Keys)
	// Output:
	// false 2
	// [{pii 1 1} {contact 1 1}]
}

func ExampleEncryptor_Encrypt() {
	enc, _ := fieldcrypt.NewEncryptor([]fieldcrypt.FieldRule{
		{Selector: fieldcrypt.MustParseSelector("$.selector.email"), Key: "contact", Mode: fieldcrypt.ModeDeterministic},
	}, fieldcrypt.Limits{})
	// A CouchDB _find query: the deterministic token matches the token
	// stored in the documents, so the query still finds them.
	query := strings.NewReader(`{"selector": {"email": "alice@example.org"}, "limit": 1}`)
	if _, err := enc.Encrypt(context.Background(), os.Stdout, query, exampleKeys(), nil); err != nil {
		fmt.Println(err)
	}
	// Output:
	// {"selector": {"email": "sc2.AgIHY29udGFjdAAAAAEETtN8sqz15Xw0lh8wZsw5VN_tpiom631LyCzcy8asa3dr"}, "limit": 1}
}

func ExampleDecryptor_Decrypt() {
	ctx := context.Background()
	keys := exampleKeys()
	enc, _ := fieldcrypt.NewEncryptor([]fieldcrypt.FieldRule{
		{Selector: fieldcrypt.MustParseSelector("$.ssn"), Key: "pii", Mode: fieldcrypt.ModeRandom},
		{Selector: fieldcrypt.MustParseSelector("$.email"), Key: "contact", Mode: fieldcrypt.ModeRandom},
		{Selector: fieldcrypt.MustParseSelector("$.visits"), Key: "pii", Mode: fieldcrypt.ModeRandom},
	}, fieldcrypt.Limits{})
	stored, _, _ := enc.EncryptBytes(ctx, []byte(`{"email":"alice@example.org","ssn":"123-45-6789","visits":[1,2]}`), keys, nil)

	// This sidecar may open contact tokens and shows pii masked.
	dec := fieldcrypt.NewDecryptor(&fieldcrypt.KeyPolicy{
		Open: []string{"contact"},
		Mask: map[string]fieldcrypt.Masker{"pii": fieldcrypt.MaskString("***")},
	}, fieldcrypt.Limits{})
	report, err := dec.Decrypt(ctx, os.Stdout, strings.NewReader(string(stored)), keys, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println()
	fmt.Println(report.Keys, report.Masked)
	// Output:
	// {"email":"alice@example.org","ssn":"***","visits":"***"}
	// [{contact 1 1} {pii 1 2}] 2
}

func ExampleSealString() {
	keys := exampleKeys()
	contact, _ := keys.SealKey(context.Background(), "contact")
	// A URL query parameter (?email=...) sealed like the same string in a
	// JSON body, so that the two tokens are equal.
	tok, err := fieldcrypt.SealString(contact, fieldcrypt.ModeDeterministic, "alice@example.org")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(tok))
	// The header names the key and mode; the type is sealed with the value
	// and known only to a holder of the key.
	info, _ := fieldcrypt.ParseTokenInfo(tok)
	fmt.Printf("format %d: %s v%d %s, type %s\n", info.Format, info.Key, info.KeyVersion, info.Mode, info.Type)
	typ, value, _ := fieldcrypt.OpenToken(contact, tok)
	fmt.Println(typ, string(value))
	// Output:
	// sc2.AgIHY29udGFjdAAAAAEETtN8sqz15Xw0lh8wZsw5VN_tpiom631LyCzcy8asa3dr
	// format 2: contact v1 deterministic, type hidden
	// string "alice@example.org"
}

func ExampleParseSelector() {
	sel, err := fieldcrypt.ParseSelector("$.docs[*]..diagnosis")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, st := range sel.Steps() {
		fmt.Printf("%+v\n", st)
	}
	fmt.Println(sel.Matches([]fieldcrypt.PathElem{{Name: "docs"}, {Index: 0, IsIndex: true}, {Name: "visits"}, {Name: "diagnosis"}}))

	_, err = fieldcrypt.ParseSelector("$.docs[?(@.ssn)]")
	fmt.Println(err)
	// Output:
	// {Kind:1 Name:docs Index:0 Descendant:false ThroughArrays:false}
	// {Kind:3 Name: Index:0 Descendant:false ThroughArrays:false}
	// {Kind:1 Name:diagnosis Index:0 Descendant:true ThroughArrays:false}
	// true
	// fieldcrypt: selector "$.docs[?(@.ssn)]" at offset 7: filters are not supported (hint: select the field directly; every matching value is protected)
}
