package keystore

import "context"

// PutSealedForTest writes k through the Manager's sealed write path, as
// sidecrypt itself would: for tests that need an authentic record with
// content no operation produces.
func PutSealedForTest(ctx context.Context, m *Manager, k *Key) (*Key, error) { return m.putKey(ctx, k) }
