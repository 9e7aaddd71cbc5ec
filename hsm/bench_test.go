package hsm_test

import (
	"crypto/rand"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/hsm/hsmtest"
)

// benchUnwraps runs b.N unwraps of one wrapped 64-byte DEK from callers
// goroutines and reports throughput.
func benchUnwraps(b *testing.B, p hsm.Provider, callers int) {
	ctx := b.Context()
	dek := make([]byte, hsmtest.DEKLen)
	rand.Read(dek)
	w, err := p.Wrap(ctx, dek, hsm.Binding{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				out, err := p.Unwrap(ctx, w, hsm.Binding{})
				if err != nil {
					b.Error(err)
					return
				}
				clear(out)
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "unwraps/s")
}

func benchWraps(b *testing.B, p hsm.Provider) {
	ctx := b.Context()
	dek := make([]byte, hsmtest.DEKLen)
	rand.Read(dek)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Wrap(ctx, dek, hsm.Binding{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSoftwareWrap(b *testing.B)    { benchWraps(b, hsmtest.NewSoftware(b)) }
func BenchmarkSoftwareUnwrap(b *testing.B)  { benchUnwraps(b, hsmtest.NewSoftware(b), 1) }
func BenchmarkSoftwareUnwrap8(b *testing.B) { benchUnwraps(b, hsmtest.NewSoftware(b), 8) }

// BenchmarkSoftwareOpen is the cost of opening a key file with the
// production Argon2id parameters (t=3, 64 MiB, p=4): paid once at start-up.
func BenchmarkSoftwareOpen(b *testing.B) {
	path := filepath.Join(b.TempDir(), "kek.json")
	quiet := slog.New(slog.DiscardHandler)
	p, err := hsm.Open(b.Context(), "software", hsm.Options{KEKFile: path, Passphrase: "pw", Create: true, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	p.Close()
	for b.Loop() {
		p, err := hsm.Open(b.Context(), "software", hsm.Options{KEKFile: path, Passphrase: "pw", Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		p.Close()
	}
}
