package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/user"

	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/internal/config"
	"github.com/sidecrypt/sidecrypt/keystore"
)

// keyEnv is what every command that touches keys opens: the KEK provider,
// the audit log (checkpoints signed by the provider), the keystore and the
// lifecycle manager over them.
type keyEnv struct {
	cfg      config.Config
	provider hsm.Provider
	// escrow is the keystore's second provider (SIDECRYPT_HSM_ESCROW), or
	// nil.
	escrow  hsm.Provider
	audit   *audit.Log
	store   keystore.Store
	manager *keystore.Manager
}

// openKeyEnv opens the key environment that cfg describes. wrap, when not
// nil, decorates the provider (metrics). create lets the software provider
// create its KEK file and a PKCS#11 token its first KEK.
func openKeyEnv(ctx context.Context, cfg config.Config, log *slog.Logger, create bool, wrap func(hsm.Provider) hsm.Provider) (*keyEnv, error) {
	if cfg.HSM == "software" && cfg.MasterPassphrase == "" {
		return nil, errors.New("the software KEK provider needs a passphrase: set SIDECRYPT_MASTER_PASSPHRASE or SIDECRYPT_MASTER_PASSPHRASE_FILE (or configure an HSM with SIDECRYPT_HSM=pkcs11:...)")
	}
	p, err := hsm.Open(ctx, cfg.HSM, hsm.Options{
		PIN: cfg.HSMPIN.Reveal(), Passphrase: cfg.MasterPassphrase.Reveal(),
		KEKFile: cfg.KEKFile, Create: create, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	if wrap != nil {
		p = wrap(p)
	}
	e := &keyEnv{cfg: cfg, provider: p}
	if cfg.HSMEscrow != "" {
		// The escrow's first KEK is made when the primary's is: a new
		// keystore starts with both wraps.
		if e.escrow, err = hsm.Open(ctx, cfg.HSMEscrow, hsm.Options{PIN: cfg.HSMEscrowPIN.Reveal(), Create: create, Logger: log}); err != nil {
			e.Close()
			return nil, fmt.Errorf("the escrow provider (SIDECRYPT_HSM_ESCROW): %w", err)
		}
	}
	if e.store, err = openStoreLog(ctx, cfg, log); err != nil {
		e.Close()
		return nil, err
	}
	// The store first: an etcd keystore is also the audit log's witness.
	witness, _, err := auditWitness(cfg, e.store)
	if err != nil {
		e.Close()
		return nil, err
	}
	if e.audit, err = audit.Open(cfg.AuditLog, audit.Options{Signer: p, Logger: log, Witness: witness}); err != nil {
		e.Close()
		return nil, err
	}
	kc := keystore.Config{Store: e.store, KEK: p, Audit: e.audit, Logger: log, SealLimit: cfg.SealLimit}
	if e.escrow != nil {
		kc.Escrow = e.escrow
	}
	if e.manager, err = keystore.NewManager(kc); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// openStore opens the keystore that SIDECRYPT_KEYSTORE names.
func openStore(ctx context.Context, cfg config.Config) (keystore.Store, error) {
	return openStoreLog(ctx, cfg, nil)
}

// openStoreLog is openStore with a logger for the etcd store's watch.
func openStoreLog(_ context.Context, cfg config.Config, log *slog.Logger) (keystore.Store, error) {
	if cfg.KeystoreIsEtcd() {
		// etcd:// or etcds://, with SIDECRYPT_ETCD_* for TLS (etcd.go).
		return keystore.OpenEtcd(cfg.Keystore, etcdTLS(cfg), keystore.EtcdOptions{Logger: log})
	}
	return keystore.OpenBolt(cfg.Keystore, keystore.BoltOptions{})
}

// openAuditLog opens the audit log for a command that changes something
// but needs no keys (rules push): the HSM is opened only to sign the
// log's checkpoints, as serve and the key commands do.
func (a *app) openAuditLog(cfg config.Config) (*audit.Log, func(), error) {
	if cfg.HSM == "software" && cfg.MasterPassphrase == "" {
		return nil, nil, errors.New("the audit log's checkpoints are signed by the KEK provider: set SIDECRYPT_MASTER_PASSPHRASE (software provider) or configure SIDECRYPT_HSM")
	}
	log := a.quietLogger(cfg)
	p, err := hsm.Open(a.ctx, cfg.HSM, hsm.Options{
		PIN: cfg.HSMPIN.Reveal(), Passphrase: cfg.MasterPassphrase.Reveal(),
		KEKFile: cfg.KEKFile, Logger: log,
	})
	if err != nil {
		return nil, nil, err
	}
	witness, _, err := auditWitness(cfg, nil)
	if err != nil {
		p.Close()
		return nil, nil, err
	}
	l, err := audit.Open(cfg.AuditLog, audit.Options{Signer: p, Logger: log, Witness: witness})
	if err != nil {
		p.Close()
		return nil, nil, err
	}
	return l, func() { l.Close(); p.Close() }, nil
}

// Close releases everything opened, in reverse order.
func (e *keyEnv) Close() error {
	var errs []error
	if e.store != nil {
		errs = append(errs, e.store.Close())
	}
	if e.audit != nil {
		errs = append(errs, e.audit.Close())
	}
	if e.provider != nil {
		errs = append(errs, e.provider.Close())
	}
	if e.escrow != nil {
		errs = append(errs, e.escrow.Close())
	}
	return errors.Join(errs...)
}

// cliActor names the operating-system user for audit events: "cli:alice".
func cliActor() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "cli:" + u.Username
	}
	return "cli:unknown"
}
