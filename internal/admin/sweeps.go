package admin

// The store sweep's background jobs (datastore/sweep.Jobs):
//
//	GET  /v1/sweeps                          any role: every collection's sweep state and last inventory
//	GET  /v1/sweeps/{collection}             any role
//	POST /v1/sweeps                          operator: {"collection", "from": ["pii:3"], "rate", "restart", "compact",
//	                                         "decrypt_removed", "removed_fields": ["nick:pii"], "runner"}
//	POST /v1/sweeps/inventory                operator, auditor: a dry run {"collection", "rate", "restart"}
//	POST /v1/sweeps/{collection}/pause       operator
//	POST /v1/sweeps/{collection}/resume      operator
//
// A sweep is an operator's action; its counts are what auditors read, and
// an inventory (a dry run, which writes nothing) they may start too.
// "decrypt_removed" writes values of fields whose protection was removed
// back into the store in plaintext: it is a dual-control request (202),
// done when a security officer other than the requester approves it. With
// "runner": "cli" the approval only records the grant, for `sidecrypt
// sweep --decrypt-removed --approval ID`; otherwise the approved sweep is
// queued at once.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/sidecrypt/sidecrypt/datastore/sweep"
	"github.com/sidecrypt/sidecrypt/rules"
)

// Sweeps is what the API needs of the background sweeps: *sweep.Jobs.
type Sweeps interface {
	Start(ctx context.Context, req sweep.StartRequest) ([]*sweep.State, error)
	Pause(ctx context.Context, collection string) (*sweep.State, error)
	Resume(ctx context.Context, collection string) (*sweep.State, error)
	Approve(ctx context.Context, collection string, g sweep.Grant, queue *sweep.Spec) (*sweep.State, error)
	Get(ctx context.Context, collection string) (*sweep.State, error)
	List(ctx context.Context) ([]*sweep.State, error)
}

// SweepApproval is what a dual-control request to decrypt removed
// fields carries.
type SweepApproval struct {
	Collection string            `json:"collection"`
	Fields     []sweep.FieldSpec `json:"fields"`
	Rate       float64           `json:"rate,omitempty"`
	// Runner "cli": the approval records a grant for `sidecrypt sweep
	// --approval ID`; "job" (default): it queues the sweep.
	Runner string `json:"runner"`
}

// grantTTL is how long an approved grant to decrypt removed fields
// stays usable: long enough for a sweep of a large store to be started,
// interrupted and resumed.
const grantTTL = 24 * time.Hour

func (s *Server) sweepsOrMissing() (Sweeps, error) {
	if s.c.Sweeps == nil {
		return nil, &apiError{http.StatusNotFound, "not_found", "no store sweep in this process (a version 2 rule file and SIDECRYPT_UPSTREAM are needed)"}
	}
	return s.c.Sweeps, nil
}

// sweepView is a collection's state as the API shows it, with the
// progress of each run worked out.
type sweepView struct {
	*sweep.State
	Progress map[string]progressView `json:"progress,omitempty"`
}

type progressView struct {
	Fraction      float64 `json:"fraction"` // -1 when the size is unknown
	DocsPerSecond float64 `json:"docs_per_second"`
	Remaining     string  `json:"remaining"`
}

func (s *Server) viewSweep(st *sweep.State) sweepView {
	v := sweepView{State: st, Progress: map[string]progressView{}}
	for name, run := range map[string]*sweep.Run{"sweep": st.Sweep, "dry_run": st.DryRun} {
		if run == nil {
			continue
		}
		f, ps, left := sweep.Progress(run, s.c.Now())
		v.Progress[name] = progressView{Fraction: f, DocsPerSecond: ps, Remaining: left.String()}
	}
	return v
}

func (s *Server) listSweeps(w http.ResponseWriter, r *http.Request) error {
	sw, err := s.sweepsOrMissing()
	if err != nil {
		return err
	}
	states, err := sw.List(r.Context())
	if states == nil && err != nil {
		return err
	}
	out := []sweepView{}
	for _, st := range states {
		out = append(out, s.viewSweep(st))
	}
	resp := map[string]any{"sweeps": out}
	if err != nil {
		resp["errors"] = err.Error()
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Server) getSweep(w http.ResponseWriter, r *http.Request) error {
	sw, err := s.sweepsOrMissing()
	if err != nil {
		return err
	}
	st, err := sw.Get(r.Context(), r.PathValue("collection"))
	if err != nil {
		return sweepErr(err)
	}
	writeJSON(w, http.StatusOK, s.viewSweep(st))
	return nil
}

// sweepRequest is the body of POST /v1/sweeps and /v1/sweeps/inventory.
type sweepRequest struct {
	Collection     string   `json:"collection"`
	From           []string `json:"from"`
	Rate           float64  `json:"rate"`
	Restart        bool     `json:"restart"`
	DecryptRemoved bool     `json:"decrypt_removed"`
	RemovedFields  []string `json:"removed_fields"`
	Runner         string   `json:"runner"`
	Compact        bool     `json:"compact"`
}

func (s *Server) startSweep(w http.ResponseWriter, r *http.Request) error {
	return s.start(w, r, false)
}

func (s *Server) startInventory(w http.ResponseWriter, r *http.Request) error {
	return s.start(w, r, true)
}

func (s *Server) start(w http.ResponseWriter, r *http.Request, dry bool) error {
	var req sweepRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	sw, err := s.sweepsOrMissing()
	if err != nil {
		return err
	}
	if strings.TrimSpace(req.Collection) == "" {
		return badRequest(`"collection" is required: a collection (database) name, or a pattern such as "tenant-*"`)
	}
	if req.Rate < 0 {
		return badRequest(`"rate" must be positive (documents per second; 0 for no limit)`)
	}
	spec := sweep.Spec{DryRun: dry, Rate: req.Rate, Compact: req.Compact && !dry}
	for _, f := range req.From {
		kv, err := sweep.ParseKeyVersion(f)
		if err != nil {
			return badRequest("from: %v", err)
		}
		spec.From = append(spec.From, kv)
	}
	for _, f := range req.RemovedFields {
		i := strings.LastIndexByte(f, ':')
		if i <= 0 || i == len(f)-1 {
			return badRequest("removed_fields: %q is not FIELD:KEY", f)
		}
		path, err := rules.SplitFieldName(f[:i])
		if err != nil {
			return badRequest("removed_fields: %q: %v", f[:i], err)
		}
		spec.Removed = append(spec.Removed, sweep.FieldSpec{Name: f[:i], Path: path, Key: f[i+1:]})
	}
	switch {
	case dry && (req.DecryptRemoved || len(spec.From) > 0 || req.Runner != ""):
		return badRequest("an inventory takes only collection, rate and restart")
	case req.Runner != "" && req.Runner != sweep.RunnerJob && req.Runner != sweep.RunnerCLI:
		return badRequest(`"runner" is "job" (the default: this sidecar's background sweep) or "cli" (sidecrypt sweep --approval ID)`)
	case req.Runner == sweep.RunnerCLI && !req.DecryptRemoved:
		return badRequest(`"runner": "cli" is only for approving a decrypt_removed sweep that 'sidecrypt sweep' then runs`)
	}
	if req.DecryptRemoved {
		return s.requestDecryptRemoved(w, r, sw, req, spec)
	}
	states, err := sw.Start(r.Context(), sweep.StartRequest{Collection: req.Collection, Spec: spec, Restart: req.Restart})
	if err != nil {
		return sweepErr(err)
	}
	out := []sweepView{}
	for _, st := range states {
		out = append(out, s.viewSweep(st))
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"sweeps": out, "message": "queued; the leading sidecar runs it: follow GET /v1/sweeps/{collection}"})
	return nil
}

// requestDecryptRemoved stores a dual-control request to decrypt the
// removed fields of one collection.
func (s *Server) requestDecryptRemoved(w http.ResponseWriter, r *http.Request, sw Sweeps, req sweepRequest, spec sweep.Spec) error {
	if strings.Contains(req.Collection, "*") {
		return badRequest("decrypt_removed names one collection, not a pattern: each is approved on its own")
	}
	fields := spec.Removed
	if len(fields) == 0 {
		st, err := sw.Get(r.Context(), req.Collection)
		if err != nil {
			return sweepErr(err)
		}
		fields = removedOf(st, s.c.Rules)
	}
	if len(fields) == 0 {
		return badRequest("no field of %q had its protection removed since its last sweep; name them with \"removed_fields\": [\"FIELD:KEY\"]", req.Collection)
	}
	runner := req.Runner
	if runner == "" {
		runner = sweep.RunnerJob
	}
	var names []string
	for _, f := range fields {
		names = append(names, fmt.Sprintf("%s (%s)", f.Name, f.Key))
	}
	return s.requestApproval(w, r, &Approval{Kind: "sweep.decrypt_removed", RequiredRole: RoleSecurityOfficer,
		Sweep:   &SweepApproval{Collection: req.Collection, Fields: fields, Rate: req.Rate, Runner: runner},
		Summary: fmt.Sprintf("write the values of %s in %s back into the store in plaintext (their protection was removed)", strings.Join(names, ", "), req.Collection)})
}

// removedOf lists the fields the last sweep's rules protected, or that
// an earlier sweep found removed, and that the rules in force do not.
func removedOf(st *sweep.State, rs Rules) []sweep.FieldSpec {
	var cur map[string]bool
	if p := rs.Current(); p != nil && p.Schema != nil {
		cur = map[string]bool{}
		if c := p.Schema.Match(st.Collection); c != nil {
			for _, f := range c.Fields {
				cur[f.Name] = true
			}
		}
	}
	var out []sweep.FieldSpec
	seen := map[string]bool{}
	for _, f := range append(append([]sweep.FieldSpec(nil), st.Fields...), st.Removed...) {
		if !cur[f.Name] && !seen[f.Name] {
			seen[f.Name] = true
			out = append(out, f)
		}
	}
	return out
}

// applyDecryptRemoved records the grant of an approved request, and
// queues its sweep unless the CLI runs it.
func (s *Server) applyDecryptRemoved(ctx context.Context, a *Approval, approver *Principal) (any, error) {
	sw, err := s.sweepsOrMissing()
	if err != nil {
		return nil, err
	}
	if a.Sweep == nil {
		return nil, fmt.Errorf("admin: request %s carries no sweep", a.ID)
	}
	g := sweep.Grant{ID: a.ID, Fields: a.Sweep.Fields, RequestedBy: a.RequestedBy, ApprovedBy: approver.Name, Expires: s.c.Now().Add(grantTTL)}
	var queue *sweep.Spec
	if a.Sweep.Runner != sweep.RunnerCLI {
		queue = &sweep.Spec{Removed: a.Sweep.Fields, Rate: a.Sweep.Rate}
	}
	st, err := sw.Approve(ctx, a.Sweep.Collection, g, queue)
	if err != nil {
		return nil, sweepErr(err)
	}
	return s.viewSweep(st), nil
}

func (s *Server) pauseSweep(w http.ResponseWriter, r *http.Request) error {
	return s.control(w, r, Sweeps.Pause)
}

func (s *Server) resumeSweep(w http.ResponseWriter, r *http.Request) error {
	return s.control(w, r, Sweeps.Resume)
}

func (s *Server) control(w http.ResponseWriter, r *http.Request, fn func(Sweeps, context.Context, string) (*sweep.State, error)) error {
	if err := readJSON(r, &struct{}{}); err != nil {
		return err
	}
	sw, err := s.sweepsOrMissing()
	if err != nil {
		return err
	}
	st, err := fn(sw, r.Context(), r.PathValue("collection"))
	if err != nil {
		return sweepErr(err)
	}
	writeJSON(w, http.StatusOK, s.viewSweep(st))
	return nil
}

// sweepErr maps the sweep's errors to statuses.
func sweepErr(err error) error {
	switch {
	case errors.Is(err, sweep.ErrNever):
		return &apiError{http.StatusNotFound, "not_found", err.Error()}
	case errors.Is(err, sweep.ErrBusy), errors.Is(err, sweep.ErrUnfinished):
		return &apiError{http.StatusConflict, "sweep_unfinished", err.Error()}
	case errors.Is(err, sweep.ErrNeedsApproval), errors.Is(err, sweep.ErrNoConcurrency):
		return &apiError{http.StatusConflict, "not_allowed", err.Error()}
	}
	return err
}

// sweptNote says, for a destroy's approval summary, what the last sweeps
// found under the version: "; the last sweeps found 12 values under it".
func (s *Server) sweptNote(ctx context.Context, name string, v uint32) string {
	if s.c.Sweeps == nil {
		return ""
	}
	states, _ := s.c.Sweeps.List(ctx)
	vc := sweep.CountsFor(states, sweep.KeyVersion{Key: name, Version: v})
	if len(vc.Collections) == 0 {
		return "; no sweep has counted them"
	}
	return fmt.Sprintf("; the last sweeps of %d collection(s) found %d value(s) under it", len(vc.Collections), vc.Values)
}
