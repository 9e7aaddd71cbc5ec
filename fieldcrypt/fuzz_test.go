package fieldcrypt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

// Fuzz targets. `go test` runs their seeds; `go test -fuzz FuzzX` explores.

func tokenSeeds(f *testing.F) []string {
	raw, err := os.ReadFile(vectorsPath)
	if err != nil {
		f.Fatal(err)
	}
	var vf vecFile
	if err := json.Unmarshal(raw, &vf); err != nil {
		f.Fatal(err)
	}
	var seeds []string
	for _, v := range vf.Tokens {
		seeds = append(seeds, v.Token)
	}
	for _, v := range readVectorsV2(f).Tokens {
		seeds = append(seeds, v.Token)
	}
	return seeds
}

// Parsing a token never panics, and a token that parses marshals back to
// the same bytes: there is one spelling per token.
func FuzzParseToken(f *testing.F) {
	for _, s := range tokenSeeds(f) {
		f.Add(s)
	}
	f.Add("sc1.")
	f.Add("sc2.")
	f.Add("sc2.AQ")
	f.Add("sc3.Aw")
	f.Fuzz(func(t *testing.T, tok string) {
		info, err := ParseTokenInfo([]byte(tok))
		p, _, err2 := decodeToken(nil, []byte(tok))
		if (err == nil) != (err2 == nil) {
			t.Fatalf("ParseTokenInfo and decodeToken disagree: %v / %v", err, err2)
		}
		if err != nil {
			if !errors.Is(err, ErrNotToken) && !errors.Is(err, ErrTokenVersion) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if got := p.marshal(); string(got) != tok {
			t.Fatalf("parse then marshal: %q -> %q", tok, got)
		}
		if !ValidKeyName(info.Key) || info.KeyVersion == 0 || (info.Format == 2) != (info.Type == TypeHidden) {
			t.Fatalf("accepted header %+v", info)
		}
	})
}

// The format 2 parser on arbitrary bodies (the fuzzer explores the header
// bytes directly instead of their base64url text): it never panics, and a
// body that parses marshals back to the same token, with a header of
// 7 + the key name's length bytes and room for the type byte after it.
func FuzzParseTokenV2(f *testing.F) {
	for _, v := range readVectorsV2(f).Tokens {
		b, _ := b64.DecodeString(v.Token[len(TokenPrefix):])
		f.Add(b)
	}
	f.Add([]byte{2, 1, 3, 'p', 'i', 'i', 0, 0, 0, 1})
	f.Add([]byte{2, 2, 64})
	f.Fuzz(func(t *testing.T, body []byte) {
		tok := TokenPrefix + b64.EncodeToString(body)
		p, _, err := decodeToken(nil, []byte(tok))
		if err != nil {
			if !errors.Is(err, ErrNotToken) && !errors.Is(err, ErrTokenVersion) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if got := p.marshal(); string(got) != tok {
			t.Fatalf("parse then marshal: %q -> %q", tok, got)
		}
		min := sivSize + 1
		if p.mode == ModeRandom {
			min = gcmNonceSize + gcmTagSize + 1
		}
		if p.format != formatV2 || p.typ != TypeHidden || len(p.header) != headerFixedV2+len(p.name) || len(p.sealed) < min {
			t.Fatalf("accepted %x as %+v", body, p)
		}
	})
}

// Opening an authentic format 2 token whose plaintext is anything at all
// (as a key holder could seal it) never panics, and either refuses it as
// token-content or gives one JSON value of the type it found, which seals
// and opens again to the same.
func FuzzOpenV2(f *testing.F) {
	for _, s := range []string{"true" + "b\x00", "\"x\"s", "12n\x00\x00\x00", "", "\x00", "nullz", "[1]a", `{"a":1}o`, "x\x00\x01"} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	k := testKey(f, "pii", 1)
	f.Fuzz(func(t *testing.T, inner []byte, det bool) {
		mode := ModeRandom
		if det {
			mode = ModeDeterministic
		}
		tok := sealInner(t, k, mode, inner)
		typ, text, err := OpenToken(k, []byte(tok))
		if err != nil {
			if len(inner) == 0 && errors.Is(err, ErrNotToken) {
				return
			}
			if !errors.Is(err, ErrTokenContent) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if !validType(typ) || !json.Valid(text) || !utf8.Valid(text) || typeOf(firstByte(text)) != typ {
			t.Fatalf("opened %q as %v %q", inner, typ, text)
		}
		again, err := SealValue(k, mode, typ, text)
		if err != nil {
			t.Fatalf("the opened value does not seal again: %v", err)
		}
		typ2, text2, err := OpenToken(k, again)
		if err != nil || typ2 != typ || (mode == ModeRandom && !bytes.Equal(text2, text)) {
			t.Fatalf("round trip: %v %q %v", typ2, text2, err)
		}
	})
}

var fuzzDocs = []string{
	`{"ssn":"123-45-6789","docs":[{"ssn":1,"email":"a@b","x":{"diag":[1,{"diag":null}]}}]}`,
	`{"a":{"b":[true,false,null,-1.5e3,"\u00e9\ud83d\ude00\\\/\"\n"]}, "ssn" : {}}`,
	`[{"email":"x"},{"email":["y"]}]`,
	`{"ssn":"sc1.AQFzA3BpaQAAAAMhYxuKYvWkzn2ONnJ2A1PngQWx3Z8niR29vKxzTx4RTCrLZUC64r4"}`,
	`{"ssn":"1","ssn":"2"}`,
	`{"docs":[{"s\u0073n":"x"}]}`,
	"{\"a\":\"\xff\"}",
	`{"a":[[[[[[[[[[1]]]]]]]]]]}`,
	` "x" `, `1`, `[]`, `{"a":01}`, `{"a" 1}`, `tru`, `"\ud800"`, `{"ssn":"sc1.x"}`,
}

func fuzzEncryptors(t testing.TB) (rnd, det *Encryptor) {
	rnd = newEnc(t, "$.ssn pii random", "$.docs[*].ssn pii random", "$..diag contact random null", "$[*].email contact random", "$..email pii random")
	det = newEnc(t, "$.ssn pii deterministic", "$.docs[*].ssn pii deterministic", "$..diag contact deterministic null", "$[*].email contact deterministic", "$..email pii deterministic")
	return rnd, det
}

// The transformer never panics; what it accepts is valid JSON in valid
// UTF-8; what it encrypts decrypts back to the same bytes (random mode
// always; deterministic mode when no string is spelled with escapes, since
// deterministic strings come back in canonical spelling); the reader path
// gives the same bytes as the []byte path; and decryption of anything,
// leniently or not, never panics.
func FuzzTransform(f *testing.F) {
	for _, d := range fuzzDocs {
		f.Add([]byte(d))
	}
	ctx := context.Background()
	kr := testKeyring(f)
	rnd, det := fuzzEncryptors(f)
	f.Fuzz(func(t *testing.T, doc []byte) {
		for _, e := range []*Encryptor{rnd, det} {
			out, _, err := e.EncryptBytes(ctx, doc, kr, nil)
			if err != nil {
				if out != nil {
					t.Fatal("output on error")
				}
				if json.Valid(doc) && utf8.Valid(doc) && !errors.Is(err, ErrDuplicateKey) && !errors.Is(err, ErrTooDeep) {
					t.Fatalf("valid document refused: %v", err)
				}
				continue
			}
			if !json.Valid(doc) || !utf8.Valid(doc) {
				t.Fatalf("invalid document accepted: %q", doc)
			}
			// Strings elsewhere that merely look like tokens ("sc0.")
			// fail a strict decryption by design; default mode leaves
			// them and lists them.
			opt := &CallOptions{Strict: !bytes.Contains(doc, []byte("sc"))}
			back, _, err := openAll.DecryptBytes(ctx, out, kr, opt)
			if err != nil {
				t.Fatalf("decrypt own output: %v\n%s", err, out)
			}
			if (e == rnd || !bytes.Contains(doc, []byte(`\`))) && !bytes.Equal(back, doc) {
				t.Fatalf("round trip:\n in %q\nout %q", doc, back)
			}
			if e == det {
				var buf bytes.Buffer
				if _, err := e.Encrypt(ctx, &buf, iotest.OneByteReader(bytes.NewReader(doc)), kr, nil); err != nil || !bytes.Equal(buf.Bytes(), out) {
					t.Fatalf("reader path differs: %v", err)
				}
			}
		}
		for _, opt := range []*CallOptions{nil, {Lenient: true}, {Stream: true}, {Stream: true, Lenient: true, Strict: true}} {
			out, _, err := openAll.DecryptBytes(ctx, doc, kr, opt)
			if opt != nil && opt.Lenient && !opt.Strict && (err != nil || !bytes.Equal(out, doc)) {
				t.Fatalf("lenient decrypt of plaintext changed it: %v", err)
			}
		}
	})
}

// The scanner accepts exactly what encoding/json's json.Valid accepts,
// except invalid UTF-8, which json.Valid lets through inside strings and
// sidecrypt refuses; and what it accepts passes through unchanged. The
// nesting limit is set to json.Valid's (10000) for the comparison.
func FuzzScannerDifferential(f *testing.F) {
	for _, d := range fuzzDocs {
		f.Add([]byte(d))
	}
	for _, d := range []string{"", " ", "{}", "[1,]", "1.", "-", "01", "1e", "\"\t\"", `"\u12"`, "[" + strings.Repeat("[", 20) + "]", "\ufeff1", "1 ", "nul", "{\"a\":1}}"} {
		f.Add([]byte(d))
	}
	ctx := context.Background()
	kr := testKeyring(f)
	leave := NewDecryptor(PolicyFunc(func(string) (Action, Masker) { return ActionLeave, nil }), Limits{MaxDepth: 10000})
	none := newEnc(f, "$.zz_none pii random")
	f.Fuzz(func(t *testing.T, doc []byte) {
		want := json.Valid(doc) && utf8.Valid(doc)
		out, _, err := leave.DecryptBytes(ctx, doc, kr, nil)
		if (err == nil) != want {
			t.Fatalf("scanner says %v, json.Valid says %v: %q", err, json.Valid(doc), doc)
		}
		if err == nil && !bytes.Equal(out, doc) {
			t.Fatalf("pass-through changed the document")
		}
		if err != nil && !isScanError(err) {
			t.Fatalf("error of the wrong class: %v", err)
		}
		// The encryptor's fast path (no selector reaches) agrees too.
		if _, _, err := none.EncryptBytes(ctx, doc, kr, nil); (err == nil) != want && !errors.Is(err, ErrTooDeep) && !errors.Is(err, ErrDuplicateKey) {
			t.Fatalf("encryptor says %v, json.Valid says %v: %q", err, json.Valid(doc), doc)
		}
	})
}
