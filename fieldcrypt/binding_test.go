package fieldcrypt

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// policyMap is a Policy from a map: key → action.
type policyMap map[string]Action

func (p policyMap) Action(key string) (Action, Masker) {
	a := p[key]
	if a == ActionMask {
		return a, func(_ context.Context, dst []byte, _ TokenInfo, _ []byte, _ Keyring) ([]byte, error) {
			return append(dst, `"***"`...), nil
		}
	}
	return a, nil
}

func sealFor(t *testing.T, kr Keyring, key string, mode Mode, value string) string {
	t.Helper()
	k, err := kr.SealKey(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := SealString(k, mode, value)
	if err != nil {
		t.Fatal(err)
	}
	return string(tok)
}

// The decryption oracle of issue 12: someone who can read the store (a
// leaked backup) and has an ordinary account pastes another person's
// token into a field of their own and reads it back through the sidecar.
// A bound decryptor opens a token only in a field sealed under its own key
// and mode.
func TestBoundDecryptorOpensOnlyInPlace(t *testing.T) {
	kr := NewStaticKeyring(testKey(t, "pii", 1), testKey(t, "contact", 1))
	ssn := sealFor(t, kr, "pii", ModeRandom, "078-05-1120")
	email := sealFor(t, kr, "contact", ModeDeterministic, "ann@example.com")
	places := []FieldRule{
		{Selector: MustParseSelector("$.ssn"), Key: "pii", Mode: ModeRandom},
		{Selector: MustParseSelector("$.email"), Key: "contact", Mode: ModeDeterministic},
		{Selector: MustParseSelector("$.rows[*].doc.ssn"), Key: "pii", Mode: ModeRandom},
	}
	d, err := NewBoundDecryptor(policyMap{"pii": ActionOpen, "contact": ActionOpen}, places, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	doc := `{"ssn":"` + ssn + `","notes":"` + ssn + `","email":"` + ssn + `","other":{"ssn":"` + ssn + `"},` +
		`"rows":[{"doc":{"ssn":"` + ssn + `"}},{"key":"` + email + `"}],"list":["` + ssn + `"],"e2":"` + email + `"}`
	out, rep, err := d.DecryptBytes(context.Background(), []byte(doc), kr, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := string(out)
	if n := strings.Count(got, "078-05-1120"); n != 2 {
		t.Errorf("opened %d times, want 2 (ssn and rows[0].doc.ssn): %s", n, got)
	}
	if !strings.HasPrefix(got, `{"ssn":"078-05-1120","notes":"`+ssn+`","email":"`+ssn+`"`) {
		t.Errorf("out = %s", got)
	}
	if strings.Contains(got, "ann@example.com") {
		t.Errorf("a contact token outside email was opened: %s", got)
	}
	if rep.Misplaced != 1 {
		// Only tokens at a place are examined: email holds a pii token.
		t.Errorf("Misplaced = %d, want 1 (a pii token in email)", rep.Misplaced)
	}

	// A stream of change lines, each bound at its own root.
	d2, err := NewBoundDecryptor(policyMap{"pii": ActionOpen}, []FieldRule{
		{Selector: MustParseSelector("$.doc.ssn"), Key: "pii", Mode: ModeRandom},
	}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	stream := `{"seq":1,"doc":{"ssn":"` + ssn + `"}}` + "\n" + `{"seq":2,"id":"` + ssn + `"}` + "\n"
	out, _, err = d2.DecryptBytes(context.Background(), []byte(stream), kr, &CallOptions{Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"seq":1,"doc":{"ssn":"078-05-1120"}}` + "\n" + `{"seq":2,"id":"` + ssn + `"}` + "\n"
	if string(out) != want {
		t.Errorf("stream:\n got %s\nwant %s", out, want)
	}
}

// Request side: a token only where the field's own rule would have put
// it.
func TestTokenPolicyOnRequests(t *testing.T) {
	kr := NewStaticKeyring(testKey(t, "pii", 1), testKey(t, "contact", 1), testKey(t, "card", 1), testKey(t, "other", 1))
	pol := policyMap{"pii": ActionOpen, "card": ActionMask, "contact": ActionLeave, "other": ActionLeave}
	ctx := WithTokenPolicy(context.Background(), pol)
	enc, err := NewEncryptor([]FieldRule{
		{Selector: MustParseSelector("$.ssn"), Key: "pii", Mode: ModeRandom},
		{Selector: MustParseSelector("$.card"), Key: "card", Mode: ModeRandom},
		{Selector: MustParseSelector("$.email"), Key: "contact", Mode: ModeDeterministic},
		{Selector: MustParseSelector("$.code"), Key: "contact", Mode: ModeRandom},
	}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	pii := sealFor(t, kr, "pii", ModeRandom, "078-05-1120")
	card := sealFor(t, kr, "card", ModeRandom, "4111111111111111")
	email := sealFor(t, kr, "contact", ModeDeterministic, "ann@example.com")
	other := sealFor(t, kr, "other", ModeRandom, "x")
	escaped := `\u0073` + pii[1:]
	for _, tc := range []struct {
		name, doc string
		refused   bool
		kept      []string // tokens that must be forwarded as they are
		sealed    []string // tokens that must not be (sealed as data)
	}{
		{name: "an opened key's token in its own field", doc: `{"ssn":"` + pii + `"}`, refused: true},
		{name: "an opened key's token in a free-text field", doc: `{"notes":"` + pii + `"}`, refused: true},
		{name: "an opened key's token spelled with an escape", doc: `{"notes":"` + escaped + `"}`, refused: true},
		{name: "an opened key's token in a nested list", doc: `{"a":[{"b":["` + pii + `"]}]}`, refused: true},
		{name: "a masked key's token in its own field round-trips", doc: `{"card":"` + card + `"}`, kept: []string{card}},
		{name: "a masked key's token in another field", doc: `{"ssn":"` + card + `"}`, refused: true},
		{name: "a masked key's token in a free-text field", doc: `{"notes":"` + card + `"}`, refused: true},
		{name: "a left key's token in its own field round-trips", doc: `{"email":"` + email + `"}`, kept: []string{email}},
		{name: "a left key's token in a field of another mode is data", doc: `{"code":"` + email + `"}`, sealed: []string{email}},
		{name: "a left key's token in another key's field is data", doc: `{"email":"` + other + `"}`, sealed: []string{other}},
		{name: "a left key's token in a free-text field passes", doc: `{"notes":"` + other + `"}`, kept: []string{other}},
		{name: "no token at all", doc: `{"ssn":"078-05-1120","notes":"\u0041"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := enc.EncryptBytes(ctx, []byte(tc.doc), kr, nil)
			if tc.refused {
				if !errors.Is(err, ErrTokenNotAllowed) || out != nil {
					t.Fatalf("out %s, err %v; want ErrTokenNotAllowed", out, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range tc.kept {
				if !strings.Contains(string(out), k) {
					t.Errorf("token not kept: %s", out)
				}
			}
			for _, k := range tc.sealed {
				if strings.Contains(string(out), k) {
					t.Errorf("token kept where it must be sealed as data: %s", out)
				}
			}
		})
	}
	// Without a policy the encryptor keeps what opens, as before.
	out, _, err := enc.EncryptBytes(context.Background(), []byte(`{"notes":"`+pii+`","ssn":"`+pii+`"}`), kr, nil)
	if err != nil || strings.Count(string(out), pii) != 2 {
		t.Errorf("without a policy: %s %v", out, err)
	}
}

func TestCheckToken(t *testing.T) {
	kr := NewStaticKeyring(testKey(t, "pii", 1), testKey(t, "contact", 1))
	ctx := WithTokenPolicy(context.Background(), policyMap{"pii": ActionOpen, "contact": ActionLeave})
	pii := sealFor(t, kr, "pii", ModeRandom, "078-05-1120")
	email := sealFor(t, kr, "contact", ModeDeterministic, "ann@example.com")
	if _, err := CheckToken(ctx, kr, "contact", ModeDeterministic, pii); !errors.Is(err, ErrTokenNotAllowed) {
		t.Errorf("a pii token in an email lookup: %v", err)
	}
	if keep, err := CheckToken(ctx, kr, "contact", ModeDeterministic, email); !keep || err != nil {
		t.Errorf("own token: %v %v", keep, err)
	}
	if keep, err := CheckToken(ctx, kr, "contact", ModeRandom, email); keep || err != nil {
		t.Errorf("mode downgrade kept: %v %v", keep, err)
	}
	if keep, err := CheckToken(ctx, kr, "contact", ModeDeterministic, "ann@example.com"); keep || err != nil {
		t.Errorf("plaintext: %v %v", keep, err)
	}
	if err := CheckLooseValue(ctx, pii); !errors.Is(err, ErrTokenNotAllowed) {
		t.Errorf("loose pii token: %v", err)
	}
	if err := CheckLooseValue(ctx, email); err != nil {
		t.Errorf("loose left token: %v", err)
	}
}
