package admin

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/rules"
)

// Dual control. Destroying a key version, letting a compromised version
// decrypt (override), and a rule change whose diff has flagged changes
// (protection removed or weakened, a key opened) are not done when asked:
// the request is stored and answered 202 with its id, and it is done
// when a second principal, not the requester, holding the required role,
// approves it before it expires. Request, approval (or rejection or
// expiry) and the operation itself are each in the audit log; the
// operation's actor is "admin:REQUESTER+APPROVER".
//
// Pending requests live in a file next to the audit log
// (SIDECRYPT_ADMIN_APPROVALS, default FILE.approvals): they survive a
// restart, belong to this sidecar (each sidecar has its own audit log),
// and each is MAC'd with the HSM's audit key so that one written or
// changed by hand (a request "by alice" that alice never made) is
// dropped, and recorded, at load.

// Approval is a request for an operation under dual control.
type Approval struct {
	ID   string `json:"id"`
	Kind string `json:"kind"` // "key.destroy", "key.override", "rules.put", "sweep.decrypt_removed"
	// Key operations.
	Key     string `json:"key,omitempty"`
	Version uint32 `json:"version,omitempty"`
	For     string `json:"for,omitempty"` // override: how long, from approval
	Reason  string `json:"reason,omitempty"`
	// Rule changes: the file to put, the rules in force when it was
	// requested (it applies only on top of those), and what it changes.
	Rules    string   `json:"rules,omitempty"`
	BaseHash string   `json:"base_hash,omitempty"`
	NewHash  string   `json:"new_hash,omitempty"`
	Changes  []string `json:"changes,omitempty"` // the flagged changes, in words
	// Sweep is a request to decrypt removed fields ("sweep.decrypt_removed").
	Sweep *SweepApproval `json:"sweep,omitempty"`
	// Summary says in one line what approving does.
	Summary      string    `json:"summary"`
	RequiredRole Role      `json:"required_role"`
	RequestedBy  string    `json:"requested_by"`
	RequestedAt  time.Time `json:"requested_at"`
	ExpiresAt    time.Time `json:"expires_at"`
	// MAC is HMAC-SHA256 under the HSM's audit key of the record without
	// it.
	MAC string `json:"mac,omitempty"`
}

const approvalContext = "sidecrypt approval v1\n"

// Limits on what waits: a request is small except a rule file (at most
// maxAdminBody), and nobody needs hundreds pending.
const (
	maxPending      = 64
	maxPendingRules = 8
)

type approvalStore struct {
	path   string // "" keeps them in memory only (tests)
	signer audit.Signer
	ttl    time.Duration
	now    func() time.Time
	rec    audit.Recorder
	log    *slog.Logger

	mu      sync.Mutex
	pending map[string]*Approval
}

type approvalsFile struct {
	Version int         `json:"version"`
	Pending []*Approval `json:"pending"`
}

func (a *Approval) message() ([]byte, error) {
	c := *a
	c.MAC = ""
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, err
	}
	return append([]byte(approvalContext), b...), nil
}

func (st *approvalStore) seal(ctx context.Context, a *Approval) error {
	if st.signer == nil {
		return nil
	}
	msg, err := a.message()
	if err != nil {
		return err
	}
	mac, err := st.signer.AuditMAC(ctx, msg)
	if err != nil {
		return fmt.Errorf("admin: seal approval request with the HSM: %w", err)
	}
	a.MAC = base64.RawURLEncoding.EncodeToString(mac)
	return nil
}

func (st *approvalStore) checkSeal(ctx context.Context, a *Approval) error {
	if st.signer == nil {
		return nil
	}
	msg, err := a.message()
	if err != nil {
		return err
	}
	want, err := st.signer.AuditMAC(ctx, msg)
	if err != nil {
		return err
	}
	got, err := base64.RawURLEncoding.DecodeString(a.MAC)
	if err != nil || !hmac.Equal(got, want) {
		return fmt.Errorf("%w: written or changed outside sidecrypt", errApprovalMAC)
	}
	return nil
}

// openApprovals loads the pending requests, dropping (and recording)
// those that expired while the sidecar was down and those whose MAC
// fails.
func openApprovals(ctx context.Context, path string, signer audit.Signer, ttl time.Duration, now func() time.Time, rec audit.Recorder, log *slog.Logger) (*approvalStore, error) {
	st := &approvalStore{path: path, signer: signer, ttl: ttl, now: now, rec: rec, log: log, pending: map[string]*Approval{}}
	if path == "" {
		return st, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("admin: approvals: %w", err)
	}
	var f approvalsFile
	if err := json.Unmarshal(b, &f); err != nil || f.Version != 1 {
		return nil, fmt.Errorf("admin: approvals file %s is not valid (%v): move it aside to start without pending requests", path, err)
	}
	changed := false
	actx := audit.WithActor(ctx, "admin")
	for _, a := range f.Pending {
		if err := st.checkSeal(ctx, a); err != nil {
			if !errors.Is(err, errApprovalMAC) {
				return nil, fmt.Errorf("admin: approvals: check a pending request with the HSM: %w", err)
			}
			changed = true
			log.Error("admin: a pending approval request failed its MAC and was dropped", "id", a.ID, "file", path)
			st.record(actx, audit.Event{Action: "approval.tampered", Outcome: "error",
				Reason:  "a pending dual-control request in the approvals file failed its check (" + err.Error() + "); it was dropped",
				Details: map[string]string{"id": sanitizeHeader(a.ID), "kind": sanitizeHeader(a.Kind), "requested_by": sanitizeHeader(a.RequestedBy)}})
			continue
		}
		st.pending[a.ID] = a
	}
	if st.expireLocked(actx) > 0 || changed {
		if err := st.saveLocked(); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// errApprovalMAC: a stored request's MAC does not match.
var errApprovalMAC = errors.New("its MAC does not match")

func (st *approvalStore) record(ctx context.Context, e audit.Event) {
	if err := st.rec.Record(ctx, e); err != nil {
		st.log.Error("admin: audit write failed", "action", e.Action, "err", err)
	}
}

func (st *approvalStore) saveLocked() error {
	if st.path == "" {
		return nil
	}
	f := approvalsFile{Version: 1, Pending: st.sortedLocked()}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(st.path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("admin: approvals: %w", err)
	}
	return nil
}

func (st *approvalStore) sortedLocked() []*Approval {
	out := make([]*Approval, 0, len(st.pending))
	for _, a := range st.pending {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RequestedAt.Before(out[j].RequestedAt) })
	return out
}

// add stores a new request.
func (st *approvalStore) add(ctx context.Context, a *Approval) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.expireLocked(ctx)
	if len(st.pending) >= maxPending {
		return &apiError{http.StatusTooManyRequests, "too_many_pending", fmt.Sprintf("%d requests already wait for approval; approve or reject some first", len(st.pending))}
	}
	if a.Kind == "rules.put" {
		n := 0
		for _, p := range st.pending {
			if p.Kind == "rules.put" {
				n++
			}
		}
		if n >= maxPendingRules {
			return &apiError{http.StatusTooManyRequests, "too_many_pending", fmt.Sprintf("%d rule changes already wait for approval", n)}
		}
	}
	var id [6]byte
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	now := st.now().UTC()
	a.ID, a.RequestedAt, a.ExpiresAt = hex.EncodeToString(id[:]), now, now.Add(st.ttl)
	if err := st.seal(ctx, a); err != nil {
		return err
	}
	st.pending[a.ID] = a
	if err := st.saveLocked(); err != nil {
		delete(st.pending, a.ID)
		return err
	}
	return nil
}

// take removes and returns request id if it is still pending.
func (st *approvalStore) get(ctx context.Context, id string) (*Approval, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if n := st.expireLocked(ctx); n > 0 {
		_ = st.saveLocked()
	}
	a := st.pending[id]
	if a == nil {
		return nil, &apiError{http.StatusNotFound, "not_found", fmt.Sprintf("no pending request %q (it may have expired, been approved or rejected: see the audit log)", id)}
	}
	return a, nil
}

// claim takes request id out of the pending set for the one caller that
// passes check, so that two approvers at once cannot both apply it.
func (st *approvalStore) claim(ctx context.Context, id string, check func(*Approval) error) (*Approval, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if n := st.expireLocked(ctx); n > 0 {
		_ = st.saveLocked()
	}
	a := st.pending[id]
	if a == nil {
		return nil, &apiError{http.StatusNotFound, "not_found", fmt.Sprintf("no pending request %q (it may have expired, been approved or rejected: see the audit log)", id)}
	}
	if err := check(a); err != nil {
		return nil, err
	}
	delete(st.pending, id)
	if err := st.saveLocked(); err != nil {
		st.pending[id] = a
		return nil, err
	}
	return a, nil
}

// putBack returns a claimed request whose operation failed for a
// passing reason (the HSM or keystore unavailable), so that it can be
// approved again.
func (st *approvalStore) putBack(a *Approval) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.pending[a.ID] = a
	if err := st.saveLocked(); err != nil {
		st.log.Error("admin: approvals", "err", err)
	}
}

func (st *approvalStore) remove(id string) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.pending, id)
	return st.saveLocked()
}

func (st *approvalStore) list(ctx context.Context) []*Approval {
	st.mu.Lock()
	defer st.mu.Unlock()
	if n := st.expireLocked(ctx); n > 0 {
		_ = st.saveLocked()
	}
	return st.sortedLocked()
}

// expire drops expired requests, recording each.
func (st *approvalStore) expire(ctx context.Context) {
	if st == nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.expireLocked(ctx) > 0 {
		if err := st.saveLocked(); err != nil {
			st.log.Error("admin: approvals", "err", err)
		}
	}
}

func (st *approvalStore) expireLocked(ctx context.Context) int {
	now := st.now()
	n := 0
	for id, a := range st.pending {
		if now.Before(a.ExpiresAt) {
			continue
		}
		delete(st.pending, id)
		n++
		st.record(audit.WithActor(ctx, "admin"), audit.Event{Actor: "admin", Action: "approval.expire", Outcome: "denied", Key: a.Key, Version: a.Version, Rules: a.NewHash,
			Reason:  "no second principal approved it in time; nothing was done",
			Details: map[string]string{"id": a.ID, "kind": a.Kind, "requested_by": a.RequestedBy, "expired": a.ExpiresAt.Format(time.RFC3339)}})
	}
	return n
}

// approvalView is a request as listed: without the rule file's text.
type approvalView struct {
	*Approval
	Rules string `json:"rules,omitempty"`
	MAC   string `json:"mac,omitempty"`
}

func listView(a *Approval) approvalView { return approvalView{Approval: a} }

// --- requests, from the endpoints that need dual control ---

// requestApproval stores a and answers 202 with its id.
func (s *Server) requestApproval(w http.ResponseWriter, r *http.Request, a *Approval) error {
	p := principalFrom(r.Context())
	a.RequestedBy = p.Name
	if err := s.approvals.add(r.Context(), a); err != nil {
		return err
	}
	d := map[string]string{"id": a.ID, "kind": a.Kind, "required_role": string(a.RequiredRole), "expires": a.ExpiresAt.Format(time.RFC3339), "summary": a.Summary}
	if a.For != "" {
		d["for"] = a.For
	}
	if a.BaseHash != "" {
		d["base_hash"] = a.BaseHash
	}
	if err := s.record(r.Context(), audit.Event{Action: "approval.request", Key: a.Key, Version: a.Version, Rules: a.NewHash, Reason: a.Reason, Details: d}); err != nil {
		// A request that is not on record does not exist.
		_ = s.approvals.remove(a.ID)
		return fmt.Errorf("admin: the request could not be audited, so it was not stored: %w", err)
	}
	writeJSON(w, http.StatusAccepted, map[string]any{
		"approval": listView(a),
		"message": fmt.Sprintf("dual control: %s needs the approval of another principal with the role %s before %s: sidecrypt approvals approve %s",
			a.Summary, a.RequiredRole, a.ExpiresAt.Format(time.RFC3339), a.ID),
	})
	return nil
}

// --- the approvals endpoints ---

func (s *Server) listApprovals(w http.ResponseWriter, r *http.Request) error {
	out := []approvalView{}
	for _, a := range s.approvals.list(r.Context()) {
		out = append(out, listView(a))
	}
	writeJSON(w, http.StatusOK, map[string]any{"approvals": out})
	return nil
}

func (s *Server) getApproval(w http.ResponseWriter, r *http.Request) error {
	a, err := s.approvals.get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, approvalView{Approval: a, Rules: a.Rules})
	return nil
}

func (s *Server) approve(w http.ResponseWriter, r *http.Request) error {
	p := principalFrom(r.Context())
	if err := readJSON(r, &struct{}{}); err != nil {
		return err
	}
	a, err := s.approvals.claim(r.Context(), r.PathValue("id"), func(a *Approval) error {
		if a.RequestedBy == p.Name {
			return &apiError{http.StatusForbidden, "same_principal", fmt.Sprintf("dual control: %s requested %s and cannot also approve it; another principal with the role %s must", p.Name, a.ID, a.RequiredRole)}
		}
		if !p.Has(a.RequiredRole) {
			return &apiError{http.StatusForbidden, "forbidden", fmt.Sprintf("approving %s needs the role %s; %s has %s", a.ID, a.RequiredRole, p.Name, rolesText(p.Roles))}
		}
		return nil
	})
	if err != nil {
		return err
	}
	details := map[string]string{"id": a.ID, "kind": a.Kind, "requested_by": a.RequestedBy}
	if err := s.record(r.Context(), audit.Event{Action: "approval.approve", Key: a.Key, Version: a.Version, Rules: a.NewHash, Details: details}); err != nil {
		s.approvals.putBack(a)
		return fmt.Errorf("admin: the approval could not be audited, so nothing was done: %w", err)
	}
	// The operation is attributed to both.
	ctx := audit.WithActor(r.Context(), "admin:"+a.RequestedBy+"+"+p.Name)
	result, err := s.apply(ctx, a, p)
	if err != nil {
		if errors.Is(err, hsm.ErrUnavailable) || errors.Is(err, keystore.ErrUnavailable) {
			s.approvals.putBack(a)
			details["kept"] = "true"
		}
		details["error"] = err.Error()
		_ = s.record(r.Context(), audit.Event{Action: "approval.apply", Outcome: "error", Key: a.Key, Version: a.Version, Rules: a.NewHash, Reason: "approved, but the operation failed", Details: details})
		return err
	}
	_ = s.record(ctx, audit.Event{Action: "approval.apply", Key: a.Key, Version: a.Version, Rules: a.NewHash, Details: details})
	writeJSON(w, http.StatusOK, map[string]any{"approval": listView(a), "applied": true, "approved_by": p.Name, "result": result})
	return nil
}

func (s *Server) reject(w http.ResponseWriter, r *http.Request) error {
	p := principalFrom(r.Context())
	var req struct {
		Reason string `json:"reason"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	a, err := s.approvals.get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if a.RequestedBy != p.Name && !p.Has(a.RequiredRole) {
		return &apiError{http.StatusForbidden, "forbidden", fmt.Sprintf("rejecting %s needs the role %s (or to be its requester)", a.ID, a.RequiredRole)}
	}
	if err := s.approvals.remove(a.ID); err != nil {
		return err
	}
	what := "rejected"
	if a.RequestedBy == p.Name {
		what = "withdrawn"
	}
	_ = s.record(r.Context(), audit.Event{Action: "approval.reject", Outcome: "denied", Key: a.Key, Version: a.Version, Rules: a.NewHash, Reason: req.Reason,
		Details: map[string]string{"id": a.ID, "kind": a.Kind, "requested_by": a.RequestedBy, "what": what}})
	writeJSON(w, http.StatusOK, map[string]any{"approval": listView(a), "rejected": true, what: true})
	return nil
}

// apply does what an approved request asked, as its requester and
// approver together (ctx's actor).
func (s *Server) apply(ctx context.Context, a *Approval, approver *Principal) (any, error) {
	note := fmt.Sprintf(" [dual control %s: requested by %s, approved by %s]", a.ID, a.RequestedBy, approver.Name)
	switch a.Kind {
	case "key.destroy":
		k, err := s.c.Keys.Destroy(ctx, a.Key, a.Version, a.Reason+note)
		if err != nil {
			return nil, err
		}
		return k.View(), nil
	case "key.override":
		d, err := ParsePeriod(a.For)
		if err != nil {
			return nil, badRequest("for: %v", err)
		}
		k, err := s.c.Keys.Override(ctx, a.Key, a.Version, s.c.Now().Add(d), a.Reason+note)
		if err != nil {
			return nil, err
		}
		return k.View(), nil
	case "rules.put":
		cur := s.c.Rules.Current()
		if cur == nil || cur.Hash != a.BaseHash {
			return nil, &apiError{http.StatusConflict, "rules_changed", "the rules in force changed since this request was made, so the reviewed diff no longer describes what it would do; request it again"}
		}
		return s.storeRules(ctx, []byte(a.Rules))
	case "sweep.decrypt_removed":
		return s.applyDecryptRemoved(ctx, a, approver)
	}
	return nil, fmt.Errorf("admin: unknown request kind %q", a.Kind)
}

func flaggedMessages(d *rules.Diff) []string {
	var out []string
	for _, c := range d.Changes {
		if c.Flagged {
			out = append(out, c.Message)
		}
	}
	return slices.Clip(out)
}
