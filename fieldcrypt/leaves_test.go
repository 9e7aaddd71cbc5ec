package fieldcrypt

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
)

// TestLeavesKeepQueryOperators: with Leaves, a query selector's operator
// object keeps its shape and every compared value becomes the same
// deterministic token as the stored field's, so equality queries match.
func TestLeavesKeepQueryOperators(t *testing.T) {
	kr := testKeyring(t)
	ctx := context.Background()
	e, err := NewEncryptor([]FieldRule{{Selector: MustParseSelector("$.selector.email"), Key: "contact", Mode: ModeDeterministic, Leaves: true}}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	k, err := kr.SealKey(ctx, "contact")
	if err != nil {
		t.Fatal(err)
	}
	tok := func(s string) string {
		b, err := SealString(k, ModeDeterministic, s)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, tc := range []struct{ in, want string }{
		{`{"selector":{"email":"a@b"}}`, `{"selector":{"email":"` + tok("a@b") + `"}}`},
		{`{"selector":{"email":{"$eq":"a@b"}}}`, `{"selector":{"email":{"$eq":"` + tok("a@b") + `"}}}`},
		{`{"selector":{"email":{"$in":["a@b", "c@d"]}}}`, `{"selector":{"email":{"$in":["` + tok("a@b") + `", "` + tok("c@d") + `"]}}}`},
		{`{"selector":{"email":{"$exists":true}},"limit":5}`, `{"selector":{"email":{"$exists":"TOKEN"}},"limit":5}`},
		{`{"selector":{"email":{"$ne":null}}}`, `{"selector":{"email":{"$ne":null}}}`},
		{`{"selector":{"email":{}}}`, `{"selector":{"email":{}}}`},
		{`{"selector":{"email":[]}}`, `{"selector":{"email":[]}}`},
	} {
		out, _, err := e.EncryptBytes(ctx, []byte(tc.in), kr, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		want := tc.want
		if strings.Contains(want, "TOKEN") {
			// A boolean is sealed too (its token, not its value, shows).
			if strings.Contains(string(out), "true") || !strings.Contains(string(out), `"$exists":"`+TokenPrefix) {
				t.Fatalf("%s -> %s: the boolean was not sealed", tc.in, out)
			}
			continue
		}
		if string(out) != want {
			t.Fatalf("%s\n got %s\nwant %s", tc.in, out, want)
		}
		back, _, err := openAll.DecryptBytes(ctx, out, kr, &CallOptions{Strict: true})
		if err != nil || string(back) != tc.in {
			t.Fatalf("round trip of %s: %s %v", tc.in, back, err)
		}
	}
}

// TestLeavesDuplicateMember: inside a Leaves selection every member is
// protected, so a duplicated operator is refused like a duplicated field.
func TestLeavesDuplicateMember(t *testing.T) {
	kr := testKeyring(t)
	e, _ := NewEncryptor([]FieldRule{{Selector: MustParseSelector("$.selector.email"), Key: "contact", Mode: ModeDeterministic, Leaves: true}}, Limits{})
	_, _, err := e.EncryptBytes(context.Background(), []byte(`{"selector":{"email":{"$eq":"a@b","$eq":"c@d"}}}`), kr, nil)
	if !errors.Is(err, ErrDuplicateKey) {
		t.Fatalf("duplicate operator inside a Leaves selection: %v", err)
	}
}

// tokenPattern matches a token as JSON text.
var tokenPattern = regexp.MustCompile(`"` + regexp.QuoteMeta(TokenPrefix) + `[A-Za-z0-9_-]+"`)

// TestLeavesNested: nested operators, mixed types, and a sibling that no
// rule names.
func TestLeavesNested(t *testing.T) {
	kr := testKeyring(t)
	e, _ := NewEncryptor([]FieldRule{{Selector: MustParseSelector("$.q.ssn"), Key: "pii", Mode: ModeRandom, Leaves: true}}, Limits{})
	in := `{"q":{"ssn":{"$or":[{"$eq":"123-45-6789"},{"$gt":42},{"$in":[1.50,"x"]}]},"ward":"B"}}`
	enc, dec := roundTrip(t, e, kr, in)
	// Tokens are taken out first: "42" is two base64 characters, found
	// by chance in about 1 run of 20 (CI failed on it once).
	outside := tokenPattern.ReplaceAllString(enc, `"TOKEN"`)
	for _, plain := range []string{"123-45-6789", "42", "1.50", `"x"`} {
		if strings.Contains(outside, plain) {
			t.Fatalf("%s left in plaintext: %s", plain, enc)
		}
	}
	for _, kept := range []string{`"$or":[{"$eq":"` + TokenPrefix, `{"$gt":"` + TokenPrefix, `"ward":"B"`} {
		if !strings.Contains(enc, kept) {
			t.Fatalf("structure %s lost: %s", kept, enc)
		}
	}
	if dec != in {
		t.Fatalf("round trip:\n got %s\nwant %s", dec, in)
	}
}

// TestLeavesConflict: the same selector with and without Leaves is two
// different rules, which NewEncryptor refuses.
func TestLeavesConflict(t *testing.T) {
	sel := MustParseSelector("$.email")
	_, err := NewEncryptor([]FieldRule{{Selector: sel, Key: "contact", Mode: ModeDeterministic}, {Selector: sel, Key: "contact", Mode: ModeDeterministic, Leaves: true}}, Limits{})
	if err == nil {
		t.Fatal("conflicting rules accepted")
	}
}
