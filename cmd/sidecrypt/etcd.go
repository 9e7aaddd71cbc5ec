package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"syscall"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sidecrypt/sidecrypt/internal/admin"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/internal/config"
	"github.com/sidecrypt/sidecrypt/internal/election"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/rules"
)

// This file wires the parts of sidecrypt that several sidecars share
// through etcd: the keystore (env.go opens it), the rules, and the
// election of the one sidecar that runs the background key work.

// etcdTLS returns the SIDECRYPT_ETCD_* TLS client settings.
func etcdTLS(cfg config.Config) keystore.EtcdTLS {
	return keystore.EtcdTLS{CA: cfg.EtcdCA, Cert: cfg.EtcdCert, Key: cfg.EtcdKey}
}

// ruleSource is what serve needs of its rules, from a file or from etcd.
type ruleSource interface {
	rules.Source
	Reload(ctx context.Context) error
	Run(ctx context.Context) error
	Stats() *rules.Stats
}

var (
	_ ruleSource = (*rules.FileSource)(nil)
	_ ruleSource = (*rules.EtcdSource)(nil)
)

// openRuleSource opens the rules that SIDECRYPT_RULES names: a file, or
// an etcd:// key (every sidecar of a deployment watching one stored rule
// file). It also returns where PUT /v1/rules writes, and what to close at
// the end.
func openRuleSource(ctx context.Context, cfg config.Config, store keystore.Store, log *slog.Logger, rec audit.Recorder, hooks rules.Hooks) (ruleSource, admin.RulesWriter, func(), error) {
	if !rules.IsEtcdRules(cfg.Rules) {
		src, err := rules.NewFileSource(cfg.Rules, rules.FileSourceOptions{Logger: log, Recorder: rec, Hooks: hooks})
		if err != nil {
			return nil, nil, nil, err
		}
		return src, fileRulesWriter(cfg.Rules, log), func() {}, nil
	}
	cli, key, closeCli, err := etcdRulesClient(cfg, store)
	if err != nil {
		return nil, nil, nil, err
	}
	src, err := rules.NewEtcdSource(ctx, cli, key, rules.EtcdSourceOptions{Logger: log, Recorder: rec, Hooks: hooks})
	if err != nil {
		closeCli()
		return nil, nil, nil, err
	}
	return src, src, closeCli, nil
}

// etcdRulesClient returns a client and the key for an etcd:// rules URL.
// A URL without hosts (etcd:///sidecrypt/rules) uses the keystore's etcd:
// its open client when store is one, else a client on SIDECRYPT_KEYSTORE's
// endpoints.
func etcdRulesClient(cfg config.Config, store keystore.Store) (*clientv3.Client, string, func(), error) {
	u, err := keystore.ParseEtcdURL(cfg.Rules)
	if err != nil {
		return nil, "", nil, fmt.Errorf("SIDECRYPT_RULES: %w", err)
	}
	if u.Path == "" {
		return nil, "", nil, fmt.Errorf("SIDECRYPT_RULES=%s names no etcd key; give one, e.g. %s/sidecrypt/rules", cfg.Rules, cfg.Rules)
	}
	if len(u.Endpoints) == 0 {
		if es, ok := store.(*keystore.EtcdStore); ok {
			return es.Client(), u.Path, func() {}, nil
		}
		if !cfg.KeystoreIsEtcd() {
			return nil, "", nil, fmt.Errorf("SIDECRYPT_RULES=%s names no etcd host, and SIDECRYPT_KEYSTORE is not etcd to borrow them from", cfg.Rules)
		}
		ku, err := keystore.ParseEtcdURL(cfg.Keystore)
		if err != nil {
			return nil, "", nil, fmt.Errorf("SIDECRYPT_KEYSTORE: %w", err)
		}
		u.Endpoints, u.TLS = ku.Endpoints, ku.TLS
	}
	cli, err := keystore.NewEtcdClient(u, etcdTLS(cfg))
	if err != nil {
		return nil, "", nil, err
	}
	return cli, u.Path, func() { _ = cli.Close() }, nil
}

// newElector returns the election among sidecars that share an etcd
// keystore, on <prefix>/leader; nil for the embedded store, whose single
// sidecar always does the background work.
func newElector(store keystore.Store, log *slog.Logger) (*election.Elector, error) {
	es, ok := store.(*keystore.EtcdStore)
	if !ok {
		return nil, nil
	}
	return election.New(es.Client(), election.Options{Prefix: es.Prefix() + "/leader", Logger: log})
}

// leaderFunc is scheduler.Options.Leader: the election's verdict, or nil
// (always) without one.
func leaderFunc(el *election.Elector) func() bool {
	if el == nil {
		return nil
	}
	return el.Leader
}

// runWhileLeader runs the scheduler for as long as this sidecar leads
// (its context ends the moment leadership is lost, which stops a re-wrap
// between two keys), and campaigns again after; without an election it
// simply runs.
func runWhileLeader(el *election.Elector, run func(context.Context) error) func(context.Context) error {
	if el == nil {
		return run
	}
	return func(ctx context.Context) error {
		return el.Run(ctx, func(ctx context.Context) { _ = run(ctx) })
	}
}

// fileRulesWriter is what PUT /v1/rules writes through: the rule file
// itself, unless its directory is not writable (a Kubernetes ConfigMap is
// a read-only mount). Then the API's rule changes are off (409), since the
// file's real source (the ConfigMap, and the review in front of it) would
// overwrite them anyway, and serve says so once at start.
func fileRulesWriter(path string, log *slog.Logger) admin.RulesWriter {
	if err := syscall.Access(filepath.Dir(path), 2 /* W_OK */); err != nil {
		log.Info("rules: the rule file's directory is not writable (a read-only mount, such as a Kubernetes ConfigMap): PUT /v1/rules is off; change the rules where the file comes from",
			"rules", path, "err", err)
		return nil
	}
	return admin.FileRulesWriter(path)
}
