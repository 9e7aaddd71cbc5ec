package fieldcrypt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// testKey makes a data key with material derived from its name and
// version, so tests are repeatable.
func testKey(t testing.TB, name string, version uint32) *DataKey {
	t.Helper()
	a := sha256.Sum256([]byte(fmt.Sprintf("test key %s v%d a", name, version)))
	b := sha256.Sum256([]byte(fmt.Sprintf("test key %s v%d b", name, version)))
	k, err := NewDataKey(name, version, append(a[:], b[:]...))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testKeyring holds pii v1 and v2 (v2 primary) and contact v1.
func testKeyring(t testing.TB) *StaticKeyring {
	return NewStaticKeyring(testKey(t, "pii", 1), testKey(t, "pii", 2), testKey(t, "contact", 1))
}

func TestSealOpenEveryType(t *testing.T) {
	k := testKey(t, "pii", 1)
	tests := []struct {
		name  string
		typ   Type
		text  string
		canon string // what a deterministic token opens to, if not text
	}{
		{"plain string", TypeString, `"123-45-6789"`, ""},
		{"empty string", TypeString, `""`, ""},
		{"non-ASCII", TypeString, `"Zoë 日本 😀"`, ""},
		{"escapes", TypeString, `"a\"b\\c\/d\u00e9\n\u0001"`, `"a\"b\\c/dé\n\u0001"`},
		{"surrogate pair escape", TypeString, `"\uD83D\uDE00"`, `"😀"`},
		{"lone surrogate", TypeString, `"\uDEAD"`, `"\udead"`},
		{"integer beyond 2^53", TypeNumber, `9007199254740993`, ""},
		{"decimal", TypeNumber, `0.1000`, ""},
		{"negative exponent", TypeNumber, `-1.0e-7`, ""},
		{"true", TypeBool, `true`, ""},
		{"false", TypeBool, `false`, ""},
		{"null", TypeNull, `null`, ""},
		{"object", TypeObject, `{ "a" : [1, {"b": null}] }`, ""},
		{"empty object", TypeObject, `{}`, ""},
		{"array", TypeArray, `["x", 2, true]`, ""},
	}
	for _, tt := range tests {
		for _, mode := range []Mode{ModeRandom, ModeDeterministic} {
			t.Run(tt.name+"/"+mode.String(), func(t *testing.T) {
				tok, err := SealValue(k, mode, tt.typ, []byte(tt.text))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.HasPrefix(tok, []byte(TokenPrefix)) {
					t.Fatalf("token %s lacks the prefix", tok)
				}
				info, err := ParseTokenInfo(tok)
				if err != nil || info != (TokenInfo{Format: 2, Mode: mode, Type: TypeHidden, Key: "pii", KeyVersion: 1}) {
					t.Errorf("ParseTokenInfo = %+v, %v", info, err)
				}
				typ, text, err := OpenToken(k, tok)
				if err != nil {
					t.Fatal(err)
				}
				want := tt.text
				if mode == ModeDeterministic && tt.canon != "" {
					want = tt.canon
				}
				if typ != tt.typ || string(text) != want {
					t.Errorf("opened %c %s, want %c %s", typ, text, tt.typ, want)
				}
				again, _ := SealValue(k, mode, tt.typ, []byte(tt.text))
				if (mode == ModeDeterministic) != bytes.Equal(tok, again) {
					t.Errorf("%s mode: sealing twice gave equal=%v tokens", mode, bytes.Equal(tok, again))
				}
				if got := len(tok); got != tokenLen(mode, "pii", len(sealedText(mode, tt.typ, tt.text)), nil) {
					t.Errorf("token length %d does not follow the FORMAT.md formula", got)
				}
			})
		}
	}
}

// sealedText is what FORMAT.md says is sealed for a value.
func sealedText(mode Mode, typ Type, text string) string {
	var z sealer
	return string(z.sealPlaintext(mode, typ, []byte(text), strings.Contains(text, `\`)))
}

// tokenLen is the FORMAT.md formula (section 6) for format 2:
// 4 + ceil(4B/3) with B = 7 + len(key) + 28 (random) or 16
// (deterministic) + T + 1, T the padded length of p bytes:
// max(p, 5), then up to the smallest bucket, or past the last to a
// multiple of it. Written out here rather than calling paddedLen.
func tokenLen(mode Mode, key string, p int, buckets []int) int {
	t := max(p, 5)
	if len(buckets) > 0 {
		last := buckets[len(buckets)-1]
		padded := (t + last - 1) / last * last
		for i := len(buckets) - 1; i >= 0; i-- {
			if t <= buckets[i] {
				padded = buckets[i]
			}
		}
		t = padded
	}
	b := 7 + len(key) + t + 1 + 16
	if mode == ModeRandom {
		b += 12
	}
	return 4 + (4*b+2)/3
}

func TestOverheadExamples(t *testing.T) {
	// The figures quoted in docs/FORMAT.md section 6 for key "pii".
	tests := []struct {
		mode    Mode
		p       int
		buckets []int
		want    int
	}{
		{ModeRandom, 11, nil, 71},        // an SSN: 13 bytes of JSON become 73
		{ModeDeterministic, 11, nil, 55}, // 13 become 57
		{ModeRandom, 0, nil, 63},         // "", true, false, null and 1 to 5 bytes
		{ModeDeterministic, 0, nil, 47},
		{ModeRandom, 5, nil, 63},
		{ModeRandom, 6, nil, 64},
		{ModeRandom, 11, []int{16}, 78}, // pad: 16, up to 16 bytes
		{ModeRandom, 16, []int{16}, 78},
		{ModeRandom, 17, []int{16}, 99},
		{ModeDeterministic, 11, []int{16}, 62},
		{ModeRandom, 40, []int{16, 64, 256}, 142},
		{ModeRandom, 300, []int{16, 64, 256}, 739}, // past the last bucket: 512
	}
	k := testKey(t, "pii", 1)
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d/%v", tt.mode, tt.p, tt.buckets), func(t *testing.T) {
			if got := tokenLen(tt.mode, "pii", tt.p, tt.buckets); got != tt.want {
				t.Errorf("formula gives %d, FORMAT.md says %d", got, tt.want)
			}
			tok, err := SealStringPadded(k, tt.mode, strings.Repeat("x", tt.p), Padding{tt.buckets})
			if err != nil {
				t.Fatal(err)
			}
			if len(tok) != tt.want {
				t.Errorf("real token is %d bytes, FORMAT.md says %d", len(tok), tt.want)
			}
		})
	}
}

func TestSealValueRefusesBadInput(t *testing.T) {
	k := testKey(t, "pii", 1)
	tests := []struct {
		name string
		mode Mode
		typ  Type
		text string
	}{
		{"type mismatch", ModeRandom, TypeNumber, `"1"`},
		{"two values", ModeRandom, TypeNumber, `1 2`},
		{"surrounding space", ModeRandom, TypeNumber, ` 1`},
		{"trailing space", ModeRandom, TypeNumber, `1 `},
		{"malformed", ModeRandom, TypeObject, `{"a":}`},
		{"bad string", ModeRandom, TypeString, `"a\x"`},
		{"invalid UTF-8", ModeRandom, TypeString, "\"\xff\""},
		{"unknown type", ModeRandom, Type('q'), `1`},
		{"unknown mode", Mode(9), TypeNumber, `1`},
		{"empty", ModeRandom, TypeNumber, ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := SealValue(k, tt.mode, tt.typ, []byte(tt.text))
			if err == nil || tok != nil {
				t.Fatalf("sealed %q: %s", tt.text, tok)
			}
			if !strings.HasPrefix(err.Error(), "fieldcrypt: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
	if n, _ := k.Usage(); n != 0 {
		t.Errorf("refused values were counted as sealed: %d", n)
	}
}

func TestSealStringMatchesDocuments(t *testing.T) {
	ctx := context.Background()
	kr := testKeyring(t)
	k, _ := kr.SealKey(ctx, "contact")
	e, err := NewEncryptor([]FieldRule{{Selector: MustParseSelector("$.email"), Key: "contact", Mode: ModeDeterministic}}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ s, spelling string }{
		{"alice@example.org", `"alice@example.org"`},
		{"alice@example.org", `"\u0061lice@example.org"`},
		{"a/b", `"a\/b"`},
		{`quote " and \ backslash`, `"quote \" and \\ backslash"`},
		{"tab\tnewline\n", `"tab\u0009newline\n"`},
		{"\x01", `"\u0001"`},
		{"é😀", `"\u00E9\ud83d\uDE00"`},
		{"", `""`},
	}
	for _, tt := range tests {
		t.Run(tt.spelling, func(t *testing.T) {
			want, err := SealString(k, ModeDeterministic, tt.s)
			if err != nil {
				t.Fatal(err)
			}
			out, _, err := e.EncryptBytes(ctx, []byte(`{"email":`+tt.spelling+`}`), kr, nil)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != `{"email":"`+string(want)+`"}` {
				t.Errorf("document gave %s, SealString %s", out, want)
			}
		})
	}
	if _, err := SealString(k, ModeDeterministic, "\xff"); !errors.Is(err, ErrInvalidUTF8) {
		t.Errorf("invalid UTF-8: %v", err)
	}
}

func TestParseTokenInfoErrors(t *testing.T) {
	k := testKey(t, "pii", 1)
	good, _ := SealString(k, ModeRandom, "x")
	tests := []struct {
		name string
		tok  string
		want error
	}{
		{"empty", "", ErrNotToken},
		{"no prefix", "hello", ErrNotToken},
		{"prefix only", "sc1.", ErrNotToken},
		{"future version prefix", "sc3." + string(good[4:]), ErrTokenVersion},
		{"format 2 body under the format 1 prefix", "sc1." + string(good[4:]), ErrTokenVersion},
		{"format 2 header cut", "sc2.AgEDcGlpAAAA", ErrNotToken},
		{"format 2 sealed part one byte short", "sc2." + b64.EncodeToString(append([]byte{2, 1, 3, 'p', 'i', 'i', 0, 0, 0, 1}, make([]byte, 28)...)), ErrNotToken},
		{"format 2 unknown mode", "sc2." + b64.EncodeToString(append([]byte{2, 3, 3, 'p', 'i', 'i', 0, 0, 0, 1}, make([]byte, 29)...)), ErrNotToken},
		{"format 2 key name length 0", "sc2." + b64.EncodeToString(append([]byte{2, 1, 0, 0, 0, 0, 1}, make([]byte, 29)...)), ErrNotToken},
		{"padding", string(good) + "=", ErrNotToken},
		{"line break (base64 decoders skip it)", string(good[:10]) + "\r\n" + string(good[10:]), ErrNotToken},
		{"standard base64 alphabet", strings.Replace(string(good), "A", "+", 1), ErrNotToken},
		{"header cut", "sc1.AQFzA3Bp", ErrNotToken},
		{"body version 2", "sc1.AgFzA3BpaQAAAAE", ErrTokenVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTokenInfo([]byte(tt.tok))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "fieldcrypt: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

// Every single-character change, deletion and insertion anywhere in a
// token must make it fail to open: strict base64url leaves no spare bits,
// and everything else is authenticated.
func TestTokenTamperExhaustive(t *testing.T) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	k := testKey(t, "pii", 1)
	for _, mode := range []Mode{ModeRandom, ModeDeterministic} {
		tok, err := SealValue(k, mode, TypeObject, []byte(`{"a":1}`))
		if err != nil {
			t.Fatal(err)
		}
		t.Run(mode.String(), func(t *testing.T) {
			try := func(what string, bad []byte) {
				t.Helper()
				if _, _, err := OpenToken(k, bad); err == nil {
					t.Fatalf("%s: %s opened", what, bad)
				}
			}
			for i := range tok {
				for _, c := range []byte(alphabet + "!=.+/ ") {
					if c == tok[i] {
						continue
					}
					bad := bytes.Clone(tok)
					bad[i] = c
					try(fmt.Sprintf("byte %d -> %q", i, c), bad)
				}
				try(fmt.Sprintf("delete %d", i), append(bytes.Clone(tok[:i]), tok[i+1:]...))
				try(fmt.Sprintf("insert at %d", i), append(append(bytes.Clone(tok[:i]), 'A'), tok[i:]...))
			}
			try("append", append(bytes.Clone(tok), 'A'))
		})
	}
}

func TestOpenWithOtherKey(t *testing.T) {
	k1, k2, other := testKey(t, "pii", 1), testKey(t, "pii", 2), testKey(t, "contact", 1)
	tok, _ := SealString(k1, ModeRandom, "x")
	for _, k := range []*DataKey{k2, other} {
		if _, _, err := OpenToken(k, tok); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("open with %v: %v", k, err)
		}
	}
	// Same name and version, different material: authentication fails.
	impostor, _ := NewDataKey("pii", 1, make([]byte, DataKeySize))
	if _, _, err := OpenToken(impostor, tok); !errors.Is(err, ErrAuthentication) {
		t.Errorf("open with impostor key: %v", err)
	}
}

// A token whose header declares a type its content does not have opens to
// an error even though it authenticates: only a key holder can make one,
// and the transformer would otherwise splice invalid JSON into a document.
func TestOpenChecksContentType(t *testing.T) {
	k := testKey(t, "pii", 1)
	tests := []struct {
		typ Type
		pt  string
	}{
		{TypeNumber, `abc`},
		{TypeNumber, `1 2`},
		{TypeBool, `null`},
		{TypeObject, `[1]`},
		{TypeString, `a"b`},
		{TypeString, "a\x01"},
		{TypeString, `a\`},
	}
	for _, tt := range tests {
		for _, mode := range []Mode{ModeRandom, ModeDeterministic} {
			var z sealer
			tok, err := z.seal(nil, k, mode, tt.typ, []byte(tt.pt), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := OpenToken(k, tok); !errors.Is(err, ErrTokenContent) {
				t.Errorf("%c %q %s: %v", tt.typ, tt.pt, mode, err)
			}
		}
	}
}

func TestZeroedKey(t *testing.T) {
	k := testKey(t, "pii", 1)
	tok, _ := SealString(k, ModeDeterministic, "x")
	k.Zero()
	if !k.Zeroed() {
		t.Fatal("Zeroed() = false after Zero")
	}
	for _, mode := range []Mode{ModeRandom, ModeDeterministic} {
		if _, err := SealString(k, mode, "x"); !errors.Is(err, ErrKeyZeroed) {
			t.Errorf("seal %s after Zero: %v", mode, err)
		}
	}
	if _, _, err := OpenToken(k, tok); !errors.Is(err, ErrKeyZeroed) {
		t.Errorf("open after Zero: %v", err)
	}
	if err := k.MaskKey(func([]byte) {}); !errors.Is(err, ErrKeyZeroed) {
		t.Errorf("MaskKey after Zero: %v", err)
	}
}

// Zeroing a key while others seal with it must never produce a token under
// half-erased material: every seal either fails or gives the right token.
func TestZeroWhileSealing(t *testing.T) {
	k := testKey(t, "pii", 1)
	want, _ := SealString(k, ModeDeterministic, "value")
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				tok, err := SealString(k, ModeDeterministic, "value")
				if err != nil {
					if !errors.Is(err, ErrKeyZeroed) {
						t.Errorf("seal: %v", err)
					}
					return
				}
				if !bytes.Equal(tok, want) {
					t.Errorf("sealed under damaged key: %s", tok)
					return
				}
			}
		}()
	}
	k.Zero()
	wg.Wait()
}

func TestUsageCounts(t *testing.T) {
	k := testKey(t, "pii", 1)
	// Bytes are what the cipher processes: the value, its type byte and
	// its padding (each at least 6 bytes in format 2).
	SealString(k, ModeRandom, "abc")
	SealString(k, ModeDeterministic, "de")
	SealString(k, ModeDeterministic, "0123456789")
	if n, b := k.Usage(); n != 3 || b != 6+6+11 {
		t.Errorf("Usage = %d messages, %d bytes; want 3, 23", n, b)
	}
}

func TestDataKeyPrintsNoMaterial(t *testing.T) {
	material := bytes.Repeat([]byte{0xab}, DataKeySize)
	k, err := NewDataKey("pii", 7, material)
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q"} {
		s := fmt.Sprintf(format, k)
		if strings.Contains(s, "abab") || strings.Contains(s, "171") || strings.Contains(s, `\xab`) {
			t.Errorf("%s prints key material: %s", format, s)
		}
	}
}
