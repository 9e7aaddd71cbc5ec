package audit

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/hsm/hsmtest"
	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.CleanupSoftHSM()
	os.Exit(code)
}

// benchRecord records b.N events from callers goroutines into a fresh log
// and reports events per second. With one caller every event pays its own
// fsync; with many, concurrent events share one (group commit).
func benchRecord(b *testing.B, signer Signer, callers int) {
	path := filepath.Join(b.TempDir(), "audit.log")
	l, err := Open(path, Options{Signer: signer, CheckpointEvery: time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ev := Event{Action: "request.refused", Reason: "invalid_json", Details: map[string]string{"route": "patients", "method": "POST"}}
	ctx := WithActor(context.Background(), "proxy")
	b.ReportAllocs()
	b.ResetTimer()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := l.Record(ctx, ev); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func softwareSigner(b *testing.B) Signer { return hsmtest.NewSoftware(b) }

func softHSMSigner(b *testing.B) Signer {
	tok := testenv.UseSoftHSM(b).InitToken(b, "audit-bench")
	p, err := hsm.Open(b.Context(), tok.URI("kek"), hsm.Options{PIN: tok.PIN, Create: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

func BenchmarkRecordSoftware1(b *testing.B)  { benchRecord(b, softwareSigner(b), 1) }
func BenchmarkRecordSoftware64(b *testing.B) { benchRecord(b, softwareSigner(b), 64) }
func BenchmarkRecordSoftHSM1(b *testing.B)   { benchRecord(b, softHSMSigner(b), 1) }
func BenchmarkRecordSoftHSM64(b *testing.B)  { benchRecord(b, softHSMSigner(b), 64) }

// BenchmarkAuditMACSoftHSM is the cost of one HSM MAC: what each entry of
// the keyed chain pays.
func BenchmarkAuditMACSoftHSM(b *testing.B) {
	s := softHSMSigner(b)
	msg := make([]byte, 300)
	for b.Loop() {
		if _, err := s.AuditMAC(b.Context(), msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeLine is the CPU an entry costs the writer (JSON and the
// keyed MAC); BenchmarkEncodeLineV1 what it cost in format version 1
// (JSON and SHA-256).
func BenchmarkEncodeLine(b *testing.B) {
	ev := Event{Time: time.Now(), Actor: "proxy", Action: "request.refused", Reason: "invalid_json", Details: map[string]string{"route": "patients", "method": "POST"}}
	m := hmac.New(sha256.New, make([]byte, 32))
	prev := "0123456789012345678901234567890123456789012"
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := encodeLineWith(7, ev, "AAAAAAAAAAAAAAAA", m, prev); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeLineV1(b *testing.B) {
	ev := Event{Time: time.Now(), Actor: "proxy", Action: "request.refused", Reason: "invalid_json", Details: map[string]string{"route": "patients", "method": "POST"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := encodeLineV1(7, ev, zeroHash); err != nil {
			b.Fatal(err)
		}
	}
}
