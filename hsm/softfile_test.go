package hsm

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/hsm/internal/kdf"
)

func testSoftFile(t testing.TB) (key []byte, data []byte) {
	hdr, err := newSoftHeader(kdf.Params{Time: 1, MemoryKiB: 64, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	key = deriveSealKey("fuzz", hdr)
	payload := &softPayload{
		KEKs:     []softPayloadKEK{{Version: 1, Key: bytes.Repeat([]byte{1}, 32), Created: time.Unix(1700000000, 0).UTC()}},
		AuditKey: bytes.Repeat([]byte{2}, 32),
	}
	data, err = sealSoftFile(key, hdr, payload)
	if err != nil {
		t.Fatal(err)
	}
	return key, data
}

// Parsing a key file and writing it out again gives the same bytes.
func TestSoftFileRoundTrip(t *testing.T) {
	key, data := testSoftFile(t)
	path := filepath.Join(t.TempDir(), "kek.json")
	if err := writeFileAtomic(path, data); err != nil {
		t.Fatal(err)
	}
	f, err := readSoftFile(path)
	if err != nil {
		t.Fatal(err)
	}
	again, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(again, '\n'), data) {
		t.Errorf("re-encoded file differs:\n%s\n---\n%s", again, data)
	}
	p, err := openSoftFile(key, f)
	if err != nil {
		t.Fatal(err)
	}
	if p.KEKs[0].Version != 1 || !bytes.Equal(p.AuditKey, bytes.Repeat([]byte{2}, 32)) {
		t.Errorf("payload = %+v", p)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("writeFileAtomic left %d files behind", len(entries))
	}
}

// Whatever the bytes, reading a key file fails cleanly or yields a
// payload that passed its checks; it never panics.
func FuzzSoftFile(f *testing.F) {
	key, data := testSoftFile(f)
	f.Add(data)
	f.Add([]byte(`{"format":"sidecrypt-kek-file","version":1}`))
	f.Add([]byte(`{"kdf":{"memory_kib":4294967295}}`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "kek.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		sf, err := readSoftFile(path)
		if err != nil {
			if !strings.Contains(err.Error(), errWrongPassphrase) && !strings.Contains(err.Error(), "larger than") {
				t.Fatalf("unexpected error text %q", err)
			}
			return
		}
		p, err := openSoftFile(key, sf)
		if err != nil {
			return
		}
		if p.check() != nil {
			t.Fatal("openSoftFile returned a payload that fails check")
		}
	})
}
