package fieldcrypt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// Token format 2 (docs/FORMAT.md): the type is sealed, values are padded,
// and format 1 tokens keep opening everywhere format 2 ones do.

// The header of a format 2 token says nothing about the value's type, and
// under one key and mode true, false, null and short values all give
// tokens of one length, with or without a Pad.
func TestFormat2HidesTypeAndShortLengths(t *testing.T) {
	k := testKey(t, "pii", 1)
	values := []struct {
		typ  Type
		text string
	}{
		{TypeBool, `true`}, {TypeBool, `false`}, {TypeNull, `null`},
		{TypeNumber, `1`}, {TypeNumber, `-1.5`}, {TypeString, `""`}, {TypeString, `"abcde"`},
		{TypeObject, `{}`}, {TypeArray, `[]`}, {TypeArray, `[1,2]`},
	}
	for _, mode := range []Mode{ModeRandom, ModeDeterministic} {
		for _, pad := range []Padding{{}, {[]int{16}}} {
			t.Run(fmt.Sprintf("%s/pad %s", mode, pad), func(t *testing.T) {
				want := -1
				for _, v := range values {
					tok, err := SealValuePadded(k, mode, v.typ, []byte(v.text), pad)
					if err != nil {
						t.Fatal(err)
					}
					if want < 0 {
						want = len(tok)
					}
					if len(tok) != want {
						t.Errorf("%s: token of %d characters, %s's has %d", v.text, len(tok), values[0].text, want)
					}
					info, err := ParseTokenInfo(tok)
					if err != nil || info.Type != TypeHidden || info.Format != 2 {
						t.Errorf("%s: ParseTokenInfo = %+v, %v", v.text, info, err)
					}
					typ, text, err := OpenToken(k, tok)
					if err != nil || typ != v.typ || string(text) != v.text {
						t.Errorf("%s: opened %v %s %v", v.text, typ, text, err)
					}
				}
			})
		}
	}
}

// Padding hides the length within a bucket and nothing more: equal
// lengths inside one, different lengths across.
func TestPaddingBuckets(t *testing.T) {
	k := testKey(t, "pii", 1)
	pad := Padding{[]int{16, 64, 256}}
	length := func(n int) int {
		tok, err := SealStringPadded(k, ModeRandom, strings.Repeat("x", n), pad)
		if err != nil {
			t.Fatal(err)
		}
		typ, text, err := OpenToken(k, tok)
		if err != nil || typ != TypeString || len(text) != n+2 {
			t.Fatalf("%d bytes: opened %v, %d bytes, %v", n, typ, len(text), err)
		}
		return len(tok)
	}
	same := [][]int{{0, 1, 5, 15, 16}, {17, 40, 64}, {65, 200, 256}, {257, 511, 512}, {513, 768}}
	prev := 0
	for _, group := range same {
		l := length(group[0])
		for _, n := range group[1:] {
			if got := length(n); got != l {
				t.Errorf("%d and %d bytes are in one bucket but give %d and %d characters", group[0], n, l, got)
			}
		}
		if l <= prev {
			t.Errorf("bucket of %d bytes is not longer than the one before", group[0])
		}
		prev = l
	}
}

func TestPaddedLen(t *testing.T) {
	tests := []struct {
		buckets []int
		n, want int
	}{
		{nil, 0, 5}, {nil, 5, 5}, {nil, 6, 6}, {nil, 1000, 1000},
		{[]int{16}, 0, 16}, {[]int{16}, 16, 16}, {[]int{16}, 17, 32}, {[]int{16}, 33, 48},
		{[]int{4}, 0, 8}, // the floor comes first: max(0, 5) = 5, then a multiple of 4
		{[]int{1}, 7, 7},
		{[]int{16, 64, 256}, 17, 64}, {[]int{16, 64, 256}, 256, 256}, {[]int{16, 64, 256}, 257, 512},
	}
	for _, tt := range tests {
		if got := (Padding{tt.buckets}).PaddedLen(tt.n); got != tt.want {
			t.Errorf("%v: %d bytes pad to %d, want %d", tt.buckets, tt.n, got, tt.want)
		}
	}
}

func TestParsePadding(t *testing.T) {
	tests := []struct {
		in   string
		want string // String() of the result, or "error"
	}{
		{"", "none"}, {"none", "none"}, {"16", "16"}, {" 16, 64 ,256 ", "16,64,256"},
		{"0", "error"}, {"-16", "error"}, {"4097", "error"}, {"4096", "4096"},
		{"64,16", "error"}, {"16,16", "error"}, {"16,x", "error"}, {"16,", "error"},
		{strings.TrimSuffix(strings.Repeat("1,", 17), ","), "error"},
		{"1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16"},
	}
	for _, tt := range tests {
		p, err := ParsePadding(tt.in)
		got := p.String()
		if err != nil {
			got = "error"
			if !strings.HasPrefix(err.Error(), "fieldcrypt: ") {
				t.Errorf("%q: error %q lacks the package prefix", tt.in, err)
			}
		}
		if got != tt.want {
			t.Errorf("ParsePadding(%q) = %s (%v), want %s", tt.in, got, err, tt.want)
		}
	}
	k := testKey(t, "pii", 1)
	if _, err := SealStringPadded(k, ModeRandom, "x", Padding{[]int{0}}); err == nil {
		t.Error("SealStringPadded accepted an invalid Padding")
	}
	if _, err := SealValuePadded(k, ModeRandom, TypeNumber, []byte("1"), Padding{[]int{8, 4}}); err == nil {
		t.Error("SealValuePadded accepted an invalid Padding")
	}
}

// Deterministic mode stays deterministic with padding (it is a function of
// the value), a field's Pad reaches its tokens, and a query parameter
// sealed with the same Pad gives the same token as the document.
func TestPadInRules(t *testing.T) {
	ctx := context.Background()
	kr := testKeyring(t)
	k, _ := kr.SealKey(ctx, "contact")
	pad := Padding{[]int{32}}
	e, err := NewEncryptor([]FieldRule{
		{Selector: MustParseSelector("$.email"), Key: "contact", Mode: ModeDeterministic, Pad: pad},
		{Selector: MustParseSelector("$.short"), Key: "contact", Mode: ModeDeterministic},
	}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	seal := func(doc string) string {
		t.Helper()
		out, _, err := e.EncryptBytes(ctx, []byte(doc), kr, nil)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	a, b := seal(`{"email":"a@b"}`), seal(`{"email":"\u0061@b"}`)
	if a != b {
		t.Errorf("two spellings of one value gave two tokens:\n%s\n%s", a, b)
	}
	long := seal(`{"email":"` + strings.Repeat("x", 32) + `"}`)
	if len(a) != len(long) {
		t.Errorf("1 and 32 bytes under pad 32 differ in length: %d, %d", len(a), len(long))
	}
	want, err := SealStringPadded(k, ModeDeterministic, "a@b", pad)
	if err != nil {
		t.Fatal(err)
	}
	if a != `{"email":"`+string(want)+`"}` {
		t.Errorf("document %s, SealStringPadded %s", a, want)
	}
	unpadded, _ := SealString(k, ModeDeterministic, "a@b")
	if bytes.Equal(unpadded, want) {
		t.Error("padding changed nothing")
	}
	if got := seal(`{"short":"a@b"}`); got != `{"short":"`+string(unpadded)+`"}` {
		t.Errorf("rule without Pad: %s, SealString %s", got, unpadded)
	}
	back, _, err := openAll.DecryptBytes(ctx, []byte(long), kr, &CallOptions{Strict: true})
	if err != nil || string(back) != `{"email":"`+strings.Repeat("x", 32)+`"}` {
		t.Errorf("decrypt: %s %v", back, err)
	}
	// A caller changing its slice after NewEncryptor changes nothing.
	buckets := []int{16}
	e2, _ := NewEncryptor([]FieldRule{{Selector: MustParseSelector("$.a"), Key: "pii", Mode: ModeRandom, Pad: Padding{buckets}}}, Limits{})
	buckets[0] = 4096
	out, _, err := e2.EncryptBytes(ctx, []byte(`{"a":1}`), kr, nil)
	if err != nil || len(out) != len(`{"a":""}`)+tokenLen(ModeRandom, "pii", 1, []int{16}) {
		t.Errorf("the rule's padding changed with the caller's slice: %d bytes, %v", len(out), err)
	}
}

// sealV1 seals a format 1 token, as a sidecar before format 2 did.
func sealV1(t testing.TB, k *DataKey, mode Mode, typ Type, text string) string {
	t.Helper()
	z := sealer{v1: true}
	tok, err := z.seal(nil, k, mode, typ, z.sealPlaintext(mode, typ, []byte(text), strings.Contains(text, `\`)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(tok), TokenPrefixV1) {
		t.Fatalf("not a format 1 token: %s", tok)
	}
	return string(tok)
}

// Format 1 tokens keep opening: in OpenToken, in documents next to format 2
// tokens, through a Masker, and as "already a token" in an encryption.
func TestFormat1StillOpens(t *testing.T) {
	ctx := context.Background()
	kr := testKeyring(t)
	k, _ := kr.OpenKey(ctx, "pii", 1)
	old := sealV1(t, k, ModeRandom, TypeNumber, `12345678901234567890`)
	oldStr := sealV1(t, k, ModeDeterministic, TypeString, `"123-45-6789"`)

	info, err := ParseTokenInfo([]byte(old))
	if err != nil || info != (TokenInfo{Format: 1, Mode: ModeRandom, Type: TypeNumber, Key: "pii", KeyVersion: 1}) {
		t.Errorf("ParseTokenInfo(format 1) = %+v, %v", info, err)
	}
	if typ, text, err := OpenToken(k, []byte(old)); err != nil || typ != TypeNumber || string(text) != `12345678901234567890` {
		t.Errorf("OpenToken(format 1) = %v %s %v", typ, text, err)
	}

	k2, _ := kr.SealKey(ctx, "pii")
	fresh, _ := SealValue(k2, ModeRandom, TypeObject, []byte(`{"a":1}`))
	doc := fmt.Sprintf(`{"a":"%s","b":["%s","%s"]}`, old, fresh, oldStr)
	if !MayHoldTokens([]byte(doc)) {
		t.Error("MayHoldTokens missed the tokens")
	}
	out, rep, err := openAll.DecryptBytes(ctx, []byte(doc), kr, &CallOptions{Strict: true})
	if err != nil || string(out) != `{"a":12345678901234567890,"b":[{"a":1},"123-45-6789"]}` {
		t.Errorf("mixed document: %s %v", out, err)
	}
	if fmt.Sprint(rep.Keys) != "[{pii 1 2} {pii 2 1}]" {
		t.Errorf("Report.Keys = %v", rep.Keys)
	}

	// Masking: the Masker is told the opened type in both formats.
	var seen []string
	mask := func(_ context.Context, dst []byte, info TokenInfo, _ []byte, _ Keyring) ([]byte, error) {
		seen = append(seen, fmt.Sprintf("%d %s", info.Format, info.Type))
		return append(dst, `"***"`...), nil
	}
	out, _, err = NewDecryptor(&KeyPolicy{Mask: map[string]Masker{"pii": mask}}, Limits{}).DecryptBytes(ctx, []byte(doc), kr, &CallOptions{Strict: true})
	if err != nil || string(out) != `{"a":"***","b":["***","***"]}` {
		t.Errorf("masked: %s %v", out, err)
	}
	if fmt.Sprint(seen) != "[1 number 2 object 1 string]" {
		t.Errorf("the Masker saw %v", seen)
	}

	// Already a token: a format 1 token in a protected field is left alone
	// as before; the rule's padding is not imposed on it.
	e := newEnc(t, "$.ssn pii random")
	in := `{"ssn":"` + oldStr + `"}`
	out, rep, err = e.EncryptBytes(ctx, []byte(in), kr, nil)
	if err != nil || string(out) != in || rep.Tokens != 1 {
		t.Errorf("format 1 token in a protected field: %s %+v %v", out, rep, err)
	}
}

// The events of a decryption give the opened type, and TypeHidden for a
// format 2 token that stays closed.
func TestFormat2Events(t *testing.T) {
	ctx := context.Background()
	kr := testKeyring(t)
	e := newEnc(t, "$.a pii random", "$.b contact random")
	out, _, err := e.EncryptBytes(ctx, []byte(`{"a":true,"b":[1]}`), kr, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	opt := &CallOptions{OnField: func(ev FieldEvent) { got = append(got, ev.Path+" "+ev.Type.String()+" "+ev.Action) }}
	if _, _, err := NewDecryptor(&KeyPolicy{Open: []string{"pii"}}, Limits{}).DecryptBytes(ctx, out, kr, opt); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[$.a bool decrypted $.b hidden left]" {
		t.Errorf("events %v", got)
	}
}

// A format 2 token whose plaintext authenticates but is malformed (made by
// a key holder) is refused, never spliced into a document: no type byte,
// an unknown type byte, a value that is not of its type, garbage in the
// padding.
func TestFormat2ContentChecks(t *testing.T) {
	ctx := context.Background()
	k := testKey(t, "pii", 1)
	kr := NewStaticKeyring(k)
	inners := []struct {
		name  string
		inner []byte
	}{
		{"zeros only", make([]byte, 8)},
		{"unknown type byte", []byte("1x\x00\x00")},
		{"type byte 0x01", []byte("1\x01")},
		{"number type, string value", []byte("abc" + "n\x00\x00")},
		{"bool type, null value", []byte("null" + "b\x00")},
		{"non-zero byte in the padding", []byte("true" + "b\x00\x07\x00")},
		{"string type, raw quote", []byte(`a"b` + "s\x00\x00")},
		{"string type, invalid UTF-8", []byte("\xff" + "s\x00\x00\x00\x00")},
	}
	for _, tt := range inners {
		for _, mode := range []Mode{ModeRandom, ModeDeterministic} {
			t.Run(tt.name+"/"+mode.String(), func(t *testing.T) {
				tok := sealInner(t, k, mode, tt.inner)
				if _, _, err := OpenToken(k, []byte(tok)); !errors.Is(err, ErrTokenContent) {
					t.Errorf("OpenToken: %v", err)
				}
				doc := `{"x":"` + tok + `"}`
				out, rep, err := openAll.DecryptBytes(ctx, []byte(doc), kr, nil)
				if err != nil || string(out) != doc || len(rep.Failures) != 1 || !errors.Is(rep.Failures[0].Err, ErrTokenContent) {
					t.Errorf("decrypt: %s %+v %v", out, rep, err)
				}
			})
		}
	}
	// An empty plaintext cannot hold the type byte: refused unopened.
	if _, _, err := OpenToken(k, []byte(sealInner(t, k, ModeRandom, nil))); !errors.Is(err, ErrNotToken) {
		t.Errorf("empty plaintext: %v", err)
	}
	// The well-formed counterpart opens, whatever the amount of padding.
	for _, z := range []int{0, 1, 100} {
		tok := sealInner(t, k, ModeRandom, append([]byte("falseb"), make([]byte, z)...))
		if typ, text, err := OpenToken(k, []byte(tok)); err != nil || typ != TypeBool || string(text) != "false" {
			t.Errorf("%d bytes of padding: %v %s %v", z, typ, text, err)
		}
	}
}

// sealInner seals an arbitrary format 2 plaintext (value, type byte and
// padding, or anything else) as a key holder could.
func sealInner(t testing.TB, k *DataKey, mode Mode, inner []byte) string {
	t.Helper()
	header := appendHeader(nil, formatV2, mode, 0, k.name, k.version)
	var body []byte
	var err error
	if mode == ModeRandom {
		nonce := make([]byte, gcmNonceSize)
		body, err = k.sealRandom(append(header, nonce...), nonce, inner, header)
	} else {
		body, err = k.sealDeterministic(header, inner, header)
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(appendEncoded(nil, body))
}

func TestTokenPrefixes(t *testing.T) {
	for _, tt := range []struct {
		s    string
		want bool
	}{
		{"sc1.x", true}, {"sc2.x", true}, {"sc2.", true}, {"sc3.x", false}, {"sc2", false}, {"Sc2.x", false}, {"", false},
	} {
		if got := HasTokenPrefix(tt.s); got != tt.want {
			t.Errorf("HasTokenPrefix(%q) = %v", tt.s, got)
		}
	}
	for _, tt := range []struct {
		doc  string
		want bool
	}{
		{`{"a":"sc2.AAAA"}`, true}, {`["sc1.x"]`, true}, {`{"a":"sc3.AAAA"}`, false},
		{`{"a":"sc"}`, false}, {`"sc"sc2.`, true}, {`"scsc2."`, false}, {`"sc2`, false},
		{`{"a":"\u0073c2.AAAA"}`, false}, {`{"sc2.key":1}`, true}, {``, false},
	} {
		if got := MayHoldTokens([]byte(tt.doc)); got != tt.want {
			t.Errorf("MayHoldTokens(%s) = %v", tt.doc, got)
		}
	}
}
