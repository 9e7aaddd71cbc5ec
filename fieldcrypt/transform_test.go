package fieldcrypt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

// rule builds a FieldRule from "selector key mode [null]".
func rule(t testing.TB, spec string) FieldRule {
	t.Helper()
	f := strings.Fields(spec)
	null := f[len(f)-1] == "null"
	if null {
		f = f[:len(f)-1]
	}
	mode, err := ParseMode(f[len(f)-1])
	if err != nil {
		t.Fatal(err)
	}
	sel := strings.Join(f[:len(f)-2], " ")
	return FieldRule{Selector: MustParseSelector(sel), Key: f[len(f)-2], Mode: mode, EncryptNull: null}
}

func newEnc(t testing.TB, specs ...string) *Encryptor {
	t.Helper()
	var rules []FieldRule
	for _, s := range specs {
		rules = append(rules, rule(t, s))
	}
	e, err := NewEncryptor(rules, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

var openAll = NewDecryptor(PolicyFunc(func(string) (Action, Masker) { return ActionOpen, nil }), Limits{})

// roundTrip encrypts doc, checks that the protected values are gone, and
// decrypts it back.
func roundTrip(t *testing.T, e *Encryptor, kr Keyring, doc string) (enc, dec string) {
	t.Helper()
	ctx := context.Background()
	out, _, err := e.EncryptBytes(ctx, []byte(doc), kr, nil)
	if err != nil {
		t.Fatalf("encrypt %s: %v", doc, err)
	}
	back, _, err := openAll.DecryptBytes(ctx, out, kr, &CallOptions{Strict: true})
	if err != nil {
		t.Fatalf("decrypt %s: %v", out, err)
	}
	return string(out), string(back)
}

func TestEncryptKeepsEverythingElse(t *testing.T) {
	kr := testKeyring(t)
	e := newEnc(t, "$.ssn pii random", "$.docs[*].email contact deterministic")
	// Odd but valid spacing, key order, escapes and number spellings
	// outside the protected values must survive byte for byte.
	doc := " {\n\t\"z\" : 1.50E+2 ,\"ssn\":\"123\" , \"docs\":[ {\"email\" :\"a@b\", \"n\":-0.0}, {} ,[]],\r\n\"esc\":\"\\u00e9\\/\\n\", \"big\": 123456789012345678901234567890}\n "
	enc, dec := roundTrip(t, e, kr, doc)
	if dec != doc {
		t.Errorf("round trip changed the document:\n got %q\nwant %q", dec, doc)
	}
	if strings.Contains(enc, `"123"`) || strings.Contains(enc, "a@b") {
		t.Errorf("protected value left in plaintext: %s", enc)
	}
	// What is outside the tokens is exactly the input outside the values.
	stripped := tokenRE(enc)
	want := strings.NewReplacer(`"123"`, `"T"`, `"a@b"`, `"T"`).Replace(doc)
	if stripped != want {
		t.Errorf("bytes outside the values changed:\n got %q\nwant %q", stripped, want)
	}
}

// tokenRE replaces every token string in s by "T".
func tokenRE(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, `"sc`)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		if !HasTokenPrefix(s[i+1:]) {
			b.WriteString(s[:i+1])
			s = s[i+1:]
			continue
		}
		j := strings.IndexByte(s[i+1:], '"')
		b.WriteString(s[:i])
		b.WriteString(`"T"`)
		s = s[i+j+2:]
	}
}

func TestEveryTypeRoundTrips(t *testing.T) {
	kr := testKeyring(t)
	values := []string{
		`"plain"`, `""`, `"caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \b\f\n\r\t"`, `"日本語"`,
		`9007199254740993`, `123456789012345678901234567890`, `0.1000`, `-0`, `1E400`, `-1.5e-10`,
		`true`, `false`, `null`,
		`{}`, `[]`, `{"a" : [1, 2, {"b":null}], "c":"\u0041"}`, `[ "x" , 1.0 ]`,
	}
	for _, mode := range []string{"random", "deterministic"} {
		e := newEnc(t, "$.v pii "+mode+" null")
		for _, v := range values {
			t.Run(mode+" "+v, func(t *testing.T) {
				doc := `{"v": ` + v + `, "w": 1}`
				enc, dec := roundTrip(t, e, kr, doc)
				if !strings.HasPrefix(enc, `{"v": "`+TokenPrefix) {
					t.Fatalf("value not encrypted: %s", enc)
				}
				want := doc
				if mode == "deterministic" && strings.HasPrefix(v, `"`) {
					want = `{"v": "` + string(appendCanonical(nil, []byte(v[1:len(v)-1]))) + `", "w": 1}`
				}
				if dec != want {
					t.Errorf("got %s, want %s", dec, want)
				}
			})
		}
	}
}

func TestNullLeftUnlessEncryptNull(t *testing.T) {
	kr := testKeyring(t)
	ctx := context.Background()
	var events []FieldEvent
	opt := &CallOptions{OnField: func(ev FieldEvent) { events = append(events, ev) }}
	out, _, err := newEnc(t, "$.a pii random").EncryptBytes(ctx, []byte(`{"a":null}`), kr, opt)
	if err != nil || string(out) != `{"a":null}` {
		t.Errorf("default: %s %v", out, err)
	}
	if len(events) != 1 || events[0].Action != "left" || events[0].Path != "$.a" {
		t.Errorf("events %+v", events)
	}
	out, _, err = newEnc(t, "$.a pii random null").EncryptBytes(ctx, []byte(`{"a":null}`), kr, nil)
	if err != nil || !strings.HasPrefix(string(out), `{"a":"`+TokenPrefix) {
		t.Errorf("EncryptNull: %s %v", out, err)
	}
}

func TestFirstRuleWins(t *testing.T) {
	kr := testKeyring(t)
	ctx := context.Background()
	for _, tt := range []struct {
		rules []string
		key   string
		mode  Mode
	}{
		{[]string{"$.a contact deterministic", "$..a pii random"}, "contact", ModeDeterministic},
		{[]string{"$..a pii random", "$.a contact deterministic"}, "pii", ModeRandom},
		{[]string{"$.a.b contact random", "$.a pii deterministic"}, "pii", ModeDeterministic}, // $.a.b never sees $.a's inside
	} {
		t.Run(strings.Join(tt.rules, ", "), func(t *testing.T) {
			out, _, err := newEnc(t, tt.rules...).EncryptBytes(ctx, []byte(`{"a":{"b":1}}`), kr, nil)
			if err != nil {
				t.Fatal(err)
			}
			tok := strings.TrimSuffix(strings.TrimPrefix(string(out), `{"a":"`), `"}`)
			info, err := ParseTokenInfo([]byte(tok))
			if err != nil || info.Key != tt.key || info.Mode != tt.mode || info.Type != TypeHidden {
				t.Errorf("%s: %+v %v", out, info, err)
			}
			k, _ := kr.OpenKey(ctx, info.Key, info.KeyVersion)
			if typ, _, err := OpenToken(k, []byte(tok)); err != nil || typ != TypeObject {
				t.Errorf("%s opens as %v, %v", out, typ, err)
			}
		})
	}
}

func TestSelectorsInDocuments(t *testing.T) {
	kr := testKeyring(t)
	tests := []struct {
		sel, doc, want string // want: the document with "T" for each token
	}{
		{"$.ssn", `{"ssn":"1","x":{"ssn":"2"}}`, `{"ssn":"T","x":{"ssn":"2"}}`},
		{"$.docs[*].ssn", `{"docs":[{"ssn":"1"},{"ssn":2},{"x":1}],"ssn":"3"}`, `{"docs":[{"ssn":"T"},{"ssn":"T"},{"x":1}],"ssn":"3"}`},
		{"$..diagnosis", `{"diagnosis":1,"a":[{"diagnosis":[2]},{"b":{"diagnosis":"3"}}]}`, `{"diagnosis":"T","a":[{"diagnosis":"T"},{"b":{"diagnosis":"T"}}]}`},
		{"$.a[1]", `{"a":["x","y","z"]}`, `{"a":["x","T","z"]}`},
		{"$.a.*", `{"a":{"p":1,"q":[2]},"b":{"p":1}}`, `{"a":{"p":"T","q":"T"},"b":{"p":1}}`},
		{"$[*].x", `[{"x":1},{"y":2},{"x":3}]`, `[{"x":"T"},{"y":2},{"x":"T"}]`},
		{"$['a b']", `{"a b":1,"a":2}`, `{"a b":"T","a":2}`},
		{"$.ssn", `{"s\u0073n":"1"}`, `{"s\u0073n":"T"}`}, // keys compare by value
		{"$.é", `{"\u00e9":"1"}`, `{"\u00e9":"T"}`},
		{"$.ssn", `["ssn"]`, `["ssn"]`},
		{"$.ssn", `"ssn"`, `"ssn"`},
		{"$.a.b", `{"a":[{"b":1}],"c":{"a":{"b":1}}}`, `{"a":[{"b":1}],"c":{"a":{"b":1}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.sel+" "+tt.doc, func(t *testing.T) {
			enc, dec := roundTrip(t, newEnc(t, tt.sel+" pii random"), kr, tt.doc)
			if got := tokenRE(enc); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
			if dec != tt.doc {
				t.Errorf("round trip: %s", dec)
			}
		})
	}
}

func TestEncryptRefuses(t *testing.T) {
	kr := testKeyring(t)
	ctx := context.Background()
	e := newEnc(t, "$.ssn pii random", "$.a.*.b pii random")
	deep := strings.Repeat("[", 513) + strings.Repeat("]", 513)
	tests := []struct {
		name, doc string
		want      error
		path      string
		offset    int64
	}{
		{"empty", ``, ErrSyntax, "$", 0},
		{"whitespace only", "  \n", ErrSyntax, "$", 3},
		{"truncated", `{"ssn":"1"`, ErrSyntax, "$.ssn", 10},
		{"missing colon", `{"ssn" "1"}`, ErrSyntax, "$.ssn", 7},
		{"trailing comma", `{"a":1,}`, ErrSyntax, "$", 7},
		{"bad literal", `{"x":tru}`, ErrSyntax, "$.x", 5},
		{"bad number", `{"x":01}`, ErrSyntax, "$.x", 6},
		{"bad number in skipped value", `{"x":[1,2,-]}`, ErrSyntax, "$.x", 11},
		{"control char in string", "{\"x\":\"a\x01\"}", ErrSyntax, "$.x", 7},
		{"bad escape", `{"x":"\q"}`, ErrSyntax, "$.x", 6},
		{"two values", `{} {}`, ErrSyntax, "$", 3},
		{"mismatched close", `{"x":[1}`, ErrSyntax, "$.x", 7},
		{"too deep", deep, ErrTooDeep, "$[0]", 512}, // skipped: no selector reaches inside
		{"invalid UTF-8 in value", "{\"x\":\"\xff\"}", ErrInvalidUTF8, "$.x", 6},
		{"invalid UTF-8 in matched value", "{\"ssn\":\"\xc3\"}", ErrInvalidUTF8, "$.ssn", 8},
		{"invalid UTF-8 in key", "{\"\xed\xa0\x80\":1}", ErrInvalidUTF8, "$", 2},
		{"invalid UTF-8 outside strings", "{\"x\":1\xff}", ErrSyntax, "$.x", 6},
		{"duplicate protected key", `{"ssn":"1","ssn":"2"}`, ErrDuplicateKey, "$.ssn", 16},
		{"duplicate protected key, escaped", `{"ssn":"1","s\u0073n":"2"}`, ErrDuplicateKey, "$.ssn", 21},
		{"duplicate key on a selector's way", `{"a":{"x":{"b":1},"x":{"b":2}}}`, ErrDuplicateKey, "$.a.x", 21},
		{"BOM", "\ufeff{}", ErrSyntax, "$", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, rep, err := e.EncryptBytes(ctx, []byte(tt.doc), kr, nil)
			if out != nil || rep.Keys != nil {
				t.Errorf("partial output on error: %q", out)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			var pe *PathError
			if !errors.As(err, &pe) {
				t.Fatalf("%T is not a *PathError", err)
			}
			if pe.Path != tt.path || pe.Offset != tt.offset {
				t.Errorf("at %s byte %d, want %s byte %d (%v)", pe.Path, pe.Offset, tt.path, tt.offset, err)
			}
			if !strings.HasPrefix(err.Error(), "fieldcrypt: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

// Duplicate keys are only checked where a selector advances: elsewhere the
// document is passed through (it is the datastore's business).
func TestDuplicatesElsewhereAllowed(t *testing.T) {
	kr := testKeyring(t)
	e := newEnc(t, "$.ssn pii random", "$..diag pii random")
	for _, doc := range []string{
		`{"x":1,"x":2,"ssn":"1"}`,
		`{"a":{"y":1,"y":2,"diag":3}}`,
	} {
		if _, _, err := e.EncryptBytes(context.Background(), []byte(doc), kr, nil); err != nil {
			t.Errorf("%s: %v", doc, err)
		}
	}
}

func TestDepthLimit(t *testing.T) {
	kr := testKeyring(t)
	ctx := context.Background()
	nest := func(n int) []byte { return []byte(strings.Repeat(`{"a":`, n) + "1" + strings.Repeat("}", n)) }
	for _, tt := range []struct {
		limit, depth int
		ok           bool
	}{
		{0, 512, true}, {0, 513, false}, {3, 3, true}, {3, 4, false}, {2000, 2000, true},
	} {
		t.Run(fmt.Sprintf("limit %d depth %d", tt.limit, tt.depth), func(t *testing.T) {
			// Through live frames ($..x), skipped subtrees ($.none) and a
			// captured value ($.a), and in decryption.
			for _, sel := range []string{"$..x", "$.none", "$.a"} {
				e, _ := NewEncryptor([]FieldRule{rule(t, sel+" pii random")}, Limits{MaxDepth: tt.limit})
				_, _, err := e.EncryptBytes(ctx, nest(tt.depth), kr, nil)
				if (err == nil) != tt.ok || err != nil && !errors.Is(err, ErrTooDeep) {
					t.Errorf("%s: err = %v", sel, err)
				}
			}
			d := NewDecryptor(PolicyFunc(func(string) (Action, Masker) { return ActionOpen, nil }), Limits{MaxDepth: tt.limit})
			_, _, err := d.DecryptBytes(ctx, nest(tt.depth), kr, nil)
			if (err == nil) != tt.ok {
				t.Errorf("decrypt: err = %v", err)
			}
		})
	}
}

func TestExistingTokens(t *testing.T) {
	kr := testKeyring(t)
	ctx := context.Background()
	e := newEnc(t, "$.ssn pii random")
	k1, _ := kr.OpenKey(ctx, "pii", 1)
	valid, _ := SealString(k1, ModeRandom, "123")
	foreign, _ := SealString(testKey(t, "gone", 1), ModeRandom, "123")
	forged := bytes.Clone(valid)
	forged[len(forged)-3] = "AB"[b2i(forged[len(forged)-3] == 'A')]
	tests := []struct {
		name  string
		value string
		left  bool
	}{
		{"valid token of an older version", string(valid), true},
		{"token of a key the keyring lacks", string(foreign), false},
		{"forged token", string(forged), false},
		{"token-like text", "sc1.AAAA", false},
		{"escaped token spelling", `\u0073c1.` + string(valid[4:]), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := `{"ssn":"` + tt.value + `"}`
			out, rep, err := e.EncryptBytes(ctx, []byte(doc), kr, nil)
			if err != nil {
				t.Fatal(err)
			}
			if left := string(out) == doc; left != tt.left {
				t.Fatalf("left alone = %v, want %v: %s", left, tt.left, out)
			}
			if tt.left != (rep.Tokens == 1) {
				t.Errorf("Report.Tokens = %d", rep.Tokens)
			}
			if !tt.left {
				// Encrypted as plaintext: decrypting gives the text back.
				back, _, err := openAll.DecryptBytes(ctx, out, kr, &CallOptions{Strict: true})
				if err != nil || string(back) != doc {
					t.Errorf("decrypt: %s %v", back, err)
				}
			}
		})
	}
}

// countingKeyring counts keyring calls.
type countingKeyring struct {
	Keyring
	mu           sync.Mutex
	seals, opens int
	fail         bool
}

func (c *countingKeyring) SealKey(ctx context.Context, name string) (*DataKey, error) {
	c.mu.Lock()
	c.seals++
	c.mu.Unlock()
	if c.fail {
		return nil, errors.New("hsm unavailable")
	}
	return c.Keyring.SealKey(ctx, name)
}

func (c *countingKeyring) OpenKey(ctx context.Context, name string, v uint32) (*DataKey, error) {
	c.mu.Lock()
	c.opens++
	c.mu.Unlock()
	if c.fail {
		return nil, errors.New("hsm unavailable")
	}
	return c.Keyring.OpenKey(ctx, name, v)
}

func TestKeysResolvedOncePerCall(t *testing.T) {
	ctx := context.Background()
	kr := &countingKeyring{Keyring: testKeyring(t)}
	e := newEnc(t, "$.docs[*].ssn pii random", "$.docs[*].email contact deterministic", "$.docs[*].x pii deterministic")
	var doc strings.Builder
	doc.WriteString(`{"docs":[`)
	for i := range 50 {
		if i > 0 {
			doc.WriteString(",")
		}
		fmt.Fprintf(&doc, `{"ssn":"%d","email":"e%d","x":%d}`, i, i, i)
	}
	doc.WriteString("]}")
	out, rep, err := e.EncryptBytes(ctx, []byte(doc.String()), kr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if kr.seals != 2 {
		t.Errorf("SealKey called %d times for 2 key names", kr.seals)
	}
	if fmt.Sprint(rep.Keys) != "[{pii 2 100} {contact 1 50}]" {
		t.Errorf("Report.Keys = %v", rep.Keys)
	}
	_, rep, err = openAll.DecryptBytes(ctx, out, kr, nil)
	if err != nil || kr.opens != 2 {
		t.Errorf("OpenKey called %d times for 2 key versions (%v)", kr.opens, err)
	}
	if fmt.Sprint(rep.Keys) != "[{pii 2 100} {contact 1 50}]" {
		t.Errorf("decrypt Report.Keys = %v", rep.Keys)
	}
}

// An unavailable key fails the call (fail closed) naming the field, but a
// document that needs no key does not touch the keyring.
func TestKeyUnavailable(t *testing.T) {
	ctx := context.Background()
	kr := &countingKeyring{Keyring: testKeyring(t), fail: true}
	e := newEnc(t, "$.ssn pii random")
	out, _, err := e.EncryptBytes(ctx, []byte(`{"a":1,"ssn":"123-45-6789"}`), kr, nil)
	if out != nil || err == nil || !strings.Contains(err.Error(), "$.ssn") || !strings.Contains(err.Error(), "hsm unavailable") {
		t.Errorf("got %s, %v", out, err)
	}
	if strings.Contains(err.Error(), "123-45") {
		t.Errorf("error shows the value: %v", err)
	}
	if _, _, err := e.EncryptBytes(ctx, []byte(`{"a":1}`), kr, nil); err != nil || kr.seals != 1 {
		t.Errorf("unmatched document: %v, %d SealKey calls", err, kr.seals)
	}
}

func TestDecryptPolicy(t *testing.T) {
	ctx := context.Background()
	kr := testKeyring(t)
	e := newEnc(t, "$.ssn pii random", "$.email contact deterministic", "$.rec pii random")
	enc, _, err := e.EncryptBytes(ctx, []byte(`{"ssn":"123-45-6789","email":"a@b","rec":{"x":[1]},"plain":"sc1 is not a prefix"}`), kr, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		policy Policy
		want   string
		masked int
	}{
		{"open all", &KeyPolicy{Open: []string{"pii", "contact"}},
			`{"ssn":"123-45-6789","email":"a@b","rec":{"x":[1]},"plain":"sc1 is not a prefix"}`, 0},
		{"least privilege", &KeyPolicy{Open: []string{"contact"}},
			`{"ssn":"T","email":"a@b","rec":"T","plain":"sc1 is not a prefix"}`, 0},
		{"mask pii", &KeyPolicy{Open: []string{"contact"}, Mask: map[string]Masker{"pii": MaskString("***")}},
			`{"ssn":"***","email":"a@b","rec":"***","plain":"sc1 is not a prefix"}`, 2},
		{"nil policy leaves all", &KeyPolicy{},
			`{"ssn":"T","email":"T","rec":"T","plain":"sc1 is not a prefix"}`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, rep, err := NewDecryptor(tt.policy, Limits{}).DecryptBytes(ctx, enc, kr, &CallOptions{Strict: true})
			if err != nil {
				t.Fatal(err)
			}
			if got := tokenRE(string(out)); got != tt.want {
				t.Errorf("got %s\nwant %s", got, tt.want)
			}
			if rep.Masked != tt.masked {
				t.Errorf("Masked = %d", rep.Masked)
			}
		})
	}
}

func TestMaskerSeesPlaintext(t *testing.T) {
	ctx := context.Background()
	kr := testKeyring(t)
	k, _ := kr.SealKey(ctx, "pii")
	tok, _ := SealString(k, ModeRandom, "123-45-6789")
	last4 := func(_ context.Context, dst []byte, info TokenInfo, pt []byte, _ Keyring) ([]byte, error) {
		if info.Key != "pii" || info.Type != TypeString || pt[0] != '"' {
			return nil, errors.New("unexpected input")
		}
		return append(append(dst, `"***-**-`...), pt[len(pt)-5:]...), nil
	}
	bad := func(_ context.Context, dst []byte, _ TokenInfo, _ []byte, _ Keyring) ([]byte, error) {
		return append(dst, `not json`...), nil
	}
	doc := []byte(`["` + string(tok) + `"]`)
	out, _, err := NewDecryptor(&KeyPolicy{Mask: map[string]Masker{"pii": last4}}, Limits{}).DecryptBytes(ctx, doc, kr, nil)
	if err != nil || string(out) != `["***-**-6789"]` {
		t.Errorf("got %s, %v", out, err)
	}
	out, rep, err := NewDecryptor(&KeyPolicy{Mask: map[string]Masker{"pii": bad}}, Limits{}).DecryptBytes(ctx, doc, kr, nil)
	if err != nil || string(out) != string(doc) || len(rep.Failures) != 1 {
		t.Errorf("a masker writing invalid JSON must leave the token: %s %+v %v", out, rep, err)
	}
}

func TestDecryptTokensAnywhere(t *testing.T) {
	ctx := context.Background()
	kr := testKeyring(t)
	k, _ := kr.SealKey(ctx, "pii")
	tok := func(v string) string {
		b, err := SealValue(k, ModeRandom, typeOf(v[0]), []byte(v))
		if err != nil {
			t.Fatal(err)
		}
		return `"` + string(b) + `"`
	}
	keyTok := tok(`"key"`)
	in := fmt.Sprintf(`{"a":[%s,{"b":%s}],%s:%s,"c":"plain"}`, tok(`1`), tok(`{"x":"y"}`), keyTok, tok(`[true]`))
	out, rep, err := openAll.DecryptBytes(ctx, []byte(in), kr, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`{"a":[1,{"b":{"x":"y"}}],%s:[true],"c":"plain"}`, keyTok)
	if string(out) != want {
		t.Errorf("got  %s\nwant %s", out, want)
	}
	if len(rep.Keys) != 1 || rep.Keys[0].Fields != 3 {
		t.Errorf("Report.Keys %+v (object keys are never opened)", rep.Keys)
	}
}

func TestDecryptFailures(t *testing.T) {
	ctx := context.Background()
	kr := testKeyring(t)
	k, _ := kr.SealKey(ctx, "pii")
	good, _ := SealString(k, ModeRandom, "secret-value")
	bad := bytes.Clone(good)
	bad[20] = "AB"[b2i(bad[20] == 'A')] // another base64url character
	unknown, _ := SealString(testKey(t, "gone", 4), ModeRandom, "secret-value")
	doc := fmt.Sprintf(`{"a":"%s","b":{"c":["%s"]},"d":"%s","e":"sc1.not a token","f":"sc9.future"}`, good, bad, unknown)

	out, rep, err := openAll.DecryptBytes(ctx, []byte(doc), kr, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`{"a":"secret-value","b":{"c":["%s"]},"d":"%s","e":"sc1.not a token","f":"sc9.future"}`, bad, unknown)
	if string(out) != want {
		t.Errorf("got  %s\nwant %s", out, want)
	}
	var got []string
	for _, f := range rep.Failures {
		got = append(got, fmt.Sprintf("%s %s %d %v", f.Path, f.Key, f.Version, errors.Is(f.Err, ErrAuthentication) || errors.Is(f.Err, ErrUnknownKey) || errors.Is(f.Err, ErrNotToken) || errors.Is(f.Err, ErrTokenVersion)))
		if strings.Contains(f.Err.Error(), "secret") {
			t.Errorf("failure shows content: %v", f.Err)
		}
	}
	if fmt.Sprint(got) != "[$.b.c[0] pii 2 true $.d gone 4 true $.e  0 true $.f  0 true]" {
		t.Errorf("failures %v", got)
	}

	_, _, err = openAll.DecryptBytes(ctx, []byte(doc), kr, &CallOptions{Strict: true})
	var pe *PathError
	if !errors.As(err, &pe) || pe.Path != "$.b.c[0]" || !errors.Is(err, ErrAuthentication) || strings.Count(err.Error(), "$.b.c[0]") != 1 {
		t.Errorf("strict: %v", err)
	}
	if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), string(bad[4:])) {
		t.Errorf("strict error shows content: %v", err)
	}
}

func TestDecryptLenient(t *testing.T) {
	ctx := context.Background()
	kr := testKeyring(t)
	k, _ := kr.SealKey(ctx, "pii")
	tok, _ := SealString(k, ModeRandom, "x")
	doc := `{"a":"` + string(tok) + `","b":[1,2,` + "\xff" + `"c":"` + string(tok) + `"}`
	if _, _, err := openAll.DecryptBytes(ctx, []byte(doc), kr, nil); !errors.Is(err, ErrSyntax) {
		t.Fatalf("not lenient: %v", err)
	}
	for _, name := range []string{"bytes", "reader"} {
		t.Run(name, func(t *testing.T) {
			var out []byte
			var rep Report
			var err error
			opt := &CallOptions{Lenient: true}
			if name == "bytes" {
				out, rep, err = openAll.DecryptBytes(ctx, []byte(doc), kr, opt)
			} else {
				var buf bytes.Buffer
				rep, err = openAll.Decrypt(ctx, &buf, iotest.HalfReader(strings.NewReader(doc)), kr, opt)
				out = buf.Bytes()
			}
			if err != nil {
				t.Fatal(err)
			}
			// Opened up to the error, the rest copied unchanged.
			want := `{"a":"x","b":[1,2,` + "\xff" + `"c":"` + string(tok) + `"}`
			if string(out) != want {
				t.Errorf("got  %q\nwant %q", out, want)
			}
			if len(rep.Failures) != 1 || !errors.Is(rep.Failures[0].Err, ErrSyntax) || rep.Failures[0].Path != "$.b[2]" {
				t.Errorf("failures %+v", rep.Failures)
			}
		})
	}
}

func TestDecryptStream(t *testing.T) {
	ctx := context.Background()
	kr := testKeyring(t)
	e := newEnc(t, "$.doc.ssn pii random")
	var in strings.Builder
	var want strings.Builder
	for i := range 5 {
		line := fmt.Sprintf(`{"seq":%d,"doc":{"ssn":"%d"}}`, i, i)
		out, _, err := e.EncryptBytes(ctx, []byte(line), kr, nil)
		if err != nil {
			t.Fatal(err)
		}
		in.Write(out)
		in.WriteString("\n\n") // CouchDB heartbeats are blank lines
		want.WriteString(line + "\n\n")
	}
	in.WriteString("1 2\n\"s\"[]")
	want.WriteString("1 2\n\"s\"[]")
	opt := &CallOptions{Stream: true}
	out, rep, err := openAll.DecryptBytes(ctx, []byte(in.String()), kr, opt)
	if err != nil || string(out) != want.String() || rep.Keys[0].Fields != 5 {
		t.Errorf("got %q %+v %v", out, rep, err)
	}
	for _, bad := range []string{"1true", `{}x`, "[1] 2\xff"} {
		if _, _, err := openAll.DecryptBytes(ctx, []byte(bad), kr, opt); err == nil {
			t.Errorf("stream %q accepted", bad)
		}
	}
	if out, _, err := openAll.DecryptBytes(ctx, []byte("\n\n"), kr, opt); err != nil || string(out) != "\n\n" {
		t.Errorf("heartbeats only: %q %v", out, err)
	}
}

// flushRecorder records what had been written at each flush.
type flushRecorder struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	flushed chan string
}

func (f *flushRecorder) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.buf.Write(p)
}

func (f *flushRecorder) Flush() error {
	f.mu.Lock()
	s := f.buf.String()
	f.mu.Unlock()
	f.flushed <- s
	return nil
}

// A continuous feed must reach the client value by value: before the
// transformer blocks for the next line, what it has is written and
// flushed. The test feeds a line, waits for its flush, then feeds the next.
func TestStreamFlushesBeforeBlocking(t *testing.T) {
	ctx := context.Background()
	kr := testKeyring(t)
	k, _ := kr.SealKey(ctx, "pii")
	tok, _ := SealString(k, ModeRandom, "v")
	pr, pw := io.Pipe()
	rec := &flushRecorder{flushed: make(chan string, 100)}
	done := make(chan error, 1)
	go func() {
		_, err := openAll.Decrypt(ctx, rec, pr, kr, &CallOptions{Stream: true, Flush: rec.Flush})
		done <- err
	}()
	var want string
	for i := range 3 {
		line := fmt.Sprintf(`{"seq":%d,"v":"%s"}`+"\n", i, tok)
		want += fmt.Sprintf(`{"seq":%d,"v":"v"}`+"\n", i)
		if _, err := pw.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		// Wait for the flush that carries this line (a heartbeat-free
		// feed: nothing else would unblock us; the test deadline
		// catches a hang).
		for got := <-rec.flushed; !strings.HasPrefix(got, want); got = <-rec.flushed {
		}
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if rec.buf.String() != want {
		t.Errorf("got %q", rec.buf.String())
	}
}

// The reader path must give the same bytes as the []byte path whatever
// the read sizes, including one byte at a time (every token, key, escape
// and UTF-8 sequence then straddles a refill).
func TestReaderMatchesBytes(t *testing.T) {
	ctx := context.Background()
	kr := testKeyring(t)
	e := newEnc(t, "$.docs[*].ssn pii deterministic", "$..note contact deterministic", "$.docs[*].blob pii deterministic")
	doc := `{"docs":[{"ssn":"12\u00e93","note":{"t":"é😀 \"x\""},"blob":[` + strings.Repeat(`"abcdefghij",`, 500) + `0]},` +
		`{"long":"` + strings.Repeat("x", 100000) + `","s\u0073n":7,"` + strings.Repeat("k", 70000) + `":1}]}`
	want, _, err := e.EncryptBytes(ctx, []byte(doc), kr, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantDec, _, err := openAll.DecryptBytes(ctx, want, kr, nil)
	if err != nil {
		t.Fatal(err)
	}
	readers := map[string]func(string) io.Reader{
		"one byte": func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) },
		"half":     func(s string) io.Reader { return iotest.HalfReader(strings.NewReader(s)) },
		"data+EOF": func(s string) io.Reader { return iotest.DataErrReader(strings.NewReader(s)) },
		"whole":    func(s string) io.Reader { return strings.NewReader(s) },
	}
	for name, mk := range readers {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			if _, err := e.Encrypt(ctx, &out, mk(doc), kr, nil); err != nil {
				t.Fatal(err)
			}
			if out.String() != string(want) {
				t.Fatalf("encrypt differs from EncryptBytes")
			}
			out.Reset()
			if _, err := openAll.Decrypt(ctx, &out, mk(string(want)), kr, nil); err != nil {
				t.Fatal(err)
			}
			if out.String() != string(wantDec) {
				t.Fatalf("decrypt differs from DecryptBytes")
			}
		})
	}
}

// Memory is bounded by what must be held (the largest matched value or
// token, an object key), not by the document: long unmatched strings and
// many values stream through a window that does not grow.
func TestWindowStaysSmall(t *testing.T) {
	ctx := context.Background()
	kr := testKeyring(t)
	e := newEnc(t, "$.docs[*].ssn pii random")
	var doc strings.Builder
	doc.WriteString(`{"big":"` + strings.Repeat("y", 4<<20) + `","docs":[`)
	for i := range 20000 {
		fmt.Fprintf(&doc, `{"ssn":"%d","pad":"%s"},`, i, strings.Repeat("p", 100))
	}
	doc.WriteString(`{}]}`)
	check := func(name string, run func(m *machine) error) {
		m := getMachine(ctx, kr, nil)
		defer putMachine(m)
		m.rbuf = nil // a pooled machine may hold a window grown by another test
		if err := run(m); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c := cap(m.s.buf); c > readBufSize {
			t.Errorf("%s: window grew to %d bytes", name, c)
		}
	}
	var enc bytes.Buffer
	check("encrypt", func(m *machine) error {
		m.setEncrypt(e.impl, nil)
		_, err := m.runReader(&enc, strings.NewReader(doc.String()))
		return err
	})
	check("decrypt", func(m *machine) error {
		m.dec = openAll.impl
		m.maxDepth = DefaultMaxDepth
		_, err := m.runReader(io.Discard, bytes.NewReader(enc.Bytes()))
		return err
	})
}

type errWriter struct{ n int }

func (w *errWriter) Write(p []byte) (int, error) {
	if w.n -= len(p); w.n < 0 {
		return 0, errors.New("connection reset")
	}
	return len(p), nil
}

func TestIOErrors(t *testing.T) {
	ctx := context.Background()
	kr := testKeyring(t)
	e := newEnc(t, "$.a pii random")
	big := `{"a":1,"b":"` + strings.Repeat("x", 200000) + `"}`
	if _, err := e.Encrypt(ctx, &errWriter{n: 1000}, strings.NewReader(big), kr, nil); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Errorf("write error: %v", err)
	}
	r := io.MultiReader(strings.NewReader(`{"a":`), iotest.ErrReader(errors.New("upstream closed")))
	if _, err := e.Encrypt(ctx, io.Discard, r, kr, nil); err == nil || !strings.Contains(err.Error(), "upstream closed") || errors.Is(err, ErrSyntax) {
		t.Errorf("read error: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.Encrypt(cctx, io.Discard, strings.NewReader(big), kr, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestOnFieldPaths(t *testing.T) {
	ctx := context.Background()
	kr := testKeyring(t)
	e := newEnc(t, "$.docs[*].ssn pii random", "$..diag contact deterministic")
	var events []string
	opt := &CallOptions{OnField: func(ev FieldEvent) {
		events = append(events, fmt.Sprintf("%s %s v%d %s %s %s", ev.Path, ev.Key, ev.Version, ev.Mode, ev.Type, ev.Action))
	}}
	out, _, err := e.EncryptBytes(ctx, []byte(`{"docs":[{"ssn":"1"},{"x":{"diag":[1]},"ssn":null}],"a b":{"diag":2}}`), kr, opt)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"$.docs[0].ssn pii v2 random string encrypted",
		"$.docs[1].x.diag contact v1 deterministic array encrypted",
		"$.docs[1].ssn pii v0 random null left",
		"$['a b'].diag contact v1 deterministic number encrypted",
	}
	if fmt.Sprint(events) != fmt.Sprint(want) {
		t.Errorf("events:\n%s\nwant\n%s", strings.Join(events, "\n"), strings.Join(want, "\n"))
	}
	events = nil
	if _, _, err := NewDecryptor(&KeyPolicy{Open: []string{"pii"}}, Limits{}).DecryptBytes(ctx, out, kr, opt); err != nil {
		t.Fatal(err)
	}
	want = []string{
		"$.docs[0].ssn pii v2 random string decrypted",
		"$.docs[1].x.diag contact v1 deterministic hidden left",
		"$['a b'].diag contact v1 deterministic hidden left",
	}
	if fmt.Sprint(events) != fmt.Sprint(want) {
		t.Errorf("decrypt events:\n%s\nwant\n%s", strings.Join(events, "\n"), strings.Join(want, "\n"))
	}
}

func TestNewEncryptorChecksRules(t *testing.T) {
	sel := MustParseSelector("$.a")
	tests := []struct {
		name  string
		rules []FieldRule
		ok    bool
	}{
		{"same rule twice", []FieldRule{{Selector: sel, Key: "pii", Mode: ModeRandom}, {Selector: sel, Key: "pii", Mode: ModeRandom}}, true},
		{"other key", []FieldRule{{Selector: sel, Key: "pii", Mode: ModeRandom}, {Selector: sel, Key: "contact", Mode: ModeRandom}}, false},
		{"other mode", []FieldRule{{Selector: sel, Key: "pii", Mode: ModeRandom}, {Selector: sel, Key: "pii", Mode: ModeDeterministic}}, false},
		{"same padding twice", []FieldRule{{Selector: sel, Key: "pii", Mode: ModeRandom, Pad: Padding{[]int{16}}}, {Selector: sel, Key: "pii", Mode: ModeRandom, Pad: Padding{[]int{16}}}}, true},
		{"other padding", []FieldRule{{Selector: sel, Key: "pii", Mode: ModeRandom, Pad: Padding{[]int{16}}}, {Selector: sel, Key: "pii", Mode: ModeRandom}}, false},
		{"bad padding", []FieldRule{{Selector: sel, Key: "pii", Mode: ModeRandom, Pad: Padding{[]int{64, 16}}}}, false},
		{"padding too large", []FieldRule{{Selector: sel, Key: "pii", Mode: ModeRandom, Pad: Padding{[]int{MaxPadBucket + 1}}}}, false},
		{"bad key", []FieldRule{{Selector: sel, Key: "PII", Mode: ModeRandom}}, false},
		{"bad mode", []FieldRule{{Selector: sel, Key: "pii"}}, false},
		{"no selector", []FieldRule{{Key: "pii", Mode: ModeRandom}}, false},
		{"no rules", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewEncryptor(tt.rules, Limits{})
			if (err == nil) != tt.ok {
				t.Errorf("err = %v", err)
			}
		})
	}
	if _, err := NewEncryptor(nil, Limits{MaxDepth: -1}); err == nil {
		t.Error("negative MaxDepth accepted")
	}
	if _, err := NewEncryptor(nil, Limits{MaxKeyVersions: -1}); err == nil {
		t.Error("negative MaxKeyVersions accepted")
	}
}

// Encryptors and Decryptors are shared by all requests.
func TestConcurrentUse(t *testing.T) {
	ctx := context.Background()
	kr := testKeyring(t)
	e := newEnc(t, "$.ssn pii deterministic")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				doc := fmt.Sprintf(`{"ssn":"%d-%d"}`, i, j)
				out, _, err := e.EncryptBytes(ctx, []byte(doc), kr, nil)
				if err != nil {
					t.Error(err)
					return
				}
				back, _, err := openAll.DecryptBytes(ctx, out, kr, &CallOptions{Strict: true})
				if err != nil || string(back) != doc {
					t.Errorf("%s -> %s (%v)", doc, back, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Under a wildcard every member name is tracked: many names stay linear
// (a map past a few dozen), and a duplicate is still found among them.
func TestDuplicatesUnderWildcard(t *testing.T) {
	ctx := context.Background()
	kr := testKeyring(t)
	e := newEnc(t, "$.m.*.x pii random")
	for _, n := range []int{5, 40, 5000} {
		var doc strings.Builder
		doc.WriteString(`{"m":{`)
		for i := range n {
			fmt.Fprintf(&doc, `"k%d":{"x":%d},`, i, i)
		}
		ok := doc.String() + `"last":{}},"k1":0}`
		if _, _, err := e.EncryptBytes(ctx, []byte(ok), kr, nil); err != nil {
			t.Errorf("%d distinct names: %v", n, err)
		}
		dup := doc.String() + `"k` + fmt.Sprint(n/2) + `":{}}}`
		_, _, err := e.EncryptBytes(ctx, []byte(dup), kr, nil)
		var pe *PathError
		if !errors.Is(err, ErrDuplicateKey) || !errors.As(err, &pe) || pe.Path != fmt.Sprintf("$.m.k%d", n/2) {
			t.Errorf("%d names with a duplicate: %v", n, err)
		}
	}
}

func TestNoKeyring(t *testing.T) {
	ctx := context.Background()
	e := newEnc(t, "$.a pii random")
	if _, _, err := e.EncryptBytes(ctx, []byte(`{"a":1}`), nil, nil); err == nil {
		t.Error("encrypted without a keyring")
	}
	if out, _, err := e.EncryptBytes(ctx, []byte(`{"b":1}`), nil, nil); err != nil || string(out) != `{"b":1}` {
		t.Errorf("no field to seal: %s %v", out, err)
	}
}
