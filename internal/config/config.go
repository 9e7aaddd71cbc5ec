// Package config reads sidecrypt's settings from the environment
// (prefix SIDECRYPT_) through github.com/caarlos0/env/v11, and binds a
// command-line flag to each setting where a flag helps.
//
// Secrets (the HSM PIN, the master passphrase, admin tokens) come only
// from the environment or from a file named by the matching _FILE variable,
// never from a flag: command lines are visible to every user of the host
// through /proc and ps.
package config

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/sidecrypt/sidecrypt/keystore"
)

// Config holds every setting. Each field documents its variable, default
// and unit.
type Config struct {
	// Listen is the proxy listener. SIDECRYPT_LISTEN, default 127.0.0.1:8080.
	Listen string `env:"LISTEN" envDefault:"127.0.0.1:8080" help:"proxy listener, host:port"`
	// Upstream is the datastore URL; reverse mode when set, forward mode
	// (HTTP_PROXY) when empty. SIDECRYPT_UPSTREAM.
	Upstream string `env:"UPSTREAM" help:"datastore URL, http(s)://host:port; empty for forward mode"`
	// UpstreamCA is a PEM file of CA certificates trusted for an HTTPS
	// upstream, in addition to the system roots. SIDECRYPT_UPSTREAM_CA.
	UpstreamCA string `env:"UPSTREAM_CA" help:"PEM file of extra CAs trusted for an HTTPS upstream"`
	// UpstreamTimeout bounds waiting for the upstream's response headers.
	// SIDECRYPT_UPSTREAM_TIMEOUT, default 60s.
	UpstreamTimeout time.Duration `env:"UPSTREAM_TIMEOUT" envDefault:"60s" help:"how long to wait for the upstream's response headers"`
	// UpstreamTransport picks how reverse mode talks to a plain-HTTP
	// upstream: direct (round trips on the request's goroutine for bodies
	// in memory, proxy/direct.go) or standard (net/http's Transport for
	// everything). SIDECRYPT_UPSTREAM_TRANSPORT, default direct.
	UpstreamTransport string `env:"UPSTREAM_TRANSPORT" envDefault:"direct" help:"direct or standard: how reverse mode talks to a plain-HTTP upstream"`
	// Engine picks reverse mode's HTTP server: fasthttp (fasthttp's
	// server in front of the pipeline, proxy/fastengine.go) or nethttp
	// (net/http and httputil.ReverseProxy in front of the same
	// pipeline). SIDECRYPT_ENGINE; empty (the default) is fasthttp in
	// reverse mode; forward mode always runs on nethttp.
	Engine string `env:"ENGINE" help:"fasthttp (reverse mode's default) or nethttp: reverse mode's HTTP server"`
	// Rules is the rule file (or etcd:// URL). SIDECRYPT_RULES.
	Rules string `env:"RULES" help:"rule file, or etcd://host:2379/key"`
	// Keystore is the embedded key store file, or an etcd:// URL.
	// SIDECRYPT_KEYSTORE, default sidecrypt-data/keys.db.
	Keystore string `env:"KEYSTORE" envDefault:"sidecrypt-data/keys.db" help:"keystore file, or etcd://host:2379,host:2379/prefix"`
	// EtcdCA, EtcdCert, EtcdKey: TLS client settings for an etcd keystore.
	EtcdCA   string `env:"ETCD_CA" help:"CA file that verifies the etcd servers"`
	EtcdCert string `env:"ETCD_CERT" help:"client certificate file for etcd"`
	EtcdKey  string `env:"ETCD_KEY" help:"client key file for etcd"`
	// HSM is "software" (development), an RFC 7512 pkcs11: URI with
	// module-path, or an awskms: URI (docs/KEK.md). SIDECRYPT_HSM,
	// default software.
	HSM string `env:"HSM" envDefault:"software" help:"\"software\" (development), an RFC 7512 pkcs11: URI or an awskms: URI"`
	// HSMEscrow is the keystore's second provider, a pkcs11: or awskms:
	// URI, which wraps every data key too so that either provider alone
	// recovers them (docs/KEK.md, "Two wraps per data key"). Every
	// process on a keystore must have the same. SIDECRYPT_HSM_ESCROW,
	// default none.
	HSMEscrow string `env:"HSM_ESCROW" help:"second KEK provider that also wraps every data key (pkcs11: or awskms: URI; default none)"`
	// HSMEscrowPIN is the escrow token's user PIN when the escrow is a
	// pkcs11: URI. SIDECRYPT_HSM_ESCROW_PIN or SIDECRYPT_HSM_ESCROW_PIN_FILE.
	HSMEscrowPIN     Secret `env:"HSM_ESCROW_PIN"`
	HSMEscrowPINFile string `env:"HSM_ESCROW_PIN_FILE" flag:"-"`
	// HSMPIN is the token user PIN. SIDECRYPT_HSM_PIN or SIDECRYPT_HSM_PIN_FILE.
	HSMPIN     Secret `env:"HSM_PIN"`
	HSMPINFile string `env:"HSM_PIN_FILE" flag:"-"`
	// KEKFile is where the software provider keeps its sealed KEKs.
	// SIDECRYPT_KEK_FILE, default kek.json next to the keystore file.
	KEKFile string `env:"KEK_FILE" help:"software provider's sealed KEK file (default kek.json next to the keystore)"`
	// MasterPassphrase seals the software provider's KEK file.
	// SIDECRYPT_MASTER_PASSPHRASE or SIDECRYPT_MASTER_PASSPHRASE_FILE.
	MasterPassphrase     Secret `env:"MASTER_PASSPHRASE"`
	MasterPassphraseFile string `env:"MASTER_PASSPHRASE_FILE" flag:"-"`
	// AdminListen is the admin TCP listener: /healthz, /readyz and
	// /metrics for anyone, the key and rule API only with credentials.
	// SIDECRYPT_ADMIN_LISTEN, default 127.0.0.1:8081; "off" disables it.
	AdminListen string `env:"ADMIN_LISTEN" envDefault:"127.0.0.1:8081" help:"admin listener (health, readiness, metrics; API with credentials), or \"off\""`
	// AdminSocket is the Unix socket of the admin API (mode 0600; the
	// caller's uid is its credential), which the CLI uses by default.
	// SIDECRYPT_ADMIN_SOCKET, default admin.sock next to the keystore
	// file; "off" disables it.
	AdminSocket string `env:"ADMIN_SOCKET" help:"admin API Unix socket (default admin.sock next to the keystore), or \"off\""`
	// AdminToken is the legacy single admin credential: principal
	// "admin" with every role, warned about at start-up.
	// SIDECRYPT_ADMIN_TOKEN or SIDECRYPT_ADMIN_TOKEN_FILE.
	AdminToken     Secret `env:"ADMIN_TOKEN"`
	AdminTokenFile string `env:"ADMIN_TOKEN_FILE" flag:"-"`
	// AdminTokensFile lists the admin principals: their roles and
	// credentials (token hashes, socket uids, certificate names).
	// SIDECRYPT_ADMIN_TOKENS_FILE; see docs/OPERATIONS.md, "Access model".
	AdminTokensFile string `env:"ADMIN_TOKENS_FILE" help:"admin principals file: roles and credentials"`
	// AdminHosts are extra names the Host header of an admin API request
	// may carry on TCP besides the listener's address (and localhost on
	// loopback). SIDECRYPT_ADMIN_HOSTS, comma-separated, host or
	// host:port.
	AdminHosts []string `env:"ADMIN_HOSTS" envSeparator:"," help:"extra names the admin API's Host header may carry, comma-separated"`
	// AdminTLSCert and AdminTLSKey serve the TCP admin listener over TLS;
	// AdminClientCA verifies client certificates (mTLS principals).
	// SIDECRYPT_ADMIN_TLS_CERT, SIDECRYPT_ADMIN_TLS_KEY,
	// SIDECRYPT_ADMIN_CLIENT_CA.
	AdminTLSCert  string `env:"ADMIN_TLS_CERT" help:"certificate file: serve the admin listener over TLS"`
	AdminTLSKey   string `env:"ADMIN_TLS_KEY" help:"key file of --admin-tls-cert"`
	AdminClientCA string `env:"ADMIN_CLIENT_CA" help:"CA file that verifies admin client certificates (mTLS)"`
	// AdminApprovalTTL is how long a dual-control request waits for its
	// second principal. SIDECRYPT_ADMIN_APPROVAL_TTL, default 1h, at
	// most 7 days.
	AdminApprovalTTL time.Duration `env:"ADMIN_APPROVAL_TTL" envDefault:"1h" help:"how long a dual-control request waits for approval"`
	// AdminApprovals keeps pending dual-control requests.
	// SIDECRYPT_ADMIN_APPROVALS, default the audit log's name +
	// ".approvals".
	AdminApprovals string `env:"ADMIN_APPROVALS" help:"file of pending dual-control requests (default the audit log + .approvals)"`
	// The CLI's side (approvals, admin whoami/call): AdminURL reaches the
	// API over TCP instead of the socket (SIDECRYPT_ADMIN_URL, e.g.
	// https://sidecar:8081), with the bearer token AdminClientToken
	// (SIDECRYPT_ADMIN_CLIENT_TOKEN or _FILE; on the socket it names a
	// principal other than the caller's uid's), a client certificate
	// (SIDECRYPT_ADMIN_CLIENT_CERT and _KEY), and the CA that verifies an
	// https server (SIDECRYPT_ADMIN_SERVER_CA).
	AdminURL             string `env:"ADMIN_URL" flag:"-"`
	AdminClientToken     Secret `env:"ADMIN_CLIENT_TOKEN"`
	AdminClientTokenFile string `env:"ADMIN_CLIENT_TOKEN_FILE" flag:"-"`
	AdminClientCert      string `env:"ADMIN_CLIENT_CERT" flag:"-"`
	AdminClientKey       string `env:"ADMIN_CLIENT_KEY" flag:"-"`
	AdminServerCA        string `env:"ADMIN_SERVER_CA" flag:"-"`
	// AuditLog is the audit log file (a keyed chain, see internal/audit).
	// SIDECRYPT_AUDIT_LOG, default audit.log next to the keystore file.
	AuditLog string `env:"AUDIT_LOG" help:"audit log file (default audit.log next to the keystore)"`
	// AuditWitness is where the audit log's head is published, outside
	// the log's host: "file:/path", "syslog:" (local),
	// "syslog:udp://host:514", "syslog:tcp://host:514", or "etcd" (the
	// etcd keystore's cluster). SIDECRYPT_AUDIT_WITNESS, default none.
	AuditWitness string `env:"AUDIT_WITNESS" help:"where the audit log's head is published: file:PATH, syslog:, etcd"`
	// CacheTTL is how long an unwrapped data key stays cached.
	// SIDECRYPT_CACHE_TTL, default 5m.
	CacheTTL time.Duration `env:"CACHE_TTL" envDefault:"5m" help:"how long an unwrapped data key stays cached"`
	// CacheSize is the most data key versions cached at once.
	// SIDECRYPT_CACHE_SIZE, default 1000.
	CacheSize int `env:"CACHE_SIZE" envDefault:"1000" help:"most data key versions cached"`
	// CacheMaxMessages and CacheMaxBytes limit how much one cached copy of
	// a key may seal before it is dropped and unwrapped afresh.
	// SIDECRYPT_CACHE_MAX_MESSAGES (default 1000000),
	// SIDECRYPT_CACHE_MAX_BYTES (default 1GiB).
	CacheMaxMessages uint64   `env:"CACHE_MAX_MESSAGES" envDefault:"1000000" help:"values one cached key copy may seal before it is unwrapped afresh"`
	CacheMaxBytes    ByteSize `env:"CACHE_MAX_BYTES" envDefault:"1GiB" help:"bytes one cached key copy may seal before it is unwrapped afresh"`
	// MaxBody is the largest request or response body that is buffered
	// for transformation; larger ones on a protected route get 413.
	// SIDECRYPT_MAX_BODY, bytes or with a unit (KiB, MiB, GiB), default 16MiB.
	MaxBody ByteSize `env:"MAX_BODY" envDefault:"16MiB" help:"largest body transformed on a protected route, e.g. 16MiB"`
	// MaxDepth is the deepest JSON nesting accepted on a protected route.
	// SIDECRYPT_MAX_DEPTH, default 512.
	MaxDepth int `env:"MAX_DEPTH" envDefault:"512" help:"deepest JSON nesting accepted on a protected route"`
	// CADir holds the forward-mode interception CA. SIDECRYPT_CA_DIR,
	// default ca/ next to the keystore file.
	CADir string `env:"CA_DIR" help:"forward mode's interception CA directory (default ca/ next to the keystore)"`
	// PassThrough lists what forward mode may reach besides the
	// datastore the rules name, comma-separated: "host", "host:port",
	// "*.example.com", an IP, "ip:port" or a CIDR. Names reach public
	// addresses only; loopback, private and link-local addresses only
	// when listed by address. SIDECRYPT_PASSTHROUGH, default none.
	PassThrough []string `env:"PASSTHROUGH" envSeparator:"," help:"forward mode: destinations passed through untouched, comma-separated"`
	// SealLimit is how many values one data key version may seal, across
	// every sidecar, before it is rotated (NIST SP 800-38D, 8.3).
	// SIDECRYPT_SEAL_LIMIT, default 2^30; at most 2^32.
	SealLimit uint64 `env:"SEAL_LIMIT" envDefault:"1073741824" help:"values one data key version may seal, across every sidecar"`
	// SealBlock is how many seals a sidecar reserves from a version's
	// shared counter at a time. SIDECRYPT_SEAL_BLOCK, default 65536.
	SealBlock uint64 `env:"SEAL_BLOCK" envDefault:"65536" help:"seals reserved from a version's shared counter at a time"`
	// DefaultCryptoperiod is the cryptoperiod `keys create` gives a key
	// when --cryptoperiod is not given. SIDECRYPT_DEFAULT_CRYPTOPERIOD,
	// default 2160h (90 days).
	DefaultCryptoperiod time.Duration `env:"DEFAULT_CRYPTOPERIOD" envDefault:"2160h" help:"cryptoperiod of a key created without one"`
	// RewrapRate bounds background re-wrapping, in keys per second.
	// SIDECRYPT_REWRAP_RATE, default 20.
	RewrapRate float64 `env:"REWRAP_RATE" envDefault:"20" help:"background re-wrap pace, keys per second"`
	// ShutdownTimeout bounds the graceful drain on SIGTERM.
	// SIDECRYPT_SHUTDOWN_TIMEOUT, default 30s.
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"30s" help:"graceful drain on SIGTERM"`
	// LogLevel is debug, info, warn or error. SIDECRYPT_LOG_LEVEL, default info.
	LogLevel string `env:"LOG_LEVEL" envDefault:"info" help:"debug, info, warn or error"`
	// derived records which paths resolve filled in from the keystore's
	// directory, for FlagsParsed.
	derived struct{ kekFile, auditLog, caDir, adminSocket, approvals bool }

	// LogFormat is text or json. SIDECRYPT_LOG_FORMAT, default text.
	LogFormat string `env:"LOG_FORMAT" envDefault:"text" help:"text or json"`
}

// Prefix is the environment variable prefix.
const Prefix = "SIDECRYPT_"

// Load reads the configuration from environ (KEY=VALUE pairs, as from
// os.Environ), resolves _FILE secrets and derived defaults, and validates.
func Load(environ []string) (Config, error) {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	var c Config
	if err := env.ParseWithOptions(&c, env.Options{Prefix: Prefix, Environment: m}); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if err := c.resolve(); err != nil {
		return Config{}, err
	}
	return c, c.Validate()
}

// resolve reads _FILE secrets and fills the defaults that depend on other
// settings.
func (c *Config) resolve() error {
	for _, s := range []struct {
		name string
		val  *Secret
		file string
	}{
		{"SIDECRYPT_HSM_PIN", &c.HSMPIN, c.HSMPINFile},
		{"SIDECRYPT_HSM_ESCROW_PIN", &c.HSMEscrowPIN, c.HSMEscrowPINFile},
		{"SIDECRYPT_MASTER_PASSPHRASE", &c.MasterPassphrase, c.MasterPassphraseFile},
		{"SIDECRYPT_ADMIN_TOKEN", &c.AdminToken, c.AdminTokenFile},
		{"SIDECRYPT_ADMIN_CLIENT_TOKEN", &c.AdminClientToken, c.AdminClientTokenFile},
	} {
		if s.file == "" {
			continue
		}
		if *s.val != "" {
			return fmt.Errorf("config: both %s and %s_FILE are set; set one", s.name, s.name)
		}
		b, err := os.ReadFile(s.file)
		if err != nil {
			return fmt.Errorf("config: %s_FILE: %w", s.name, err)
		}
		*s.val = Secret(strings.TrimRight(string(b), "\r\n"))
	}
	dir := c.DataDir()
	if c.KEKFile == "" {
		c.KEKFile, c.derived.kekFile = filepath.Join(dir, "kek.json"), true
	}
	if c.AuditLog == "" {
		c.AuditLog, c.derived.auditLog = filepath.Join(dir, "audit.log"), true
	}
	if c.CADir == "" {
		c.CADir, c.derived.caDir = filepath.Join(dir, "ca"), true
	}
	if c.AdminSocket == "" {
		c.AdminSocket, c.derived.adminSocket = c.DefaultAdminSocket(), true
	}
	if c.AdminApprovals == "" {
		c.AdminApprovals, c.derived.approvals = c.AuditLog+".approvals", true
	}
	return nil
}

// DataDir is the directory of the embedded keystore, where the other files
// default to; "sidecrypt-data" for an etcd keystore.
func (c *Config) DataDir() string {
	if c.KeystoreIsEtcd() {
		return "sidecrypt-data"
	}
	return filepath.Dir(c.Keystore)
}

// DefaultAdminSocket is where the admin socket goes when
// SIDECRYPT_ADMIN_SOCKET is not set: admin.sock next to the keystore.
func (c *Config) DefaultAdminSocket() string { return filepath.Join(c.DataDir(), "admin.sock") }

// KeystoreIsEtcd reports whether the keystore is an etcd:// (or, with
// TLS, etcds://) URL.
func (c *Config) KeystoreIsEtcd() bool {
	return keystore.IsEtcdURL(c.Keystore)
}

// Validate checks settings that do not need I/O. It is fast and separate
// from building anything.
func (c *Config) Validate() error {
	var errs []error
	for _, a := range []struct{ name, addr string }{
		{"SIDECRYPT_LISTEN", c.Listen},
		{"SIDECRYPT_ADMIN_LISTEN", c.AdminListen},
	} {
		if a.name == "SIDECRYPT_ADMIN_LISTEN" && a.addr == "off" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: want host:port", a.name, a.addr))
		}
	}
	if c.Upstream != "" {
		if err := checkUpstream(c.Upstream); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, c.validateAdmin()...)
	if e := c.HSMEscrow; e != "" {
		kind, _, _ := strings.Cut(strings.ToLower(e), ":")
		switch {
		case kind != "pkcs11" && kind != "awskms":
			errs = append(errs, fmt.Errorf("SIDECRYPT_HSM_ESCROW: want a pkcs11: or awskms: URI (the software provider is for development and cannot be an escrow)"))
		case e == c.HSM:
			errs = append(errs, fmt.Errorf("SIDECRYPT_HSM_ESCROW names the same provider as SIDECRYPT_HSM: the escrow must be another one, or losing one loses both"))
		}
	}
	if c.CacheTTL <= 0 {
		errs = append(errs, fmt.Errorf("SIDECRYPT_CACHE_TTL must be positive"))
	}
	if c.CacheSize < 1 {
		errs = append(errs, fmt.Errorf("SIDECRYPT_CACHE_SIZE must be at least 1"))
	}
	if c.MaxBody < 1024 {
		errs = append(errs, fmt.Errorf("SIDECRYPT_MAX_BODY must be at least 1KiB"))
	}
	if c.MaxDepth < 1 || c.MaxDepth > 10000 {
		errs = append(errs, fmt.Errorf("SIDECRYPT_MAX_DEPTH must be between 1 and 10000"))
	}
	if c.RewrapRate <= 0 {
		errs = append(errs, fmt.Errorf("SIDECRYPT_REWRAP_RATE must be positive"))
	}
	if c.SealLimit == 0 || c.SealLimit > keystore.MaxSealLimit {
		errs = append(errs, fmt.Errorf("SIDECRYPT_SEAL_LIMIT must be between 1 and 2^32 (NIST SP 800-38D, 8.3)"))
	}
	if c.SealBlock == 0 || c.SealBlock > c.SealLimit {
		errs = append(errs, fmt.Errorf("SIDECRYPT_SEAL_BLOCK must be between 1 and SIDECRYPT_SEAL_LIMIT"))
	}
	if c.UpstreamTransport != "direct" && c.UpstreamTransport != "standard" {
		errs = append(errs, fmt.Errorf("SIDECRYPT_UPSTREAM_TRANSPORT=%q: want direct or standard", c.UpstreamTransport))
	}
	if c.Engine != "" && c.Engine != "nethttp" && c.Engine != "fasthttp" {
		errs = append(errs, fmt.Errorf("SIDECRYPT_ENGINE=%q: want nethttp or fasthttp", c.Engine))
	}
	if c.DefaultCryptoperiod < 0 {
		errs = append(errs, fmt.Errorf("SIDECRYPT_DEFAULT_CRYPTOPERIOD must not be negative"))
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("SIDECRYPT_LOG_FORMAT=%q: want text or json", c.LogFormat))
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("SIDECRYPT_LOG_LEVEL=%q: want debug, info, warn or error", c.LogLevel))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// checkUpstream wants an absolute http or https URL with a host: a bare
// "127.0.0.1:5984" is the most common mistake, and url.Parse's own message
// for it ("first path segment in URL cannot contain colon") says nothing
// useful.
func checkUpstream(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		hint := ""
		if !strings.Contains(s, "://") {
			hint = fmt.Sprintf(" (did you mean http://%s?)", s)
		}
		return fmt.Errorf("SIDECRYPT_UPSTREAM=%q: want http://host:port or https://host:port%s", s, hint)
	}
	return nil
}

// validateAdmin checks the admin and audit settings. The one it refuses
// outright: bearer tokens on a TCP listener that is not loopback, without
// TLS, where they would cross the network in clear. (An open admin API is
// not a setting at all: on TCP the API needs credentials always.)
func (c *Config) validateAdmin() []error {
	var errs []error
	if (c.AdminTLSCert == "") != (c.AdminTLSKey == "") {
		errs = append(errs, fmt.Errorf("SIDECRYPT_ADMIN_TLS_CERT and SIDECRYPT_ADMIN_TLS_KEY go together"))
	}
	if c.AdminClientCA != "" && c.AdminTLSCert == "" {
		errs = append(errs, fmt.Errorf("SIDECRYPT_ADMIN_CLIENT_CA needs TLS on the admin listener (SIDECRYPT_ADMIN_TLS_CERT and _KEY)"))
	}
	tokens := c.AdminToken != "" || c.AdminTokensFile != ""
	if c.AdminListen != "off" && !c.AdminIsLoopback() && tokens && c.AdminTLSCert == "" {
		errs = append(errs, fmt.Errorf("SIDECRYPT_ADMIN_LISTEN=%s is not loopback and has no TLS: admin bearer tokens would cross the network in clear; set SIDECRYPT_ADMIN_TLS_CERT and _KEY, or bind it to loopback (the CLI uses SIDECRYPT_ADMIN_SOCKET; health probes need no token)", c.AdminListen))
	}
	if c.AdminApprovalTTL < time.Minute || c.AdminApprovalTTL > 7*24*time.Hour {
		errs = append(errs, fmt.Errorf("SIDECRYPT_ADMIN_APPROVAL_TTL must be between 1m and 168h"))
	}
	if w := c.AuditWitness; w != "" {
		kind, _, _ := strings.Cut(w, ":")
		switch {
		case w == "etcd" && !c.KeystoreIsEtcd():
			errs = append(errs, fmt.Errorf("SIDECRYPT_AUDIT_WITNESS=etcd needs an etcd keystore (SIDECRYPT_KEYSTORE=etcd://...)"))
		case w == "etcd", kind == "file" && len(w) > len("file:"), kind == "syslog":
		default:
			errs = append(errs, fmt.Errorf("SIDECRYPT_AUDIT_WITNESS=%q: want file:PATH, syslog:, syslog:udp://HOST:PORT, syslog:tcp://HOST:PORT or etcd", w))
		}
	}
	return errs
}

// AdminIsLoopback reports whether the admin listener binds only loopback.
func (c *Config) AdminIsLoopback() bool {
	host, _, err := net.SplitHostPort(c.AdminListen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// BindFlags registers a flag for every non-secret setting, named after its
// variable (SIDECRYPT_UPSTREAM_CA: --upstream-ca), with the environment's
// value as the default, so that a flag overrides the environment. Fields
// tagged flag:"-" get none: secrets and the files that hold them (a
// command line is visible to every user of the host), and the CLI's
// client-side settings. Call FlagsParsed after parsing.
func (c *Config) BindFlags(fs *flag.FlagSet) {
	v := reflect.ValueOf(c).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, ok := FlagName(f)
		if !ok {
			continue
		}
		usage := f.Tag.Get("help") + " (" + Prefix + f.Tag.Get("env") + ")"
		switch p := v.Field(i).Addr().Interface().(type) {
		case *string:
			fs.StringVar(p, name, *p, usage)
		case *time.Duration:
			fs.DurationVar(p, name, *p, usage)
		case *int:
			fs.IntVar(p, name, *p, usage)
		case *uint64:
			fs.Uint64Var(p, name, *p, usage)
		case *float64:
			fs.Float64Var(p, name, *p, usage)
		case *[]string:
			fs.Var((*listFlag)(p), name, usage)
		case flag.Value:
			fs.Var(p, name, usage)
		default:
			panic(fmt.Sprintf("config: no flag type for %s (%s)", f.Name, f.Type))
		}
	}
}

// FlagName returns the command-line flag of a Config field, or false when
// it has none (secrets, their files, client-side settings).
func FlagName(f reflect.StructField) (string, bool) {
	env := f.Tag.Get("env")
	if env == "" || f.Tag.Get("flag") == "-" || f.Type == reflect.TypeOf(Secret("")) {
		return "", false
	}
	return strings.ToLower(strings.ReplaceAll(env, "_", "-")), true
}

// FlagsParsed finishes a configuration after BindFlags' flags were
// parsed: the files that default next to the keystore follow a --keystore
// given on the command line, unless they were set themselves; then the
// whole configuration is validated again.
func (c *Config) FlagsParsed(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["keystore"] {
		dir := c.DataDir()
		for _, d := range []struct {
			flag    string
			val     *string
			derived bool
			path    string
		}{
			{"kek-file", &c.KEKFile, c.derived.kekFile, filepath.Join(dir, "kek.json")},
			{"audit-log", &c.AuditLog, c.derived.auditLog, filepath.Join(dir, "audit.log")},
			{"ca-dir", &c.CADir, c.derived.caDir, filepath.Join(dir, "ca")},
			{"admin-socket", &c.AdminSocket, c.derived.adminSocket, c.DefaultAdminSocket()},
		} {
			if d.derived && !set[d.flag] {
				*d.val = d.path
			}
		}
	}
	if c.derived.approvals && !set["admin-approvals"] {
		c.AdminApprovals = c.AuditLog + ".approvals"
	}
	return c.Validate()
}

// listFlag is a comma-separated list flag, as the environment variable.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	*l = nil
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l = append(*l, part)
		}
	}
	return nil
}

// Secret is a string that never prints its value.
type Secret string

// String hides the value.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString hides the value.
func (s Secret) GoString() string { return s.String() }

// Reveal returns the value, for the one place that needs it.
func (s Secret) Reveal() string { return string(s) }

// ByteSize is a size in bytes that parses "1048576", "512KiB", "16MiB",
// "1GiB" (and KB/MB/GB as the same powers of 1024, since nobody means 10^6
// when sizing a buffer).
type ByteSize int64

// UnmarshalText implements encoding.TextUnmarshaler.
func (b *ByteSize) UnmarshalText(text []byte) error {
	return b.Set(string(text))
}

// Set implements flag.Value.
func (b *ByteSize) Set(s string) error {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("invalid size %q (want e.g. 1048576, 512KiB, 16MiB)", s)
	}
	*b = ByteSize(n * mult)
	return nil
}

// String implements flag.Value.
func (b *ByteSize) String() string {
	if b == nil {
		return "0"
	}
	v := int64(*b)
	switch {
	case v >= 1<<30 && v%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", v>>30)
	case v >= 1<<20 && v%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", v>>20)
	case v >= 1<<10 && v%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", v>>10)
	}
	return strconv.FormatInt(v, 10)
}
