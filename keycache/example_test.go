package keycache_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/keycache"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
)

// A cache in front of a Manager is the Keyring the proxy seals and opens
// with; Run keeps it in step with revocations made by other processes.
func Example() {
	dir, _ := os.MkdirTemp("", "keycache-example")
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	st, _ := keystore.OpenBolt(filepath.Join(dir, "keys.db"), keystore.BoltOptions{})
	m, _ := keystore.NewManager(keystore.Config{Store: st, KEK: keystoretest.NewFakeKEK()})
	m.Create(ctx, "pii", 0, false)

	cache := keycache.New(m, keycache.Options{})
	defer cache.Close()
	go cache.Run(ctx, st)

	k, _ := cache.SealKey(ctx, "pii")
	tok, _ := fieldcrypt.SealString(k, fieldcrypt.ModeRandom, "123-45-6789")
	info, _ := fieldcrypt.ParseTokenInfo(tok)
	fmt.Println("sealed under", info.Key, "v", info.KeyVersion)

	k2, _ := cache.OpenKey(ctx, info.Key, info.KeyVersion)
	_, plain, _ := fieldcrypt.OpenToken(k2, tok)
	fmt.Println(string(plain))
	fmt.Println("unwraps:", cache.Stats().Unwraps)
	// Output:
	// sealed under pii v 1
	// "123-45-6789"
	// unwraps: 1
}
