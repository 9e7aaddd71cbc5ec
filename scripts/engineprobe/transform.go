package main

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"mime"
	"strings"
)

// transformer approximates sidecrypt's field transform: selected JSON string
// fields are replaced by base64(nonce || AES-256-GCM ciphertext) on the way
// in and decrypted on the way out. Both engines call the same two methods.
type transformer struct {
	aead cipher.AEAD
}

// sensitiveFields are encrypted wherever they occur (top level or nested);
// "card" → "number" is encrypted inside any object named "card".
var sensitiveFields = []string{"ssn", "diagnosis", "email"}

func newTransformer() (*transformer, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &transformer{aead: aead}, nil
}

func isJSON(contentType string) bool {
	if contentType == "" {
		return false
	}
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && strings.EqualFold(mt, "application/json")
}

// encryptBody parses body as JSON, encrypts the sensitive string fields and
// re-encodes it. It fails on invalid JSON (the proxy then answers 400).
func (t *transformer) encryptBody(body []byte) ([]byte, error) {
	v, err := decodeJSON(body)
	if err != nil {
		return nil, err
	}
	walk(v, func(s string) (string, bool) {
		nonce := make([]byte, t.aead.NonceSize(), t.aead.NonceSize()+len(s)+t.aead.Overhead())
		if _, err := rand.Read(nonce); err != nil {
			panic(err) // crypto/rand never fails on supported platforms
		}
		return base64.StdEncoding.EncodeToString(t.aead.Seal(nonce, nonce, []byte(s), nil)), true
	})
	return encodeJSON(v)
}

// decryptBody parses body as JSON and decrypts every sensitive field whose
// value is a ciphertext of this transformer. Bodies that are not JSON, or
// have nothing to decrypt, are left alone: it then returns nil, false.
func (t *transformer) decryptBody(body []byte) ([]byte, bool) {
	v, err := decodeJSON(body)
	if err != nil {
		return nil, false
	}
	changed := walk(v, func(s string) (string, bool) {
		raw, err := base64.StdEncoding.DecodeString(s)
		ns := t.aead.NonceSize()
		if err != nil || len(raw) < ns+t.aead.Overhead() {
			return s, false
		}
		pt, err := t.aead.Open(nil, raw[:ns], raw[ns:], nil)
		if err != nil {
			return s, false
		}
		return string(pt), true
	})
	if !changed {
		return nil, false
	}
	out, err := encodeJSON(v)
	if err != nil {
		return nil, false
	}
	return out, true
}

// walk applies f to every sensitive string field in v and reports whether
// any was replaced.
func walk(v any, f func(string) (string, bool)) bool {
	changed := false
	apply := func(m map[string]any, k string) {
		if s, ok := m[k].(string); ok {
			if ns, ok := f(s); ok {
				m[k] = ns
				changed = true
			}
		}
	}
	switch x := v.(type) {
	case map[string]any:
		for _, k := range sensitiveFields {
			apply(x, k)
		}
		if card, ok := x["card"].(map[string]any); ok {
			apply(card, "number")
		}
		for _, c := range x {
			if walk(c, f) {
				changed = true
			}
		}
	case []any:
		for _, c := range x {
			if walk(c, f) {
				changed = true
			}
		}
	}
	return changed
}

func decodeJSON(body []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, &json.SyntaxError{Offset: dec.InputOffset()}
	}
	return v, nil
}

func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}
