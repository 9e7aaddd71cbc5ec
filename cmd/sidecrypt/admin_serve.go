package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"

	"github.com/sidecrypt/sidecrypt/internal/admin"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/internal/config"
	"github.com/sidecrypt/sidecrypt/internal/metrics"
	"github.com/sidecrypt/sidecrypt/internal/scheduler"
	"github.com/sidecrypt/sidecrypt/keycache"
	"github.com/sidecrypt/sidecrypt/keystore"
)

// adminParts is what openAdmin returns for serve: the API and its
// listeners (either may be nil when turned off).
type adminParts struct {
	api       *admin.Server
	tcp, unix net.Listener
}

func (p *adminParts) close() {
	if p.tcp != nil {
		p.tcp.Close()
	}
	if p.unix != nil {
		p.unix.Close()
	}
}

// openAdmin listens for the admin API: on TCP (SIDECRYPT_ADMIN_LISTEN;
// health, readiness and metrics for anyone, the API only with
// credentials; TLS when configured) and on the Unix socket
// (SIDECRYPT_ADMIN_SOCKET), and builds the API. It returns nil parts when
// both are off.
func openAdmin(cfg config.Config, env *keyEnv, src ruleSource, rw admin.RulesWriter, sched *scheduler.Scheduler, sweeps admin.Sweeps,
	m *metrics.Metrics, cache *keycache.Cache, rec audit.Recorder, pingUpstream func(context.Context) error, log *slog.Logger) (*adminParts, error) {
	if cfg.AdminListen == "off" && cfg.AdminSocket == "off" {
		return nil, nil
	}
	p := &adminParts{}
	var err error
	if cfg.AdminListen != "off" {
		if p.tcp, err = net.Listen("tcp", cfg.AdminListen); err != nil {
			return nil, fmt.Errorf("admin listener: %w", err)
		}
		if cfg.AdminTLSCert != "" {
			tc, err := admin.TLSConfig(cfg.AdminTLSCert, cfg.AdminTLSKey, cfg.AdminClientCA)
			if err != nil {
				p.close()
				return nil, err
			}
			p.tcp = tls.NewListener(p.tcp, tc)
		}
	}
	if cfg.AdminSocket != "off" && cfg.AdminSocket == cfg.DefaultAdminSocket() && len(cfg.AdminSocket) > admin.MaxSocketPath {
		// A default that does not fit is not worth refusing to start
		// over; a path the operator chose is.
		log.Warn("admin: the default admin socket path is too long for a Unix socket; the socket is off: set SIDECRYPT_ADMIN_SOCKET to a shorter path", "path", cfg.AdminSocket)
		cfg.AdminSocket = "off"
	}
	if cfg.AdminSocket != "off" {
		if p.unix, err = admin.ListenUnix(cfg.AdminSocket); err != nil {
			p.close()
			return nil, err
		}
	}
	var principals *admin.PrincipalSource
	if cfg.AdminTokensFile != "" {
		if principals, err = admin.OpenPrincipals(cfg.AdminTokensFile, log); err != nil {
			p.close()
			return nil, err
		}
	}
	_, witness, err := auditWitness(cfg, env.store)
	if err != nil {
		p.close()
		return nil, err
	}
	p.api, err = admin.New(admin.Config{
		Keys: env.manager, Rules: src, RulesFile: rw, Rewrap: sched, Sweeps: sweeps,
		Metrics: m.Handler(), AuditLog: cfg.AuditLog, Recorder: rec,
		Signer: env.provider, AuditWitness: witness,
		Principals: principals, Token: cfg.AdminToken.Reveal(), AllowedHosts: cfg.AdminHosts,
		ApprovalsFile: cfg.AdminApprovals, ApprovalTTL: cfg.AdminApprovalTTL,
		PingStore: env.store.Ping, PingHSM: env.provider.Ping, CachedEnough: cache.Cached, PingUpstream: pingUpstream,
		DefaultCryptoperiod: cfg.DefaultCryptoperiod,
		Logger:              log,
	})
	if err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

// auditWitness builds SIDECRYPT_AUDIT_WITNESS: where the audit log's
// head is published, and how `audit verify --witness` reads it back (nil
// for syslog, which cannot be read back). "etcd" uses the etcd
// keystore's client; a process without one open publishes nothing (the
// next head from serve covers its entries).
func auditWitness(cfg config.Config, store keystore.Store) (audit.Witness, audit.WitnessReader, error) {
	switch cfg.AuditWitness {
	case "":
		return nil, nil, nil
	case "etcd":
		es, ok := store.(*keystore.EtcdStore)
		if !ok {
			return nil, nil, nil
		}
		w := audit.EtcdWitness{Client: es.Client(), Prefix: es.Prefix() + "/audit-heads"}
		return w, w, nil
	}
	return audit.ParseWitness(cfg.AuditWitness)
}
