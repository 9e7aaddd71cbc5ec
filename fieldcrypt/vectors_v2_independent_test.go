package fieldcrypt_test

// An independent reader and writer of token format 2, written from
// docs/FORMAT.md alone: it shares no code with package fieldcrypt (which it
// does not import) and uses only the Go standard library and tink-go's
// AES-SIV, the two primitives the format names. It checks every vector in
// testdata/fieldcrypt/vectors_v2.json: key derivation (section 5), headers
// (3), inner plaintexts and padding (4.5), sealing and opening in both
// modes (4.1, 4.2), the documents, and that each tamper case fails with
// the error class the file gives (4.4). If it passes, the document is
// enough to interoperate with sidecrypt.

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tink-crypto/tink-go/v2/daead/subtle"
)

type indepKey struct {
	Name    string `json:"name"`
	Version uint32 `json:"version"`
	Root    string `json:"root"`
	GCMKey  string `json:"gcm_key"`
	SIVKey  string `json:"siv_key"`
}

type indepFile struct {
	Keys   []indepKey `json:"keys"`
	Tokens []struct {
		Key       string `json:"key"`
		Version   uint32 `json:"version"`
		Mode      string `json:"mode"`
		Type      string `json:"type"`
		Pad       []int  `json:"pad"`
		Plaintext string `json:"plaintext"`
		Padded    int    `json:"padded_length"`
		Inner     string `json:"inner"`
		Nonce     string `json:"nonce"`
		Header    string `json:"header"`
		Token     string `json:"token"`
		Opens     string `json:"opens"`
	} `json:"tokens"`
	Documents []struct {
		Output    string `json:"output"`
		Decrypted string `json:"decrypted"`
	} `json:"documents"`
	Tamper []struct {
		Comment  string `json:"comment"`
		Document string `json:"document"`
		Error    string `json:"error"`
	} `json:"tamper"`
}

// The error classes of FORMAT.md section 4.4.
var (
	errPlain    = errors.New("none") // no "sc" DIGIT ".": not a token at all (section 9)
	errNotToken = errors.New("not-token")
	errVersion  = errors.New("token-version")
	errAuth     = errors.New("authentication")
	errUnknown  = errors.New("unknown-key")
	errContent  = errors.New("token-content")
)

// indepHeader is a parsed header (section 3).
type indepHeader struct {
	format  byte
	mode    byte
	typ     byte // format 1 only
	name    string
	version uint32
	length  int
}

// indepParse checks the prefix and base64url (section 2) and parses the
// header (section 3).
func indepParse(tok string) (indepHeader, []byte, error) {
	var h indepHeader
	if len(tok) < 4 || tok[:2] != "sc" || tok[2] < '0' || tok[2] > '9' || tok[3] != '.' {
		return h, nil, errPlain
	}
	if tok[2] != '1' && tok[2] != '2' {
		return h, nil, errVersion
	}
	h.format = tok[2] - '0'
	text := tok[4:]
	for _, c := range []byte(text) {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return h, nil, errNotToken
		}
	}
	body, err := base64.RawURLEncoding.Strict().DecodeString(text)
	if err != nil || len(body) == 0 {
		return h, nil, errNotToken
	}
	if body[0] != h.format {
		return h, nil, errVersion
	}
	i := 1
	need := func(n int) bool { return len(body) >= i+n }
	if !need(1) {
		return h, nil, errNotToken
	}
	h.mode = body[i]
	i++
	if h.mode != 1 && h.mode != 2 {
		return h, nil, errNotToken
	}
	if h.format == 1 {
		if !need(1) || !strings.ContainsRune("snbzoa", rune(body[i])) {
			return h, nil, errNotToken
		}
		h.typ = body[i]
		i++
	}
	if !need(1) {
		return h, nil, errNotToken
	}
	l := int(body[i])
	i++
	if l < 1 || l > 64 || !need(l+4) {
		return h, nil, errNotToken
	}
	h.name = string(body[i : i+l])
	if !regexp.MustCompile(`^[a-z][a-z0-9_-]*$`).MatchString(h.name) {
		return h, nil, errNotToken
	}
	i += l
	h.version = binary.BigEndian.Uint32(body[i:])
	i += 4
	if h.version == 0 {
		return h, nil, errNotToken
	}
	h.length = i
	min := 16 // SIV
	if h.mode == 1 {
		min = 12 + 16 // nonce and tag
	}
	if h.format == 2 {
		min++ // the type byte
	}
	if len(body)-i < min {
		return h, nil, errNotToken
	}
	return h, body, nil
}

func indepSubkeys(t *testing.T, k indepKey) (gcm cipher.AEAD, siv *subtle.AESSIV) {
	t.Helper()
	root, _ := hex.DecodeString(k.Root)
	gk, err := hkdf.Key(sha256.New, root, nil, "sidecrypt v1 random aes-256-gcm", 32)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := hkdf.Key(sha256.New, root, nil, "sidecrypt v1 deterministic aes-siv", 64)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(gk) != k.GCMKey || hex.EncodeToString(sk) != k.SIVKey {
		t.Fatalf("HKDF subkeys of %s v%d differ from the file", k.Name, k.Version)
	}
	block, _ := aes.NewCipher(gk)
	gcm, _ = cipher.NewGCM(block)
	siv, err = subtle.NewAESSIV(sk)
	if err != nil {
		t.Fatal(err)
	}
	return gcm, siv
}

// indepOpen opens a token (section 4.4) and returns the JSON text of its
// value and the type.
func indepOpen(t *testing.T, keys []indepKey, tok string) (string, byte, error) {
	h, body, err := indepParse(tok)
	if err != nil {
		return "", 0, err
	}
	var key *indepKey
	for i := range keys {
		if keys[i].Name == h.name && keys[i].Version == h.version {
			key = &keys[i]
		}
	}
	if key == nil {
		return "", 0, errUnknown
	}
	gcm, siv := indepSubkeys(t, *key)
	header, sealed := body[:h.length], body[h.length:]
	var pt []byte
	if h.mode == 1 {
		pt, err = gcm.Open(nil, sealed[:12], sealed[12:], header)
	} else {
		pt, err = siv.DecryptDeterministically(sealed, header)
	}
	if err != nil {
		return "", 0, errAuth
	}
	typ := h.typ
	if h.format == 2 {
		// Section 4.5: the last non-zero byte is the type; what follows
		// it is padding.
		end := len(bytes.TrimRight(pt, "\x00")) - 1
		if end < 0 {
			return "", 0, errContent
		}
		typ, pt = pt[end], pt[:end]
	}
	if !strings.ContainsRune("snbzoa", rune(typ)) || !utf8.Valid(pt) {
		return "", 0, errContent
	}
	value := string(pt)
	if typ == 's' {
		value = `"` + value + `"`
	}
	first := map[byte]string{'s': `"`, 'n': "-0123456789", 'b': "tf", 'z': "n", 'o': "{", 'a': "["}[typ]
	if !json.Valid([]byte(value)) || !strings.ContainsRune(first, rune(value[0])) {
		return "", 0, errContent
	}
	return value, typ, nil
}

func TestIndependentFormat2(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "testdata", "fieldcrypt", "vectors_v2.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f indepFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Tokens) == 0 || len(f.Tamper) == 0 || len(f.Documents) == 0 {
		t.Fatal("empty vector file")
	}
	for _, v := range f.Tokens {
		var key indepKey
		for _, k := range f.Keys {
			if k.Name == v.Key && k.Version == v.Version {
				key = k
			}
		}
		gcm, siv := indepSubkeys(t, key)

		// Write: header, inner plaintext with its padding, seal, encode.
		header := []byte{2, map[string]byte{"random": 1, "deterministic": 2}[v.Mode], byte(len(v.Key))}
		header = binary.BigEndian.AppendUint32(append(header, v.Key...), v.Version)
		if hex.EncodeToString(header) != v.Header {
			t.Errorf("%s: header %x, want %s", v.Token, header, v.Header)
		}
		padded := max(len(v.Plaintext), 5)
		if len(v.Pad) > 0 {
			last := v.Pad[len(v.Pad)-1]
			bucket := (padded + last - 1) / last * last
			for i := len(v.Pad) - 1; i >= 0; i-- {
				if padded <= v.Pad[i] {
					bucket = v.Pad[i]
				}
			}
			padded = bucket
		}
		inner := append([]byte(v.Plaintext), v.Type[0])
		inner = append(inner, make([]byte, padded-len(v.Plaintext))...)
		if padded != v.Padded || hex.EncodeToString(inner) != v.Inner {
			t.Errorf("%s: inner %x (padded to %d), want %s", v.Token, inner, padded, v.Inner)
		}
		var sealed []byte
		if v.Mode == "random" {
			nonce, _ := hex.DecodeString(v.Nonce)
			sealed = gcm.Seal(nonce, nonce, inner, header)
		} else {
			sealed, _ = siv.EncryptDeterministically(inner, header)
		}
		if tok := "sc2." + base64.RawURLEncoding.EncodeToString(append(header, sealed...)); tok != v.Token {
			t.Errorf("sealed from FORMAT.md:\n %s\nwant %s", tok, v.Token)
		}

		// Read.
		value, typ, err := indepOpen(t, f.Keys, v.Token)
		if err != nil || value != v.Opens || string(typ) != v.Type {
			t.Errorf("%s opens to %s (%c), %v; want %s", v.Token, value, typ, err, v.Opens)
		}
	}

	tokenRE := regexp.MustCompile(`"(sc[12]\.[A-Za-z0-9_-]*)"`)
	for _, d := range f.Documents {
		got := tokenRE.ReplaceAllStringFunc(d.Output, func(s string) string {
			value, _, err := indepOpen(t, f.Keys, s[1:len(s)-1])
			if err != nil {
				// The format 1 token the document leaves alone: its key
				// is in the file too, and section 3 covers its header.
				t.Errorf("document token %s: %v", s, err)
			}
			return value
		})
		if got != d.Decrypted {
			t.Errorf("document decrypts to\n %s\nwant %s", got, d.Decrypted)
		}
	}

	for _, v := range f.Tamper {
		var doc struct {
			Patient struct {
				SSN string `json:"ssn"`
			} `json:"patient"`
		}
		if err := json.Unmarshal([]byte(v.Document), &doc); err != nil {
			t.Fatal(err)
		}
		_, _, err := indepOpen(t, f.Keys, doc.Patient.SSN)
		if err == nil {
			t.Errorf("tamper %q: opened", v.Comment)
			continue
		}
		if class := err.Error(); class != v.Error {
			t.Errorf("tamper %q: %s, want %s", v.Comment, class, v.Error)
		}
	}
	t.Logf("%d tokens written and read, %d documents read, %d tamper cases refused", len(f.Tokens), len(f.Documents), len(f.Tamper))
}
