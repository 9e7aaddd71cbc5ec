package fieldcrypt

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func TestAppendCanonical(t *testing.T) {
	tests := []struct{ raw, want string }{
		{`abc`, `abc`},
		{`\u0061bc`, `abc`},
		{`\/`, `/`},
		{`\"\\`, `\"\\`},
		{`\u0022\u005C`, `\"\\`},
		{`\b\f\n\r\t`, `\b\f\n\r\t`},
		{`\u0008\u000C\u000a\u000D\u0009`, `\b\f\n\r\t`},
		{`\u0000\u001F\u001f`, `\u0000\u001f\u001f`},
		{`\u007f\u0080`, "\x7f\u0080"},
		{`\u00E9`, `é`},
		{`\u2028\u2029`, "\u2028\u2029"},
		{`\uD83D\uDE00`, `😀`},
		{`\ud83d\ude00`, `😀`},
		{`\uD83D`, `\ud83d`},
		{`\uDE00`, `\ude00`},
		{`\uDE00\uD83D`, `\ude00\ud83d`},
		{`\uD83Dx`, `\ud83dx`},
		{`\uD83D\u0041`, `\ud83dA`},
		{`\uD83D\uD83D\uDE00`, `\ud83d😀`},
		{`😀 é`, `😀 é`},
		{``, ``},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			got := string(appendCanonical(nil, []byte(tt.raw)))
			if got != tt.want {
				t.Errorf("canonical(%s) = %s, want %s", tt.raw, got, tt.want)
			}
			if again := string(appendCanonical(nil, []byte(got))); again != got {
				t.Errorf("not idempotent: %s -> %s", got, again)
			}
			checkSameValue(t, tt.raw, got)
		})
	}
}

// checkSameValue asserts that two string spellings decode to the same
// value with encoding/json (which maps lone surrogates to U+FFFD on both
// sides, so that case compares equal too).
func checkSameValue(t *testing.T, a, b string) {
	t.Helper()
	var x, y string
	if err := json.Unmarshal([]byte(`"`+a+`"`), &x); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal([]byte(`"`+b+`"`), &y); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if x != y {
		t.Errorf("%s and %s are different values", a, b)
	}
}

func TestAppendCanonicalString(t *testing.T) {
	for _, s := range []string{"", "abc", "a\"b\\c", "\x00\x01\x1f\x7f", "\b\f\n\r\t", "é😀\u2028", "</script>&"} {
		t.Run(s, func(t *testing.T) {
			got := string(appendCanonicalString(nil, s))
			// The canonical spelling of s is also what appendCanonical
			// makes of any JSON spelling of s.
			enc, _ := json.Marshal(s)
			if want := string(appendCanonical(nil, enc[1:len(enc)-1])); got != want {
				t.Errorf("canonical string %q = %s, via encoding/json %s", s, got, want)
			}
			var back string
			if err := json.Unmarshal([]byte(`"`+got+`"`), &back); err != nil || back != s {
				t.Errorf("%s decodes to %q, %v", got, back, err)
			}
		})
	}
}

func TestDecodeString(t *testing.T) {
	for _, raw := range []string{`abc`, `s\u0073n`, `\"\\\/\b\f\n\r\t`, `\uD83D\uDE00`, `\uD83D`, `\uD83Dx`, `é`} {
		t.Run(raw, func(t *testing.T) {
			var want string
			if err := json.Unmarshal([]byte(`"`+raw+`"`), &want); err != nil {
				t.Fatal(err)
			}
			if got := string(decodeString(nil, []byte(raw))); got != want {
				t.Errorf("decode(%s) = %q, encoding/json %q", raw, got, want)
			}
		})
	}
}

func FuzzCanonical(f *testing.F) {
	for _, s := range []string{`abc`, `\u0061`, `\uD83D\uDE00`, `\uD800`, `\"\\\/`, `\u0000`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		if !utf8.ValidString(raw) || !validStringContent([]byte(raw)) {
			return
		}
		got := appendCanonical(nil, []byte(raw))
		if !validStringContent(got) {
			t.Fatalf("canonical(%q) = %q is not a valid string", raw, got)
		}
		if again := appendCanonical(nil, got); string(again) != string(got) {
			t.Fatalf("not idempotent: %q -> %q", got, again)
		}
		checkSameValue(t, raw, string(got))
		// Without lone surrogates (which UTF-8 cannot carry), decoding
		// the value and spelling it canonically gives the same bytes.
		if !containsLoneSurrogate(string(got)) {
			re := appendCanonicalString(nil, string(decodeString(nil, []byte(raw))))
			if string(re) != string(got) {
				t.Fatalf("canonical(%q) = %q, canonical(decode) = %q", raw, got, re)
			}
		}
	})
}

func containsLoneSurrogate(canon string) bool {
	for i := 0; i+2 <= len(canon); i++ {
		if canon[i] == '\\' {
			if canon[i+1] == 'u' && i+6 <= len(canon) && (canon[i+2] == 'd') && canon[i+3] >= '8' {
				return true
			}
			i++
		}
	}
	return false
}
