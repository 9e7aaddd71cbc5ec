package proxy

import (
	"context"
	"testing"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// countingKeyring counts SealKey calls and hands out fresh copies.
type countingKeyring struct {
	fieldcrypt.Keyring
	t     *testing.T
	seals int
}

func (c *countingKeyring) SealKey(ctx context.Context, name string) (*fieldcrypt.DataKey, error) {
	c.seals++
	return newKey(c.t, name, 1), nil
}

// TestRequestKeys: a request asks the keyring once per key name, and again
// after the key it got was zeroed (purged by the cache mid-request).
func TestRequestKeys(t *testing.T) {
	base := &countingKeyring{Keyring: testKeyring(t), t: t}
	k := &requestKeys{Keyring: base}
	ctx := context.Background()
	pii, _ := k.SealKey(ctx, "pii")
	if again, _ := k.SealKey(ctx, "pii"); again != pii || base.seals != 1 {
		t.Fatalf("second SealKey: same key %v, keyring asked %d times", again == pii, base.seals)
	}
	k.SealKey(ctx, "contact")
	pii.Zero()
	fresh, err := k.SealKey(ctx, "pii")
	if err != nil || fresh == pii || fresh.Zeroed() || base.seals != 3 {
		t.Fatalf("after a purge: err %v, same key %v, keyring asked %d times", err, fresh == pii, base.seals)
	}
	if again, _ := k.SealKey(ctx, "pii"); again != fresh || base.seals != 3 {
		t.Fatalf("the fresh key is not remembered (%d calls)", base.seals)
	}
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		k.SealKey(ctx, name)
	}
	k.SealKey(ctx, "a") // remembered
	k.SealKey(ctx, "e") // a fifth name: not remembered, asked again
	if base.seals != 9 {
		t.Fatalf("%d calls, want 9: four names are remembered, beyond them every call asks", base.seals)
	}
}
