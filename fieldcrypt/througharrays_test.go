package fieldcrypt

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// Version 2 rule files name document fields by dotted path; a document
// holding a list where the author pictured one object must not escape.
func TestThroughArraysSelector(t *testing.T) {
	sel, err := NewSelector([]Step{
		{Kind: StepMember, Name: "bank_accounts", ThroughArrays: true},
		{Kind: StepMember, Name: "iban", ThroughArrays: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := sel.String(); got != "$.bank_accounts.iban" {
		t.Errorf("String = %q", got)
	}
	kr := testKeyring(t)
	enc, err := NewEncryptor([]FieldRule{{Selector: sel, Key: "pii", Mode: ModeRandom}}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range []string{
		`{"bank_accounts":{"iban":"DE44500105175407324931"}}`,
		`{"bank_accounts":[{"iban":"DE44500105175407324931"},{"iban":"DE44500105175407324931"}]}`,
		`{"bank_accounts":[[{"iban":"DE44500105175407324931"}],[]]}`,
		`{"bank_accounts":[1,"x",{"other":1},{"iban":"DE44500105175407324931"}]}`,
	} {
		out, rep, err := enc.EncryptBytes(context.Background(), []byte(doc), kr, nil)
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		// Tokens are taken out first: "DE44" is four base64 characters,
		// found by chance in these tokens about 1 run in 50,000.
		if strings.Contains(tokenPattern.ReplaceAllString(string(out), `"TOKEN"`), "DE44") {
			t.Errorf("%s: plaintext left: %s", doc, out)
		}
		want := strings.Count(doc, "DE44")
		if len(rep.Keys) != 1 || rep.Keys[0].Fields != want {
			t.Errorf("%s: report %+v, want %d fields", doc, rep.Keys, want)
		}
	}
	// Not selected: the member at another place, or the list itself
	// under another name.
	for _, doc := range []string{
		`{"iban":"DE44","accounts":[{"iban":"DE44"}]}`,
		`{"bank_accounts":{"x":{"iban":"DE44"}}}`,
	} {
		out, _, err := enc.EncryptBytes(context.Background(), []byte(doc), kr, nil)
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != doc {
			t.Errorf("%s changed: %s", doc, out)
		}
	}
	// The reference semantics agree.
	for _, c := range []struct {
		path []PathElem
		want bool
	}{
		{[]PathElem{{Name: "bank_accounts"}, {Name: "iban"}}, true},
		{[]PathElem{{Name: "bank_accounts"}, {Index: 0, IsIndex: true}, {Name: "iban"}}, true},
		{[]PathElem{{Name: "bank_accounts"}, {Index: 0, IsIndex: true}, {Index: 2, IsIndex: true}, {Name: "iban"}}, true},
		{[]PathElem{{Name: "bank_accounts"}, {Name: "x"}, {Name: "iban"}}, false},
		{[]PathElem{{Name: "iban"}}, false},
	} {
		if got := sel.Matches(c.path); got != c.want {
			t.Errorf("Matches(%s) = %v", FormatPath(c.path), got)
		}
	}
}

func TestNewSelectorRejects(t *testing.T) {
	for _, steps := range [][]Step{
		nil,
		{{Kind: StepWildcard, ThroughArrays: true}},
		{{Kind: StepIndex, Index: -1}},
		{{Kind: StepMember, Name: "\xff"}},
	} {
		if _, err := NewSelector(steps); err == nil {
			t.Errorf("NewSelector(%+v) accepted", steps)
		}
	}
}

type refusedValue struct{ why string }

func (r *refusedValue) Error() string { return r.why }

func TestCheckRule(t *testing.T) {
	kr := testKeyring(t)
	enc, err := NewEncryptor([]FieldRule{
		{Selector: MustParseSelector("$.ssn"), Key: "pii", Mode: ModeRandom},
		{Selector: MustParseSelector("$._attachments[*].data"), Check: func(Type, []byte) error {
			return &refusedValue{"inline attachment"}
		}},
		{Selector: MustParseSelector("$._id"), Check: func(typ Type, text []byte) error {
			if typ == TypeString && strings.HasPrefix(string(text), `"_design/`) {
				return &refusedValue{"design document"}
			}
			return nil
		}},
	}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := enc.EncryptBytes(context.Background(), []byte(`{"_id":"p1","ssn":"123","_attachments":{"a":{"stub":true}}}`), kr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"_id":"p1"`) || strings.Contains(tokenPattern.ReplaceAllString(string(out), `"TOKEN"`), "123") {
		t.Errorf("out = %s", out)
	}
	for doc, why := range map[string]string{
		`{"_id":"p1","_attachments":{"a":{"data":"aGk="}}}`: "inline attachment",
		`{"_id":"_design/x","ssn":"123"}`:                   "design document",
	} {
		out, _, err := enc.EncryptBytes(context.Background(), []byte(doc), kr, nil)
		var rv *refusedValue
		if !errors.Is(err, ErrFieldRefused) || !errors.As(err, &rv) || rv.why != why || out != nil {
			t.Errorf("%s: out %q, err %v", doc, out, err)
		}
	}
	if _, err := NewEncryptor([]FieldRule{
		{Selector: MustParseSelector("$.a"), Key: "pii", Mode: ModeRandom},
		{Selector: MustParseSelector("$.a"), Check: func(Type, []byte) error { return nil }},
	}, Limits{}); err == nil {
		t.Error("a check and a seal on one selector accepted")
	}
}
