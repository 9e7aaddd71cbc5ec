package jsontree

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

func TestParseValid(t *testing.T) {
	for _, in := range []string{
		`{}`, `[]`, `0`, `-0`, `1.5e+10`, `12345678901234567890123`, `0.1000`, `"x"`, `true`, `false`, `null`,
		` {"a" : [1, 2 , {"b":null}] , "c":"\u0061\n"} `,
		`{"selector":{"$or":[{"a":1},{"b":{"$in":[1,"2",null]}}]}}`,
		`"\ud83d\ude00"`, `"é"`, `"\ud800"`,
	} {
		t.Run(in, func(t *testing.T) {
			n, err := Parse([]byte(in), 0)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := string(n.Bytes()), strings.Trim(in, " "); got != want {
				t.Errorf("round trip = %s, want %s", got, want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error
	}{
		{``, fieldcrypt.ErrSyntax},
		{`   `, fieldcrypt.ErrSyntax},
		{`{`, fieldcrypt.ErrSyntax},
		{`{"a"}`, fieldcrypt.ErrSyntax},
		{`{"a":1,}`, fieldcrypt.ErrSyntax},
		{`[1,]`, fieldcrypt.ErrSyntax},
		{`[1 2]`, fieldcrypt.ErrSyntax},
		{`01`, fieldcrypt.ErrSyntax},
		{`1.`, fieldcrypt.ErrSyntax},
		{`.5`, fieldcrypt.ErrSyntax},
		{`+1`, fieldcrypt.ErrSyntax},
		{`1e`, fieldcrypt.ErrSyntax},
		{`NaN`, fieldcrypt.ErrSyntax},
		{`tru`, fieldcrypt.ErrSyntax},
		{`"a`, fieldcrypt.ErrSyntax},
		{`"\x"`, fieldcrypt.ErrSyntax},
		{`"\u12"`, fieldcrypt.ErrSyntax},
		{"\"a\tb\"", fieldcrypt.ErrSyntax},
		{`{} {}`, fieldcrypt.ErrSyntax},
		{`{}x`, fieldcrypt.ErrSyntax},
		{`{'a':1}`, fieldcrypt.ErrSyntax},
		{"\"\xff\"", fieldcrypt.ErrInvalidUTF8},
		{"\"\xed\xa0\x80\"", fieldcrypt.ErrInvalidUTF8}, // an encoded surrogate
		{"\xef\xbb\xbf{}", fieldcrypt.ErrSyntax},        // a byte-order mark is not JSON
		{`{"a":1,"a":2}`, fieldcrypt.ErrDuplicateKey},
		{`{"a":1,"\u0061":2}`, fieldcrypt.ErrDuplicateKey},
		{`[{"x":{"b":1,"b":1}}]`, fieldcrypt.ErrDuplicateKey},
	} {
		t.Run(tc.in, func(t *testing.T) {
			_, err := Parse([]byte(tc.in), 0)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "jsontree: ") {
				t.Errorf("error %q does not name the package", err)
			}
		})
	}
}

func TestDuplicateManyMembers(t *testing.T) {
	var b strings.Builder
	b.WriteString("{")
	for i := range 40 {
		b.WriteString(`"m` + string(rune('a'+i%26)) + string(rune('a'+i/26)) + `":1,`)
	}
	ok := b.String() + `"z":1}`
	if _, err := Parse([]byte(ok), 0); err != nil {
		t.Fatal(err)
	}
	dup := b.String() + `"mab":2}`
	if _, err := Parse([]byte(dup), 0); !errors.Is(err, fieldcrypt.ErrDuplicateKey) {
		t.Fatalf("err = %v", err)
	}
}

func TestDepth(t *testing.T) {
	deep := func(n int) []byte { return []byte(strings.Repeat("[", n) + strings.Repeat("]", n)) }
	if _, err := Parse(deep(512), 0); err != nil {
		t.Fatalf("512 deep: %v", err)
	}
	if _, err := Parse(deep(513), 0); !errors.Is(err, fieldcrypt.ErrTooDeep) {
		t.Fatalf("513 deep: %v", err)
	}
	if _, err := Parse([]byte(`{"a":{"b":[1]}}`), 2); !errors.Is(err, fieldcrypt.ErrTooDeep) {
		t.Fatalf("depth 3 with limit 2: %v", err)
	}
	if _, err := Parse([]byte(`{"a":{"b":1}}`), 2); err != nil {
		t.Fatalf("depth 2 with limit 2: %v", err)
	}
}

func TestNamesAndText(t *testing.T) {
	n, err := Parse([]byte(`{"\u0073sn":"a\"b\\c\u00e9\ud83d\ude00","x\/y":1}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	if n.Members[0].Name != "ssn" || string(n.Members[0].RawName) != `"\u0073sn"` {
		t.Errorf("member 0 = %q %s", n.Members[0].Name, n.Members[0].RawName)
	}
	if n.Members[1].Name != "x/y" {
		t.Errorf("member 1 = %q", n.Members[1].Name)
	}
	s, ok := n.Get("ssn").Text()
	if !ok || s != "a\"b\\cé😀" {
		t.Errorf("text = %q %v", s, ok)
	}
	if _, ok := n.Get("x/y").Text(); ok {
		t.Error("Text of a number")
	}
	if n.Get("nope") != nil {
		t.Error("Get of a missing member")
	}
}

// Replacing a value rewrites only the containers on its way; every other
// byte stays as written.
func TestReplaceKeepsTheRest(t *testing.T) {
	in := `{ "keep" : { "n" : 1.50 , "s":"\u0061" },
	  "sel": {"$or": [ {"email": "a@b"}, {"n": 12345678901234567890} ]} }`
	n, err := Parse([]byte(in), 0)
	if err != nil {
		t.Fatal(err)
	}
	email := n.Get("sel").Get("$or").Elems[0].Get("email")
	email.Replace(String, []byte(`"TOKEN"`))
	got := string(n.Bytes())
	want := `{"keep":{ "n" : 1.50 , "s":"\u0061" },"sel":{"$or":[{"email":"TOKEN"},{"n": 12345678901234567890}]}}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if !email.Replaced() || email.Kind != String {
		t.Error("Replaced/Kind not updated")
	}
}

func TestIsEmpty(t *testing.T) {
	for in, want := range map[string]bool{`{}`: true, `[]`: true, `[1]`: false, `{"a":1}`: false, `""`: false, `null`: false} {
		n, err := Parse([]byte(in), 0)
		if err != nil {
			t.Fatal(err)
		}
		if n.IsEmpty() != want {
			t.Errorf("IsEmpty(%s) = %v", in, !want)
		}
	}
}

// FuzzParse: what Parse accepts, encoding/json accepts; what it refuses is
// invalid JSON, invalid UTF-8, a duplicate member or too deep; writing an
// untouched tree gives back the input without surrounding whitespace, and
// a rebuilt one decodes to the same value.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"a":[1,2,{"b":null}],"c":"d"}`, `[1e5,-0.5,true,false,null]`, `"\u00e9\ud83d\ude00"`,
		`{"selector":{"$and":[{"x":{"$gt":1}},{"y":{"$in":["a","b"]}}]},"fields":["a.b"]}`,
		` [ 1 , { "a" : "b" } ] `, `{"a":1,"a":2}`, "\"\xff\"", `[[[[[]]]]]`, `{"\\.":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := Parse(data, 64)
		valid := json.Valid(data)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error of type %T", err)
			}
			switch {
			case errors.Is(err, fieldcrypt.ErrSyntax):
				if valid {
					t.Fatalf("refused valid JSON as a syntax error: %v", err)
				}
			case errors.Is(err, fieldcrypt.ErrInvalidUTF8):
				if utf8.Valid(data) {
					t.Fatalf("refused valid UTF-8: %v", err)
				}
			case errors.Is(err, fieldcrypt.ErrTooDeep), errors.Is(err, fieldcrypt.ErrDuplicateKey):
				// Found before the end: the rest may be valid or not.
			default:
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if !valid {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		if !utf8.Valid(data) {
			t.Fatalf("accepted invalid UTF-8 %q", data)
		}
		out := n.Bytes()
		if want := bytes.Trim(data, " \t\r\n"); !bytes.Equal(out, want) {
			t.Fatalf("round trip %q != %q", out, want)
		}
		markDirty(n)
		rebuilt := appendNode(nil, n, true)
		if !json.Valid(rebuilt) {
			t.Fatalf("rebuilt output is not JSON: %q", rebuilt)
		}
		if a, b := decode(t, data), decode(t, rebuilt); !reflect.DeepEqual(a, b) {
			t.Fatalf("rebuilt %q decodes differently from %q", rebuilt, data)
		}
	})
}

func decode(t *testing.T, b []byte) any {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}
