package hsm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/hsm/hsmtest"
	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

func TestSoftwareConformance(t *testing.T) {
	hsmtest.Run(t, func(t *testing.T) hsm.Provider { return hsmtest.NewSoftware(t) })
}

// openSoftware opens (creating when asked) a key file with cheap KDF
// parameters, logging into buf.
func openSoftware(t *testing.T, path, passphrase string, create bool, buf *testenv.SyncBuffer) (hsm.Provider, error) {
	t.Helper()
	var log *slog.Logger
	if buf != nil {
		log = slog.New(slog.NewTextHandler(buf, nil))
	} else {
		log = slog.New(slog.DiscardHandler)
	}
	p, err := hsm.Open(hsmtest.FastKDF(t.Context()), "software", hsm.Options{KEKFile: path, Passphrase: passphrase, Create: create, Logger: log})
	if err == nil {
		t.Cleanup(func() { p.Close() })
	}
	return p, err
}

func TestSoftwareFile(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "kek.json")
	var logs testenv.SyncBuffer
	p, err := openSoftware(t, path, "correct horse", true, &logs)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("Mode0600", func(t *testing.T) {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("key file mode %v; want 0600", st.Mode().Perm())
		}
	})

	t.Run("WarnsNotAnHSM", func(t *testing.T) {
		if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "not an HSM") {
			t.Errorf("Open logged no WARN saying it is not an HSM:\n%s", logs.String())
		}
		if d := p.Describe(); d.Kind != "software" || !strings.Contains(d.Warning, "not an HSM") || d.File != path {
			t.Errorf("Describe() = %+v", d)
		}
		if strings.Contains(logs.String(), "correct horse") {
			t.Error("the passphrase appears in the log")
		}
	})

	t.Run("FormatHoldsNoKeys", func(t *testing.T) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			Format string `json:"format"`
			KDF    struct {
				Alg       string `json:"alg"`
				Time      uint32 `json:"time"`
				MemoryKiB uint32 `json:"memory_kib"`
				Threads   uint8  `json:"threads"`
				Salt      []byte `json:"salt"`
			} `json:"kdf"`
			AEAD   string `json:"aead"`
			Sealed []byte `json:"sealed"`
		}
		if err := json.Unmarshal(data, &f); err != nil {
			t.Fatalf("key file is not JSON: %v", err)
		}
		if f.Format != "sidecrypt-kek-file" || f.KDF.Alg != "argon2id" || f.AEAD != "aes-256-gcm" || len(f.KDF.Salt) != 16 || f.KDF.Time == 0 {
			t.Errorf("header = %+v", f)
		}
		if bytes.Contains(data, []byte(`"key"`)) || bytes.Contains(data, []byte("audit")) {
			t.Error("key file shows payload fields in clear")
		}
	})

	dek := bytes.Repeat([]byte{0x5a}, 64)
	w, err := p.Wrap(ctx, dek, hsm.Binding{})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := p.RotateKEK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := p.AuditMAC(ctx, []byte("m"))
	p.Close()

	t.Run("PersistsAcrossReopen", func(t *testing.T) {
		q, err := openSoftware(t, path, "correct horse", false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if cur, _ := q.CurrentKEK(ctx); cur != v2 {
			t.Errorf("CurrentKEK after reopen = %d; want %d", cur, v2)
		}
		got, err := q.Unwrap(ctx, w, hsm.Binding{})
		if err != nil || !bytes.Equal(got, dek) {
			t.Errorf("Unwrap after reopen = %x, %v", got, err)
		}
		if m, _ := q.AuditMAC(ctx, []byte("m")); !bytes.Equal(m, mac) {
			t.Error("audit key changed across reopen")
		}
	})

	t.Run("WrongPassphrase", func(t *testing.T) {
		_, err := openSoftware(t, path, "correct horse ", false, nil)
		if !errors.Is(err, hsm.ErrUnavailable) || !strings.Contains(err.Error(), "wrong passphrase or corrupt file") {
			t.Fatalf("Open with wrong passphrase = %v; want ErrUnavailable: wrong passphrase or corrupt file", err)
		}
		if strings.Contains(err.Error(), "correct horse") {
			t.Error("error contains the passphrase")
		}
	})

	t.Run("Tampered", func(t *testing.T) {
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(orig, &doc); err != nil {
			t.Fatal(err)
		}
		edits := map[string]func(map[string]any){
			"kdf time lowered": func(d map[string]any) { d["kdf"].(map[string]any)["time"] = 2 },
			"salt replaced":    func(d map[string]any) { d["kdf"].(map[string]any)["salt"] = "AAAAAAAAAAAAAAAAAAAAAA==" },
			"nonce cut":        func(d map[string]any) { d["nonce"] = "AAAA" },
			"sealed flipped": func(d map[string]any) {
				s := []byte(d["sealed"].(string))
				s[10] ^= 1
				d["sealed"] = string(s)
			},
			"memory absurd":  func(d map[string]any) { d["kdf"].(map[string]any)["memory_kib"] = 1 << 31 },
			"unknown format": func(d map[string]any) { d["format"] = "something-else" },
		}
		for name, edit := range edits {
			t.Run(name, func(t *testing.T) {
				var d map[string]any
				json.Unmarshal(orig, &d)
				edit(d)
				data, _ := json.Marshal(d)
				bad := filepath.Join(t.TempDir(), "kek.json")
				os.WriteFile(bad, data, 0o600)
				_, err := openSoftware(t, bad, "correct horse", false, nil)
				if !errors.Is(err, hsm.ErrUnavailable) || !strings.Contains(err.Error(), "wrong passphrase or corrupt file") {
					t.Errorf("Open = %v; want ErrUnavailable: wrong passphrase or corrupt file", err)
				}
			})
		}
		for name, data := range map[string][]byte{"empty": nil, "garbage": []byte("\x00\xff{"), "json array": []byte("[]")} {
			bad := filepath.Join(t.TempDir(), "kek.json")
			os.WriteFile(bad, data, 0o600)
			if _, err := openSoftware(t, bad, "correct horse", false, nil); !errors.Is(err, hsm.ErrUnavailable) {
				t.Errorf("%s: Open = %v; want ErrUnavailable", name, err)
			}
		}
	})

	t.Run("WeakParametersWarned", func(t *testing.T) {
		var logs testenv.SyncBuffer
		if _, err := openSoftware(t, path, "correct horse", false, &logs); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(logs.String(), "below RFC 9106") {
			t.Errorf("opening a file with test KDF parameters logged no warning:\n%s", logs.String())
		}
	})
}

func TestSoftwareOpenErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		spec string
		opts hsm.Options
		want error
	}{
		{"no file", "software", hsm.Options{Passphrase: "x"}, hsm.ErrConfig},
		{"no passphrase", "software", hsm.Options{KEKFile: filepath.Join(dir, "a.json"), Create: true}, hsm.ErrConfig},
		{"missing without Create", "software", hsm.Options{KEKFile: filepath.Join(dir, "b.json"), Passphrase: "x"}, hsm.ErrUnavailable},
		{"missing directory", "software", hsm.Options{KEKFile: filepath.Join(dir, "nope", "c.json"), Passphrase: "x"}, hsm.ErrUnavailable},
		{"unknown kind", "vault://x", hsm.Options{}, hsm.ErrConfig},
		{"empty spec is software", "", hsm.Options{Passphrase: "x"}, hsm.ErrConfig},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := hsm.Open(hsmtest.FastKDF(t.Context()), c.spec, c.opts)
			if err == nil {
				p.Close()
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("Open = %v; want %v", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "hsm: ") {
				t.Errorf("error %q does not start with \"hsm: \"", err)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "b.json")); err == nil {
		t.Error("Open without Create created the file")
	}
}

// Two providers on one file (a sidecar and the CLI) rotating at once must
// not lose a version: each rotation re-reads the file under a lock.
func TestSoftwareConcurrentRotationKeepsEveryVersion(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "kek.json")
	a, err := openSoftware(t, path, "pw", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := openSoftware(t, path, "pw", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	const each = 5
	var wg sync.WaitGroup
	var mu sync.Mutex
	wrapped := map[uint32][]byte{}
	for _, p := range []hsm.Provider{a, b} {
		wg.Go(func() {
			for i := range each {
				if _, err := p.RotateKEK(ctx); err != nil {
					t.Error(err)
					return
				}
				dek := bytes.Repeat([]byte{byte(i + 1)}, 32)
				w, err := p.Wrap(ctx, dek, hsm.Binding{})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				wrapped[w.KEKVersion] = w.Bytes
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	infos, err := a.KEKs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1+2*each {
		t.Fatalf("after %d rotations from two providers the file has %d versions; want %d", 2*each, len(infos), 1+2*each)
	}
	// Every wrap made by either provider opens with the other.
	for v, bytes := range wrapped {
		for _, p := range []hsm.Provider{a, b} {
			if _, err := p.Unwrap(ctx, hsm.Wrapped{KEKVersion: v, Mechanism: hsm.MechanismKWP, Bytes: bytes}, hsm.Binding{}); err != nil {
				t.Errorf("v%d: %v", v, err)
			}
		}
	}
}

// A version rotated in by another process is found by Unwrap without
// reopening.
func TestSoftwareSeesOtherProcessRotation(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "kek.json")
	a, err := openSoftware(t, path, "pw", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := openSoftware(t, path, "pw", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := b.RotateKEK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dek := bytes.Repeat([]byte{7}, 64)
	w, err := b.Wrap(ctx, dek, hsm.Binding{})
	if err != nil || w.KEKVersion != v {
		t.Fatalf("Wrap = %+v, %v", w, err)
	}
	if got, err := a.Unwrap(ctx, w, hsm.Binding{}); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("other provider's Unwrap = %v", err)
	}
	if cur, err := a.CurrentKEK(ctx); err != nil || cur != v {
		t.Errorf("CurrentKEK = %d, %v; want %d", cur, err, v)
	}
}

// The production parameters are RFC 9106's second recommended option.
func TestSoftwareDefaultKDFParameters(t *testing.T) {
	if testing.Short() {
		t.Skip("derives a 64 MiB Argon2id key")
	}
	path := filepath.Join(t.TempDir(), "kek.json")
	p, err := hsm.Open(context.Background(), "software", hsm.Options{KEKFile: path, Passphrase: "pw", Create: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	data, _ := os.ReadFile(path)
	var f struct {
		KDF struct {
			Time      uint32 `json:"time"`
			MemoryKiB uint32 `json:"memory_kib"`
			Threads   uint8  `json:"threads"`
		} `json:"kdf"`
	}
	json.Unmarshal(data, &f)
	if f.KDF.Time != 3 || f.KDF.MemoryKiB != 64*1024 || f.KDF.Threads != 4 {
		t.Errorf("default Argon2id parameters = %+v; want t=3 m=65536 KiB p=4", f.KDF)
	}
}
