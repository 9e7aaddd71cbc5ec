//go:build !cgo || nopkcs11

package hsm

import (
	"context"
	"fmt"
	"log/slog"
)

// openPKCS11 in a build without PKCS#11 support: the URI was valid, but
// this binary cannot load a module. Say so plainly rather than fall back
// to the software provider.
func openPKCS11(ctx context.Context, cfg pkcs11Config, opts Options, log *slog.Logger) (Provider, error) {
	return nil, fmt.Errorf("hsm: pkcs11 (module %q, token %q): %w", cfg.ModulePath, cfg.Token, ErrNotCompiled)
}
