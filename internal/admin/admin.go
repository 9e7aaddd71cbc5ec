// Package admin is sidecrypt's operator API, served on its own listener
// (SIDECRYPT_ADMIN_LISTEN, loopback by default):
//
//	GET  /healthz                             process is up (no auth)
//	GET  /readyz                              ready to serve traffic (no auth)
//	GET  /metrics                             Prometheus metrics (no auth)
//	GET  /v1/keys                             list keys
//	POST /v1/keys                             create {"name","cryptoperiod","pre_active"}
//	GET  /v1/keys/{name}                      one key
//	POST /v1/keys/{name}/rotate               new primary version
//	POST /v1/keys/{name}/versions/{v}/activate
//	POST /v1/keys/{name}/versions/{v}/revoke  {"compromised":bool,"reason"}
//	POST /v1/keys/{name}/versions/{v}/destroy {"confirm":"<name>","reason"}
//	POST /v1/keys/{name}/versions/{v}/override {"for":"1h","reason"}
//	GET  /v1/kek                              KEK versions and their use
//	POST /v1/kek/rotate                       new KEK version (re-wrap follows)
//	POST /v1/kek/{v}/retire                   retire an unused old KEK version
//	GET  /v1/rewrap                           re-wrap job status
//	POST /v1/rewrap                           start a re-wrap check now
//	GET  /v1/rules                            rules in force (hash, source, text)
//	POST /v1/rules/validate                   lint a rule file (body: YAML)
//	PUT  /v1/rules                            validate, store and load a rule file
//	GET  /v1/audit?n=50                       the audit log's last events
//	GET  /debug/pprof/...                     Go profiles (net/http/pprof), for
//	                                          `sidecrypt loadtest --pprof` and
//	                                          performance work
//
// Everything under /v1/ and /debug/pprof/ requires `Authorization: Bearer <SIDECRYPT_ADMIN_TOKEN>`
// (compared in constant time). Without a token configured, /v1/ is open on
// a loopback listener (with a warning at start-up) and closed (403) on any
// other address: mutating endpoints are never exposed to the network
// unauthenticated. Errors use the proxy's shape:
// {"error":{"code":"...","message":"..."}}.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
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
	AuditLog  string // file for GET /v1/audit
	Recorder  audit.Recorder
	// Token is the bearer token; empty means none.
	Token string
	// Loopback says the listener binds only loopback addresses.
	Loopback bool
	// Ready checks, each returning nil when fine. Keystore and HSM are
	// pinged; when the HSM is down, CachedEnough says whether the keys
	// the rules need are cached, which keeps the sidecar ready.
	PingStore    func(ctx context.Context) error
	PingHSM      func(ctx context.Context) error
	CachedEnough func(keys []string) bool
	Logger       *slog.Logger
	Now          func() time.Time
}

// Server is the admin API handler.
type Server struct {
	c       Config
	mux     *http.ServeMux
	tokenID string
	log     *slog.Logger
}

// New builds the API. It logs, once, how mutating endpoints are protected.
func New(c Config) *Server {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Recorder == nil {
		c.Recorder = audit.Discard
	}
	s := &Server{c: c, mux: http.NewServeMux(), log: c.Logger}
	if c.Token != "" {
		sum := sha256.Sum256([]byte(c.Token))
		s.tokenID = hex.EncodeToString(sum[:4])
	}
	switch {
	case c.Token == "" && !c.Loopback:
		s.log.Warn("admin: SIDECRYPT_ADMIN_TOKEN is not set and the admin listener is not loopback-only: key, rule and audit endpoints are DISABLED (health, readiness and metrics stay available)")
	case c.Token == "":
		s.log.Warn("admin: SIDECRYPT_ADMIN_TOKEN is not set: key and rule endpoints are open to every local user on this host's loopback; set a token")
	}
	s.routes()
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	m.HandleFunc("GET /readyz", s.ready)
	if s.c.Metrics != nil {
		m.Handle("GET /metrics", s.c.Metrics)
	}
	api := func(pattern string, h func(w http.ResponseWriter, r *http.Request) error) {
		m.Handle(pattern, s.auth(h))
	}
	api("GET /v1/keys", s.listKeys)
	api("POST /v1/keys", s.createKey)
	api("GET /v1/keys/{name}", s.getKey)
	api("POST /v1/keys/{name}/rotate", s.rotateKey)
	api("POST /v1/keys/{name}/versions/{version}/{op}", s.versionOp)
	api("GET /v1/kek", s.listKEKs)
	api("POST /v1/kek/rotate", s.rotateKEK)
	api("POST /v1/kek/{version}/retire", s.retireKEK)
	api("GET /v1/rewrap", s.rewrapStatus)
	api("POST /v1/rewrap", s.rewrapNow)
	api("GET /v1/rules", s.getRules)
	api("POST /v1/rules/validate", s.validateRules)
	api("PUT /v1/rules", s.putRules)
	api("GET /v1/audit", s.auditTail)
	// Profiles reveal memory contents only as function names and sizes,
	// but a heap profile can be large and a CPU profile costs CPU: they
	// sit behind the same authentication as the key endpoints.
	prof := func(h http.Handler) func(w http.ResponseWriter, r *http.Request) error {
		return func(w http.ResponseWriter, r *http.Request) error { h.ServeHTTP(w, r); return nil }
	}
	api("GET /debug/pprof/", prof(http.HandlerFunc(pprof.Index)))
	api("GET /debug/pprof/cmdline", prof(http.HandlerFunc(pprof.Cmdline)))
	api("GET /debug/pprof/profile", prof(http.HandlerFunc(pprof.Profile)))
	api("GET /debug/pprof/symbol", prof(http.HandlerFunc(pprof.Symbol)))
	api("GET /debug/pprof/trace", prof(http.HandlerFunc(pprof.Trace)))
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

// auth checks the bearer token and turns handler errors into responses.
func (s *Server) auth(h func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		actor, ok := s.authenticate(w, r)
		if !ok {
			return
		}
		ctx := audit.WithActor(r.Context(), actor)
		if err := h(w, r.WithContext(ctx)); err != nil {
			s.writeErr(w, r, err)
		}
	})
}

func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (actor string, ok bool) {
	if s.c.Token == "" {
		if !s.c.Loopback {
			writeError(w, http.StatusForbidden, "admin_disabled", "the admin API is disabled on a non-loopback listener without SIDECRYPT_ADMIN_TOKEN")
			return "", false
		}
		return "admin:loopback", true
	}
	got, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	// Compare digests so that the comparison takes the same time whatever
	// the presented token's length.
	want := sha256.Sum256([]byte(s.c.Token))
	have := sha256.Sum256([]byte(got))
	if !found || subtle.ConstantTimeCompare(want[:], have[:]) != 1 {
		s.deny(r, "missing or wrong bearer token")
		w.Header().Set("WWW-Authenticate", `Bearer realm="sidecrypt-admin"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", "missing or wrong bearer token (Authorization: Bearer <SIDECRYPT_ADMIN_TOKEN>)")
		return "", false
	}
	return "admin:" + s.tokenID, true
}

// deny audits a refused admin call. The presented token is never recorded.
func (s *Server) deny(r *http.Request, reason string) {
	ctx := audit.WithActor(context.WithoutCancel(r.Context()), "admin:unauthenticated")
	err := s.c.Recorder.Record(ctx, audit.Event{
		Action: "admin.denied", Outcome: "denied", Reason: reason,
		Details: map[string]string{"method": r.Method, "endpoint": r.URL.Path, "remote": remoteHost(r)},
	})
	if err != nil {
		s.log.Error("admin: audit write failed", "err", err)
	}
	s.log.Warn("admin: call refused", "method", r.Method, "endpoint", r.URL.Path, "remote", remoteHost(r), "reason", reason)
}

func remoteHost(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
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
	var period time.Duration
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

func (s *Server) versionOp(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	v, err := versionParam(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	var k *keystore.Key
	switch op := r.PathValue("op"); op {
	case "activate":
		k, err = s.c.Keys.Activate(ctx, name, v)
	case "revoke":
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
		k, err = s.c.Keys.Revoke(ctx, name, v, to, req.Reason)
	case "destroy":
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
		k, err = s.c.Keys.Destroy(ctx, name, v, req.Reason)
	case "override":
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
		k, err = s.c.Keys.Override(ctx, name, v, s.c.Now().Add(d), req.Reason)
	default:
		return &apiError{http.StatusNotFound, "not_found", fmt.Sprintf("unknown operation %q (activate, revoke, destroy, override)", op)}
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, k.View())
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
		_ = s.c.Recorder.Record(r.Context(), audit.Event{Action: "rules.update", Outcome: "error", Reason: "rule file does not validate"})
		writeJSON(w, http.StatusBadRequest, map[string]any{
			"error":       map[string]string{"code": "invalid_rules", "message": "the rule file does not validate; the rules in force are unchanged"},
			"diagnostics": diagViews(diags),
		})
		return nil
	}
	if err := s.c.RulesFile.WriteRules(r.Context(), data); err != nil {
		return err
	}
	// The source validates again and audits the change exactly as it does
	// for an edit of the file.
	if err := s.c.Rules.Reload(r.Context()); err != nil {
		return err
	}
	cur := s.c.Rules.Current()
	writeJSON(w, http.StatusOK, map[string]any{"hash": cur.Hash, "applied": cur.Hash == plan.Hash, "diagnostics": diagViews(diags)})
	return nil
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

// FileRulesWriter writes a rule file atomically (temp file, fsync,
// rename), so that a reader never sees half a file.
type FileRulesWriter string

// WriteRules implements RulesWriter.
func (path FileRulesWriter) WriteRules(_ context.Context, data []byte) error {
	p := string(path)
	mode := os.FileMode(0o644)
	if st, err := os.Stat(p); err == nil {
		mode = st.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".rules-*")
	if err != nil {
		return fmt.Errorf("admin: write rules: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
	}
	if err != nil {
		return fmt.Errorf("admin: write rules %s: %w", p, err)
	}
	return nil
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
