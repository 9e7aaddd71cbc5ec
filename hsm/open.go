package hsm

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// Options configure Open. Secrets arrive here from the environment (never
// from flags) and are not retained longer than the provider needs them.
type Options struct {
	// PIN is the PKCS#11 user PIN (SIDECRYPT_HSM_PIN). When empty, the
	// URI's pin-source is used.
	PIN string
	// Passphrase seals the software provider's KEK file
	// (SIDECRYPT_MASTER_PASSPHRASE).
	Passphrase string
	// KEKFile is the software provider's sealed KEK file.
	KEKFile string
	// Create allows the software provider to create KEKFile, and the
	// PKCS#11 and AWS KMS providers to generate the first KEK version,
	// when absent.
	Create bool
	// Logger receives start-up warnings (e.g. "software provider: not an
	// HSM"); nil means slog.Default().
	Logger *slog.Logger
}

// Open returns the provider named by spec: "software", an RFC 7512
// pkcs11: URI (pkcs11:token=...;object=...?module-path=...) or an awskms:
// URI (awskms:///alias/sidecrypt?region=eu-west-1).
func Open(ctx context.Context, spec string, opts Options) (Provider, error) {
	return open(ctx, spec, opts)
}

func open(ctx context.Context, spec string, opts Options) (Provider, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	switch {
	case spec == "" || spec == "software":
		return openSoftware(ctx, opts, log)
	case len(spec) >= len("awskms:") && strings.EqualFold(spec[:len("awskms:")], "awskms:"):
		cfg, err := parseAWSKMSURI(spec)
		if err != nil {
			return nil, err
		}
		return openAWSKMS(ctx, cfg, opts, log)
	case len(spec) >= len("pkcs11:") && strings.EqualFold(spec[:len("pkcs11:")], "pkcs11:"):
		cfg, err := parsePKCS11URI(spec)
		if err != nil {
			return nil, err
		}
		return openPKCS11(ctx, cfg, opts, log)
	default:
		// Do not echo spec: a mistyped URI may carry a pin-value.
		return nil, fmt.Errorf("hsm: unknown provider (want \"software\", an RFC 7512 pkcs11: URI or an awskms: URI): %w", ErrConfig)
	}
}
