package keystore_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
)

// countingStore counts record reads.
type countingStore struct {
	keystore.Store
	gets atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, name string) (*keystore.Key, error) {
	c.gets.Add(1)
	return c.Store.Get(ctx, name)
}

// TestRefusedUnwrapFlood: tokens naming a thousand versions that do not
// exist cost a handful of record reads and two audit lines (each line an
// fsync'd write), not a thousand of each; the aggregated line says how
// many and which. A real version still opens in the middle of the flood,
// and a change made through the manager is seen at once.
func TestRefusedUnwrapFlood(t *testing.T) {
	dir := t.TempDir()
	bolt, err := keystore.OpenBolt(filepath.Join(dir, "keys.db"), keystore.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	store := &countingStore{Store: bolt}
	kek := keystoretest.NewFakeKEK()
	logPath := filepath.Join(dir, "audit.log")
	log, err := audit.Open(logPath, audit.Options{Signer: kek})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	m, err := keystore.NewManager(keystore.Config{Store: store, KEK: kek, Audit: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx := audit.WithActor(context.Background(), "proxy")
	if _, err := m.Create(ctx, "pii", 0, false); err != nil {
		t.Fatal(err)
	}
	lines := func() int {
		b, _ := os.ReadFile(logPath)
		return bytes.Count(b, []byte("\n"))
	}
	before, readsBefore := lines(), store.gets.Load()

	const n = 1000
	for v := uint32(2); v < 2+n; v++ {
		if _, err := m.Unwrap(ctx, "pii", v); !errors.Is(err, keystore.ErrNotFound) {
			t.Fatalf("v%d: %v", v, err)
		}
		if v == 500 {
			dek, err := m.Unwrap(ctx, "pii", 1)
			if err != nil {
				t.Fatalf("a real version in the middle of the flood: %v", err)
			}
			clear(dek)
		}
	}
	reads := store.gets.Load() - readsBefore
	if reads > 10 {
		t.Errorf("%d refused unwraps read the store %d times", n, reads)
	}
	if got := lines() - before; got != 1 {
		t.Errorf("%d refusals wrote %d audit lines before the window closed, want 1", n, got)
	}
	m.FlushDenials()
	if got := lines() - before; got != 2 {
		t.Fatalf("after the window: %d audit lines, want 2", got)
	}
	b, _ := os.ReadFile(logPath)
	last := string(b[bytes.LastIndexByte(b[:len(b)-1], '\n')+1:])
	for _, want := range []string{`"action":"key.unwrap"`, `"outcome":"denied"`, `"aggregated":"999"`, `"versions":"3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18 and 983 more"`, `"reason_kind":"unknown version"`} {
		if !strings.Contains(last, want) {
			t.Errorf("aggregated event lacks %s:\n%s", want, last)
		}
	}
	if res, err := audit.VerifyFile(ctx, logPath, audit.VerifyOptions{Signer: kek}); err != nil || !res.OK {
		t.Fatalf("audit verify: %v %+v", err, res)
	}

	// Remembered refusals never outlive a change made here: rotate
	// makes v2, which opens at once.
	if _, err := m.Unwrap(ctx, "pii", 2); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := m.Rotate(ctx, "pii", 0); err != nil {
		t.Fatal(err)
	}
	dek, err := m.Unwrap(ctx, "pii", 2)
	if err != nil {
		t.Fatalf("v2 right after the rotation: %v", err)
	}
	clear(dek)
}
