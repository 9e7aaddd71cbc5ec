package proxy

import (
	"context"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// requestKeys is the Keyring of one request: the first SealKey of a key
// name asks the proxy's keyring (the key cache: a lock, an LRU lookup, a
// usage-limit check and the version's seal budget); later ones in the
// same request get the same key back, unless it was zeroed meanwhile (the
// cache purged it: a revoke, a destroy, a key changed in the store), in
// which case the keyring is asked again, as it was before. The pipeline resolves every key an
// operation seals with before it reads the body, so that an outage is
// refused early; without this, the transformer would then resolve each of
// them again. The seals a request makes are charged to the version's
// budget by the next SealKey of the key, as they are when the transformer
// resolves a key once and seals many fields with it. OpenKey is not
// remembered: a response opens each key version once per call anyway.
//
// It lives inside the exchange, so it costs no allocation.
type requestKeys struct {
	fieldcrypt.Keyring
	n     int
	names [4]string
	keys  [4]*fieldcrypt.DataKey
}

func (k *requestKeys) SealKey(ctx context.Context, name string) (*fieldcrypt.DataKey, error) {
	i := 0
	for ; i < k.n; i++ {
		if k.names[i] == name {
			if !k.keys[i].Zeroed() {
				return k.keys[i], nil
			}
			break
		}
	}
	dk, err := k.Keyring.SealKey(ctx, name)
	if err != nil {
		return dk, err
	}
	switch {
	case i < k.n:
		k.keys[i] = dk
	case k.n < len(k.names):
		k.names[k.n], k.keys[k.n] = name, dk
		k.n++
	}
	return dk, nil
}

var _ fieldcrypt.Keyring = (*requestKeys)(nil)
