// Package admin is sidecrypt's operator API.
//
// # Where it listens
//
// The key, rule and audit API is served on a Unix socket
// (SIDECRYPT_ADMIN_SOCKET, default admin.sock next to the keystore; mode
// 0600 in a directory only the sidecar's user may write), where the
// caller's uid, read with SO_PEERCRED, is the credential. A TCP listener
// (SIDECRYPT_ADMIN_LISTEN, default 127.0.0.1:8081) serves /healthz,
// /readyz and /metrics to anyone, like Vault's health endpoint, and the
// API only to callers with a credential: a bearer token from
// SIDECRYPT_ADMIN_TOKENS_FILE (or the single legacy SIDECRYPT_ADMIN_TOKEN)
// or a client certificate mapped in that file. There is no
// unauthenticated API on any listener, and no CORS.
//
// # Endpoints and roles
//
//	GET  /healthz, /readyz, /metrics          anyone
//	GET  /v1/whoami                           any principal
//	GET  /v1/keys, /v1/keys/{name}            any role (inventory)
//	POST /v1/keys                             operator: create {"name","cryptoperiod","pre_active"}
//	POST /v1/keys/{name}/rotate               operator
//	POST /v1/keys/{name}/cryptoperiod         operator {"cryptoperiod":"90d"} ("0": none)
//	POST /v1/keys/{name}/versions/{v}/activate operator
//	POST /v1/keys/{name}/versions/{v}/revoke  operator {"compromised":bool,"reason"}
//	POST /v1/keys/{name}/versions/{v}/destroy security-officer, dual control {"confirm":"<name>","reason"}
//	POST /v1/keys/{name}/versions/{v}/override security-officer, dual control {"for":"1h","reason"}
//	GET  /v1/kek                              any role
//	POST /v1/kek/rotate                       operator (re-wrap follows)
//	POST /v1/kek/{v}/retire                   operator
//	GET  /v1/rewrap                           any role
//	POST /v1/rewrap                           operator
//	GET  /v1/rules                            any role
//	POST /v1/rules/validate                   compliance (body: YAML)
//	POST /v1/rules/diff                       compliance, auditor: what a file would change
//	PUT  /v1/rules                            compliance; dual control when the diff is flagged
//	GET  /v1/audit?n=50                       auditor
//	GET  /v1/audit/verify                     auditor
//	GET  /v1/sweeps, /v1/sweeps/{collection}  any role (the store sweep: state and inventory, sweeps.go)
//	POST /v1/sweeps                           operator; decrypt_removed under dual control (security-officer)
//	POST /v1/sweeps/inventory                 operator, auditor: a dry run
//	POST /v1/sweeps/{collection}/pause|resume operator
//	GET  /v1/approvals, /v1/approvals/{id}    any role
//	POST /v1/approvals/{id}/approve           a principal other than the requester, with the request's role
//	POST /v1/approvals/{id}/reject            the requester, or the request's role
//	GET  /debug/pprof/...                     operator
//
// The checks every API request passes (browser, Host, Content-Type,
// credentials, role) are described in auth.go; dual control in
// approvals.go. Errors use the proxy's shape:
// {"error":{"code":"...","message":"..."}}.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/internal/scheduler"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/rules"
)

// Keys is what the API needs of keystore.Manager.
type Keys interface {
	List(ctx context.Context) ([]*keystore.Key, error)
	Get(ctx context.Context, name string) (*keystore.Key, error)
	Create(ctx context.Context, name string, cryptoperiod time.Duration, preActive bool) (*keystore.Key, error)
	Activate(ctx context.Context, name string, version uint32) (*keystore.Key, error)
	Rotate(ctx context.Context, name string, expectPrimary uint32) (*keystore.Key, error)
	SetCryptoperiod(ctx context.Context, name string, cryptoperiod time.Duration) (*keystore.Key, error)
	Revoke(ctx context.Context, name string, version uint32, to keystore.State, reason string) (*keystore.Key, error)
	Destroy(ctx context.Context, name string, version uint32, reason string) (*keystore.Key, error)
	Override(ctx context.Context, name string, version uint32, until time.Time, reason string) (*keystore.Key, error)
	KEKs(ctx context.Context) ([]keystore.KEKStatus, error)
	RotateKEK(ctx context.Context) (uint32, error)
	RetireKEK(ctx context.Context, version uint32) error
}

// Rules is the rule source in force.
type Rules interface {
	Current() *rules.Plan
	Reload(ctx context.Context) error
}

// RulesWriter stores a validated rule file where the source reads it (the
// file, or etcd); the source's reload then applies it exactly like any
// other change.
type RulesWriter interface {
	WriteRules(ctx context.Context, data []byte) error
}

// Config configures the API.
type Config struct {
	Keys      Keys
	Rules     Rules
	RulesFile RulesWriter // nil: PUT /v1/rules is refused
	Rewrap    *scheduler.Scheduler
	Metrics   http.Handler
	AuditLog  string // file for GET /v1/audit and /v1/audit/verify
	Recorder  audit.Recorder
	// Signer is the HSM's audit key: it seals pending approval requests
	// and verifies the audit log (GET /v1/audit/verify).
	Signer audit.Signer
	// AuditWitness, when not nil, is checked by GET /v1/audit/verify.
	AuditWitness audit.WitnessReader
	// Principals is SIDECRYPT_ADMIN_TOKENS_FILE; nil when not configured.
	Principals *PrincipalSource
	// Token is SIDECRYPT_ADMIN_TOKEN: one principal, "admin", with every
	// role. Empty means none.
	Token string
	// AllowedHosts are names (host or host:port) accepted in the Host
	// header besides the listener's own address (SIDECRYPT_ADMIN_HOSTS).
	AllowedHosts []string
	// ApprovalsFile keeps pending dual-control requests; empty keeps
	// them in memory only. ApprovalTTL is how long one waits (default 1h).
	ApprovalsFile string
	ApprovalTTL   time.Duration
	// Ready checks, each returning nil when fine. Keystore and HSM are
	// pinged; when the HSM is down, CachedEnough says whether the keys
	// the rules need are cached, which keeps the sidecar ready.
	PingStore    func(ctx context.Context) error
	PingHSM      func(ctx context.Context) error
	CachedEnough func(keys []string) bool
	// DefaultCryptoperiod is the cryptoperiod of a key created without
	// one (SIDECRYPT_DEFAULT_CRYPTOPERIOD), as with `sidecrypt keys
	// create`; "cryptoperiod": "0" asks for none.
	DefaultCryptoperiod time.Duration
	// PingUpstream reports whether the datastore answered its last probe
	// (reverse mode); nil leaves the check out.
	PingUpstream func(ctx context.Context) error
	Logger       *slog.Logger
	Now          func() time.Time

	// Sweeps is the store sweep's background jobs; nil when this
	// sidecar cannot sweep (version 1 rules, forward mode).
	Sweeps Sweeps
}

// Server is the admin API handler.
type Server struct {
	c         Config
	mux       *http.ServeMux
	log       *slog.Logger
	tokens    tokenCache
	approvals *approvalStore
}

// New builds the API. It loads the pending approval requests, and logs,
// once, who may use the API and how.
func New(c Config) (*Server, error) {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Recorder == nil {
		c.Recorder = audit.Discard
	}
	if c.ApprovalTTL <= 0 {
		c.ApprovalTTL = time.Hour
	}
	s := &Server{c: c, mux: http.NewServeMux(), log: c.Logger, tokens: tokenCache{argon: make(chan struct{}, 2)}}
	if c.ApprovalsFile != "" && c.Signer == nil {
		return nil, errors.New("admin: a file of pending approvals needs the HSM's audit key (Config.Signer) to seal them")
	}
	var err error
	s.approvals, err = openApprovals(context.Background(), c.ApprovalsFile, c.Signer, c.ApprovalTTL, c.Now, c.Recorder, c.Logger)
	if err != nil {
		return nil, err
	}
	if c.Token != "" {
		s.log.Warn("admin: SIDECRYPT_ADMIN_TOKEN is set: one bearer token, principal \"admin\", holds every role; give each person a principal of their own in SIDECRYPT_ADMIN_TOKENS_FILE (sidecrypt admin token create NAME --role ROLE) and remove it")
	}
	if c.Principals != nil {
		s.log.Info("admin: principals", "count", c.Principals.Current().Len())
	} else {
		s.log.Info("admin: no SIDECRYPT_ADMIN_TOKENS_FILE: the API answers on the Unix socket to this process's user and root (every role)" + map[bool]string{true: " and on TCP to the legacy token", false: ", and on TCP to nobody"}[c.Token != ""])
	}
	s.routes()
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// route is one API endpoint and who may call it.
type route struct {
	pattern string
	// roles that may call it; nil means any authenticated principal.
	roles []Role
	// bodyTypes accepted in Content-Type; nil means application/json.
	bodyTypes []string
	h         func(w http.ResponseWriter, r *http.Request) error
}

// Role sets, by what the endpoints do.
var (
	anyRole    = []Role{RoleOperator, RoleCompliance, RoleAuditor, RoleSecurityOfficer}
	operator   = []Role{RoleOperator}
	compliance = []Role{RoleCompliance}
	auditor    = []Role{RoleAuditor}
	officer    = []Role{RoleSecurityOfficer}
	reports    = []Role{RoleCompliance, RoleAuditor}
)

// routeTable is every API endpoint with its roles: the one place where
// who may do what is decided (TestRouteRoles checks each against each
// role).
func (s *Server) routeTable() []route {
	prof := func(h http.HandlerFunc) func(w http.ResponseWriter, r *http.Request) error {
		return func(w http.ResponseWriter, r *http.Request) error { h(w, r); return nil }
	}
	return []route{
		{pattern: "GET /v1/whoami", h: s.whoami},
		{pattern: "GET /v1/keys", roles: anyRole, h: s.listKeys},
		{pattern: "POST /v1/keys", roles: operator, h: s.createKey},
		{pattern: "GET /v1/keys/{name}", roles: anyRole, h: s.getKey},
		{pattern: "POST /v1/keys/{name}/rotate", roles: operator, h: s.rotateKey},
		{pattern: "POST /v1/keys/{name}/cryptoperiod", roles: operator, h: s.setCryptoperiod},
		{pattern: "POST /v1/keys/{name}/versions/{version}/activate", roles: operator, h: s.activateVersion},
		{pattern: "POST /v1/keys/{name}/versions/{version}/revoke", roles: operator, h: s.revokeVersion},
		{pattern: "POST /v1/keys/{name}/versions/{version}/destroy", roles: officer, h: s.destroyVersion},
		{pattern: "POST /v1/keys/{name}/versions/{version}/override", roles: officer, h: s.overrideVersion},
		{pattern: "GET /v1/kek", roles: anyRole, h: s.listKEKs},
		{pattern: "POST /v1/kek/rotate", roles: operator, h: s.rotateKEK},
		{pattern: "POST /v1/kek/{version}/retire", roles: operator, h: s.retireKEK},
		{pattern: "GET /v1/rewrap", roles: anyRole, h: s.rewrapStatus},
		{pattern: "POST /v1/rewrap", roles: operator, h: s.rewrapNow},
		{pattern: "GET /v1/rules", roles: anyRole, h: s.getRules},
		{pattern: "POST /v1/rules/validate", roles: compliance, bodyTypes: ruleTypes, h: s.validateRules},
		{pattern: "POST /v1/rules/diff", roles: reports, bodyTypes: ruleTypes, h: s.diffRules},
		{pattern: "PUT /v1/rules", roles: compliance, bodyTypes: ruleTypes, h: s.putRules},
		{pattern: "GET /v1/audit", roles: auditor, h: s.auditTail},
		{pattern: "GET /v1/audit/verify", roles: auditor, h: s.auditVerify},
		{pattern: "GET /v1/sweeps", roles: anyRole, h: s.listSweeps},
		{pattern: "GET /v1/sweeps/{collection}", roles: anyRole, h: s.getSweep},
		{pattern: "POST /v1/sweeps", roles: operator, h: s.startSweep},
		{pattern: "POST /v1/sweeps/inventory", roles: []Role{RoleOperator, RoleAuditor}, h: s.startInventory},
		{pattern: "POST /v1/sweeps/{collection}/pause", roles: operator, h: s.pauseSweep},
		{pattern: "POST /v1/sweeps/{collection}/resume", roles: operator, h: s.resumeSweep},
		{pattern: "GET /v1/approvals", roles: anyRole, h: s.listApprovals},
		{pattern: "GET /v1/approvals/{id}", roles: anyRole, h: s.getApproval},
		// Who may approve or reject depends on the request: checked
		// inside, against its required role and its requester.
		{pattern: "POST /v1/approvals/{id}/approve", h: s.approve},
		{pattern: "POST /v1/approvals/{id}/reject", h: s.reject},
		// Profiles show function names and sizes, not memory contents,
		// but a CPU profile costs CPU: operators only.
		{pattern: "GET /debug/pprof/", roles: operator, h: prof(pprof.Index)},
		{pattern: "GET /debug/pprof/cmdline", roles: operator, h: prof(pprof.Cmdline)},
		{pattern: "GET /debug/pprof/profile", roles: operator, h: prof(pprof.Profile)},
		{pattern: "GET /debug/pprof/symbol", roles: operator, h: prof(pprof.Symbol)},
		{pattern: "GET /debug/pprof/trace", roles: operator, h: prof(pprof.Trace)},
	}
}

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	m.HandleFunc("GET /readyz", s.ready)
	if s.c.Metrics != nil {
		m.Handle("GET /metrics", s.c.Metrics)
	}
	for _, rt := range s.routeTable() {
		m.Handle(rt.pattern, s.handle(&rt))
	}
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such admin endpoint; see the admin package documentation or docs/OPERATIONS.md")
	})
}

// apiError is an error with an HTTP status and a stable code.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, a ...any) error {
	return &apiError{http.StatusBadRequest, "bad_request", fmt.Sprintf(format, a...)}
}

// writeErr maps domain errors to statuses.
func (s *Server) writeErr(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		writeError(w, ae.status, ae.code, ae.msg)
	case errors.Is(err, keystore.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, keystore.ErrExists):
		writeError(w, http.StatusConflict, "exists", err.Error())
	case errors.Is(err, keystore.ErrConflict):
		writeError(w, http.StatusConflict, "conflict", err.Error())
	case errors.Is(err, keystore.ErrTransition), errors.Is(err, keystore.ErrKEKInUse):
		writeError(w, http.StatusConflict, "not_allowed", err.Error())
	case errors.Is(err, hsm.ErrUnavailable), errors.Is(err, keystore.ErrUnavailable):
		writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
	case errors.Is(err, hsm.ErrUnknownKEK):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	default:
		s.log.Error("admin: request failed", "method", r.Method, "endpoint", r.URL.Path, "err", err)
		writeError(w, http.StatusBadRequest, "failed", err.Error())
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// maxAdminBody bounds request bodies: rule files are the largest thing
// sent here.
const maxAdminBody = 4 << 20

func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return badRequest("invalid JSON body: %v", err)
	}
	return nil
}

func versionParam(r *http.Request) (uint32, error) {
	v, err := strconv.ParseUint(r.PathValue("version"), 10, 32)
	if err != nil || v == 0 {
		return 0, badRequest("version must be a positive integer")
	}
	return uint32(v), nil
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, principalFrom(r.Context()))
	return nil
}

// --- keys ---

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) error {
	keys, err := s.c.Keys.List(r.Context())
	if err != nil {
		return err
	}
	out := make([]keystore.KeyView, 0, len(keys))
	for _, k := range keys {
		out = append(out, k.View())
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": out})
	return nil
}

func (s *Server) getKey(w http.ResponseWriter, r *http.Request) error {
	k, err := s.c.Keys.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, k.View())
	return nil
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Name         string `json:"name"`
		Cryptoperiod string `json:"cryptoperiod"`
		PreActive    bool   `json:"pre_active"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	period := s.c.DefaultCryptoperiod
	if req.Cryptoperiod != "" {
		var err error
		if period, err = ParsePeriod(req.Cryptoperiod); err != nil {
			return badRequest("cryptoperiod: %v", err)
		}
	}
	k, err := s.c.Keys.Create(r.Context(), req.Name, period, req.PreActive)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, k.View())
	return nil
}

func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request) error {
	k, err := s.c.Keys.Rotate(r.Context(), r.PathValue("name"), 0)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, k.View())
	return nil
}

func (s *Server) setCryptoperiod(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Cryptoperiod *string `json:"cryptoperiod"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if req.Cryptoperiod == nil {
		return badRequest(`want {"cryptoperiod": "90d"} ("0" for none)`)
	}
	period, err := ParsePeriod(*req.Cryptoperiod)
	if err == nil && period < 0 {
		err = fmt.Errorf("%q is negative", *req.Cryptoperiod)
	}
	if err != nil {
		return badRequest("cryptoperiod: %v", err)
	}
	k, err := s.c.Keys.SetCryptoperiod(r.Context(), r.PathValue("name"), period)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, k.View())
	return nil
}

func (s *Server) activateVersion(w http.ResponseWriter, r *http.Request) error {
	v, err := versionParam(r)
	if err != nil {
		return err
	}
	if err := readJSON(r, &struct{}{}); err != nil {
		return err
	}
	k, err := s.c.Keys.Activate(r.Context(), r.PathValue("name"), v)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, k.View())
	return nil
}

func (s *Server) revokeVersion(w http.ResponseWriter, r *http.Request) error {
	v, err := versionParam(r)
	if err != nil {
		return err
	}
	var req struct {
		Compromised bool   `json:"compromised"`
		Reason      string `json:"reason"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	to := keystore.StateDeactivated
	if req.Compromised {
		to = keystore.StateCompromised
	}
	k, err := s.c.Keys.Revoke(r.Context(), r.PathValue("name"), v, to, req.Reason)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, k.View())
	return nil
}

// destroyVersion asks for a destroy: under dual control it is stored and
// done once another security officer approves (approvals.go).
func (s *Server) destroyVersion(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	v, err := versionParam(r)
	if err != nil {
		return err
	}
	var req struct {
		Confirm string `json:"confirm"`
		Reason  string `json:"reason"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if req.Confirm != name {
		return badRequest(`destroying is irreversible: send {"confirm": %q} to confirm`, name)
	}
	if err := s.checkVersion(r.Context(), name, v); err != nil {
		return err
	}
	return s.requestApproval(w, r, &Approval{Kind: "key.destroy", Key: name, Version: v, Reason: req.Reason, RequiredRole: RoleSecurityOfficer,
		Summary: fmt.Sprintf("destroy %s v%d (its values become unreadable for good%s)", name, v, s.sweptNote(r.Context(), name, v))})
}

// overrideVersion asks for an override of a compromised version, under
// dual control.
func (s *Server) overrideVersion(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	v, err := versionParam(r)
	if err != nil {
		return err
	}
	var req struct {
		For    string `json:"for"`
		Reason string `json:"reason"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	d, perr := ParsePeriod(req.For)
	if perr != nil || d <= 0 {
		return badRequest(`"for" must be a positive duration such as "1h"`)
	}
	k, err := s.c.Keys.Get(r.Context(), name)
	if err != nil {
		return err
	}
	if ver := k.Lookup(v); ver == nil {
		return &apiError{http.StatusNotFound, "not_found", fmt.Sprintf("%s has no version %d", name, v)}
	} else if ver.State != keystore.StateCompromised {
		return &apiError{http.StatusConflict, "not_allowed", fmt.Sprintf("%s v%d is %s: only a compromised version takes an override", name, v, ver.State)}
	}
	return s.requestApproval(w, r, &Approval{Kind: "key.override", Key: name, Version: v, For: req.For, Reason: req.Reason, RequiredRole: RoleSecurityOfficer,
		Summary: fmt.Sprintf("let compromised %s v%d decrypt for %s from approval", name, v, req.For)})
}

// checkVersion refuses, at request time, a destroy the keystore would
// refuse anyway (no such version, still active, destroyed already), so
// that nobody is asked to approve it.
func (s *Server) checkVersion(ctx context.Context, name string, v uint32) error {
	k, err := s.c.Keys.Get(ctx, name)
	if err != nil {
		return err
	}
	ver := k.Lookup(v)
	switch {
	case ver == nil:
		return &apiError{http.StatusNotFound, "not_found", fmt.Sprintf("%s has no version %d", name, v)}
	case !slices.Contains(keystore.AllowedTransitions(ver.State), keystore.StateDestroyed):
		return &apiError{http.StatusConflict, "not_allowed", fmt.Sprintf("%s v%d is %s, which cannot be destroyed (revoke an active version first; a destroyed one is final)", name, v, ver.State)}
	}
	return nil
}

// --- KEK and re-wrap ---

func (s *Server) listKEKs(w http.ResponseWriter, r *http.Request) error {
	keks, err := s.c.Keys.KEKs(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"keks": keks})
	return nil
}

func (s *Server) rotateKEK(w http.ResponseWriter, r *http.Request) error {
	v, err := s.c.Keys.RotateKEK(r.Context())
	if err != nil {
		return err
	}
	if s.c.Rewrap != nil {
		s.c.Rewrap.Trigger()
	}
	writeJSON(w, http.StatusOK, map[string]any{"kek_version": v, "rewrap": "started in the background; follow GET /v1/rewrap"})
	return nil
}

func (s *Server) retireKEK(w http.ResponseWriter, r *http.Request) error {
	v, err := versionParam(r)
	if err != nil {
		return err
	}
	if err := s.c.Keys.RetireKEK(r.Context(), v); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"retired": v})
	return nil
}

func (s *Server) rewrapStatus(w http.ResponseWriter, r *http.Request) error {
	if s.c.Rewrap == nil {
		return &apiError{http.StatusNotFound, "not_found", "no background scheduler in this process"}
	}
	st := s.c.Rewrap.Status()
	writeJSON(w, http.StatusOK, struct {
		scheduler.RewrapStatus
		Remaining string `json:"remaining"`
	}{st, st.Remaining.String()})
	return nil
}

func (s *Server) rewrapNow(w http.ResponseWriter, r *http.Request) error {
	if s.c.Rewrap == nil {
		return &apiError{http.StatusNotFound, "not_found", "no background scheduler in this process"}
	}
	s.c.Rewrap.Trigger()
	writeJSON(w, http.StatusAccepted, map[string]string{"rewrap": "check started; follow GET /v1/rewrap"})
	return nil
}

// --- rules ---

func (s *Server) getRules(w http.ResponseWriter, r *http.Request) error {
	p := s.c.Rules.Current()
	if p == nil {
		return &apiError{http.StatusServiceUnavailable, "no_rules", "no rules loaded"}
	}
	out := map[string]any{"hash": p.Hash, "source": p.Source, "routes": len(p.Routes),
		"decrypt_keys": p.DecryptKeys, "mask_keys": p.MaskKeys}
	if text, ok := planText(p); ok {
		out["text"] = text
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func planText(p *rules.Plan) (string, bool) {
	if t, ok := any(p).(interface{ Text() []byte }); ok {
		return string(t.Text()), true
	}
	return "", false
}

func (s *Server) readRules(r *http.Request) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxAdminBody+1))
	if err != nil {
		return nil, badRequest("read body: %v", err)
	}
	if len(data) > maxAdminBody {
		return nil, &apiError{http.StatusRequestEntityTooLarge, "body_too_large", "rule file larger than 4 MiB"}
	}
	return data, nil
}

func (s *Server) validateRules(w http.ResponseWriter, r *http.Request) error {
	data, err := s.readRules(r)
	if err != nil {
		return err
	}
	_, diags, cerr := rules.Compile("request", data)
	writeJSON(w, http.StatusOK, map[string]any{"valid": cerr == nil, "diagnostics": diagViews(diags)})
	return nil
}

// diffRules says what a rule file would change against the rules in
// force: the report a compliance reviewer reads before a change.
func (s *Server) diffRules(w http.ResponseWriter, r *http.Request) error {
	data, err := s.readRules(r)
	if err != nil {
		return err
	}
	cur := s.c.Rules.Current()
	if cur == nil {
		return &apiError{http.StatusServiceUnavailable, "no_rules", "no rules loaded"}
	}
	plan, diags, cerr := rules.Compile("request", data)
	if cerr != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{
			"error":       map[string]string{"code": "invalid_rules", "message": "the rule file does not validate"},
			"diagnostics": diagViews(diags),
		})
		return nil
	}
	d := rules.Compare(cur, plan)
	writeJSON(w, http.StatusOK, map[string]any{"diff": d, "summary": d.Summary(), "flagged": d.Flagged(), "dual_control": d.Flagged() > 0})
	return nil
}

// putRules stores and applies a rule file. A file whose diff against the
// rules in force has flagged changes (protection removed or weakened,
// more revealed) is only requested: another compliance principal must
// approve it (approvals.go).
func (s *Server) putRules(w http.ResponseWriter, r *http.Request) error {
	if s.c.RulesFile == nil {
		return &apiError{http.StatusConflict, "not_allowed", "this sidecar's rules cannot be written through the API"}
	}
	data, err := s.readRules(r)
	if err != nil {
		return err
	}
	plan, diags, cerr := rules.Compile("request", data)
	if cerr != nil {
		// Audited like a refused file change.
		_ = s.record(r.Context(), audit.Event{Action: "rules.update", Outcome: "error", Reason: "rule file does not validate"})
		writeJSON(w, http.StatusBadRequest, map[string]any{
			"error":       map[string]string{"code": "invalid_rules", "message": "the rule file does not validate; the rules in force are unchanged"},
			"diagnostics": diagViews(diags),
		})
		return nil
	}
	cur := s.c.Rules.Current()
	if cur != nil {
		if d := rules.Compare(cur, plan); d.Flagged() > 0 {
			return s.requestApproval(w, r, &Approval{Kind: "rules.put", Rules: string(data), BaseHash: cur.Hash, NewHash: plan.Hash,
				Changes: flaggedMessages(d), RequiredRole: RoleCompliance,
				Summary: "put rules " + plan.Hash + ": " + d.Summary()})
		}
	}
	out, err := s.storeRules(r.Context(), data)
	if err != nil {
		return err
	}
	out["diagnostics"] = diagViews(diags)
	writeJSON(w, http.StatusOK, out)
	return nil
}

// storeRules writes a validated rule file and has the source load it;
// the source validates again and audits the change exactly as it does
// for an edit of the file.
func (s *Server) storeRules(ctx context.Context, data []byte) (map[string]any, error) {
	if s.c.RulesFile == nil {
		return nil, &apiError{http.StatusConflict, "not_allowed", "this sidecar's rules cannot be written through the API"}
	}
	if err := s.c.RulesFile.WriteRules(ctx, data); err != nil {
		return nil, err
	}
	if err := s.c.Rules.Reload(ctx); err != nil {
		return nil, err
	}
	cur := s.c.Rules.Current()
	return map[string]any{"hash": cur.Hash, "applied": cur.Hash == rules.HashBytes(data)}, nil
}

type diagView struct {
	Line     int    `json:"line"`
	Col      int    `json:"col"`
	Severity string `json:"severity"`
	Message  string `json:"message"`
	Hint     string `json:"hint,omitempty"`
}

func diagViews(ds []rules.Diagnostic) []diagView {
	out := make([]diagView, 0, len(ds))
	for _, d := range ds {
		out = append(out, diagView{Line: d.Line, Col: d.Col, Severity: fmt.Sprint(d.Severity), Message: d.Message, Hint: d.Hint})
	}
	return out
}

// --- audit ---

func (s *Server) auditTail(w http.ResponseWriter, r *http.Request) error {
	n := 50
	if q := r.URL.Query().Get("n"); q != "" {
		v, err := strconv.Atoi(q)
		if err != nil || v < 1 || v > 10000 {
			return badRequest("n must be between 1 and 10000")
		}
		n = v
	}
	if s.c.AuditLog == "" {
		return &apiError{http.StatusNotFound, "not_found", "no audit log configured"}
	}
	entries, err := audit.Tail(s.c.AuditLog, n)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": entries})
	return nil
}

// auditVerify checks the audit log as `sidecrypt audit verify` does,
// with the HSM's key and the witness when configured.
func (s *Server) auditVerify(w http.ResponseWriter, r *http.Request) error {
	if s.c.AuditLog == "" {
		return &apiError{http.StatusNotFound, "not_found", "no audit log configured"}
	}
	res, err := audit.VerifyFile(r.Context(), s.c.AuditLog, audit.VerifyOptions{Signer: s.c.Signer, Witness: s.c.AuditWitness})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		audit.Result
		Clean bool `json:"clean"`
	}{res, res.Clean()})
	return nil
}

// --- readiness ---

type check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	var checks []check
	ready := true
	plan := s.c.Rules.Current()
	if plan == nil {
		checks = append(checks, check{"rules", false, "no rules loaded"})
		ready = false
	} else {
		checks = append(checks, check{"rules", true, plan.Hash})
	}
	if s.c.PingStore != nil {
		if err := s.c.PingStore(ctx); err != nil {
			checks = append(checks, check{"keystore", false, err.Error()})
			ready = false
		} else {
			checks = append(checks, check{"keystore", true, ""})
		}
	}
	if s.c.PingHSM != nil {
		if err := s.c.PingHSM(ctx); err != nil {
			c := check{"hsm", false, err.Error()}
			if plan != nil && s.c.CachedEnough != nil && s.c.CachedEnough(planKeys(plan)) {
				c.OK, c.Detail = true, "unreachable, but every key the rules seal with is cached: "+err.Error()
			} else {
				ready = false
			}
			checks = append(checks, c)
		} else {
			checks = append(checks, check{"hsm", true, ""})
		}
	}
	if s.c.PingUpstream != nil {
		if err := s.c.PingUpstream(ctx); err != nil {
			checks = append(checks, check{"upstream", false, err.Error()})
			ready = false
		} else {
			checks = append(checks, check{"upstream", true, ""})
		}
	}
	status := http.StatusOK
	if !ready {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, map[string]any{"ready": ready, "checks": checks})
}

func planKeys(p *rules.Plan) []string {
	seen := map[string]bool{}
	var out []string
	for _, rt := range p.Routes {
		for _, k := range rt.Keys {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	return out
}

// ParsePeriod parses a duration with d (days) and w (weeks) units as well
// as Go's: "90d", "2w", "36h", "1h30m".
func ParsePeriod(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"d", 24 * time.Hour}, {"w", 7 * 24 * time.Hour}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(n, 64)
			if err != nil || v < 0 {
				return 0, fmt.Errorf("invalid duration %q", s)
			}
			return time.Duration(v * float64(u.unit)), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (use e.g. 90d, 2w, 36h)", s)
	}
	return d, nil
}

var _ http.Handler = (*Server)(nil)
