package admin

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/sidecrypt/sidecrypt/datastore/sweep"
)

// fakeSweeps records what the API asks of the background sweeps.
type fakeSweeps struct {
	mu       sync.Mutex
	started  []sweep.StartRequest
	approved []sweep.Grant
	queued   []*sweep.Spec
	paused   []string
	state    *sweep.State
	listed   []*sweep.State
}

func (f *fakeSweeps) Start(_ context.Context, req sweep.StartRequest) ([]*sweep.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.started = append(f.started, req)
	return []*sweep.State{{Collection: req.Collection, Sweep: &sweep.Run{State: sweep.StateQueued, Options: req.Spec}}}, nil
}

func (f *fakeSweeps) Pause(_ context.Context, c string) (*sweep.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.paused = append(f.paused, c)
	return &sweep.State{Collection: c}, nil
}

func (f *fakeSweeps) Resume(_ context.Context, c string) (*sweep.State, error) {
	return &sweep.State{Collection: c}, nil
}

func (f *fakeSweeps) Approve(_ context.Context, c string, g sweep.Grant, q *sweep.Spec) (*sweep.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.approved = append(f.approved, g)
	f.queued = append(f.queued, q)
	return &sweep.State{Collection: c, Grant: &g}, nil
}

func (f *fakeSweeps) Get(_ context.Context, c string) (*sweep.State, error) {
	if f.state != nil {
		return f.state, nil
	}
	return nil, sweep.ErrNever
}

func (f *fakeSweeps) List(context.Context) ([]*sweep.State, error) {
	if f.listed != nil {
		return f.listed, nil
	}
	return []*sweep.State{{Collection: "clinic"}}, nil
}

func TestSweepEndpoints(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	fs := &fakeSweeps{}
	f.api.c.Sweeps = fs
	f.call(t, "olive", "POST", "/v1/sweeps", `{"collection":"clinic","from":["pii:3"],"rate":50}`, http.StatusAccepted)
	if len(fs.started) != 1 || fs.started[0].From[0] != (sweep.KeyVersion{Key: "pii", Version: 3}) || fs.started[0].Rate != 50 || fs.started[0].DryRun {
		t.Fatalf("started %+v", fs.started)
	}
	// An auditor takes an inventory, and may not sweep.
	f.call(t, "audrey", "POST", "/v1/sweeps/inventory", `{"collection":"clinic"}`, http.StatusAccepted)
	if !fs.started[1].DryRun {
		t.Fatalf("inventory started as %+v", fs.started[1])
	}
	f.call(t, "audrey", "POST", "/v1/sweeps", `{"collection":"clinic"}`, http.StatusForbidden)
	f.call(t, "audrey", "GET", "/v1/sweeps", "", http.StatusOK)
	f.call(t, "olive", "POST", "/v1/sweeps/org%2Frecords/pause", `{}`, http.StatusOK)
	if len(fs.paused) != 1 || fs.paused[0] != "org/records" {
		t.Fatalf("paused %v", fs.paused)
	}
	f.call(t, "olive", "POST", "/v1/sweeps", `{"collection":"clinic","from":["pii"]}`, http.StatusBadRequest)
	f.call(t, "olive", "GET", "/v1/sweeps/never", "", http.StatusNotFound)
}

// Decrypting removed fields writes plaintext into the store: a request
// that a security officer other than the requester must approve.
func TestSweepDecryptRemovedIsDualControl(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	fs := &fakeSweeps{}
	f.api.c.Sweeps = fs
	out := f.call(t, "olive", "POST", "/v1/sweeps", `{"collection":"clinic","decrypt_removed":true,"removed_fields":["nick:pii"]}`, http.StatusAccepted)
	if len(fs.started) != 0 || len(fs.approved) != 0 {
		t.Fatal("a decrypt_removed sweep started without approval")
	}
	id := out["approval"].(map[string]any)["id"].(string)
	// The operator cannot approve (wrong role), nor can a compliance
	// principal; a security officer can.
	f.call(t, "olive", "POST", "/v1/approvals/"+id+"/approve", `{}`, http.StatusForbidden)
	f.call(t, "cora", "POST", "/v1/approvals/"+id+"/approve", `{}`, http.StatusForbidden)
	f.call(t, "sofia", "POST", "/v1/approvals/"+id+"/approve", `{}`, http.StatusOK)
	if len(fs.approved) != 1 || fs.approved[0].ID != id || fs.approved[0].RequestedBy != "olive" || fs.approved[0].ApprovedBy != "sofia" ||
		len(fs.approved[0].Fields) != 1 || fs.approved[0].Fields[0].Key != "pii" || fs.queued[0] == nil {
		t.Fatalf("approved %+v, queued %+v", fs.approved, fs.queued)
	}
	if evs := f.rec.Find("approval.apply"); len(evs) != 1 || evs[0].Details["kind"] != "sweep.decrypt_removed" {
		t.Fatalf("apply events: %+v", evs)
	}
	// For the CLI the approval only grants.
	out = f.call(t, "olive", "POST", "/v1/sweeps", `{"collection":"clinic","decrypt_removed":true,"removed_fields":["nick:pii"],"runner":"cli"}`, http.StatusAccepted)
	id = out["approval"].(map[string]any)["id"].(string)
	f.call(t, "sam", "POST", "/v1/approvals/"+id+"/approve", `{}`, http.StatusOK)
	if len(fs.approved) != 2 || fs.queued[1] != nil {
		t.Fatalf("a cli approval queued a sweep: %+v", fs.queued)
	}
	// Without named fields or a sweep record naming removed ones, there
	// is nothing to approve.
	f.call(t, "olive", "POST", "/v1/sweeps", `{"collection":"clinic","decrypt_removed":true}`, http.StatusNotFound)
}

// The approver of a destroy sees what the last sweeps found under the
// version.
func TestDestroySummaryShowsSweptCount(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	fs := &fakeSweeps{}
	f.api.c.Sweeps = fs
	f.createKey(t, "pii", 2) // v1 deactivated
	out := f.call(t, "sofia", "POST", "/v1/keys/pii/versions/1/destroy", `{"confirm":"pii","reason":"swept"}`, http.StatusAccepted)
	if s := out["approval"].(map[string]any)["summary"].(string); !strings.Contains(s, "no sweep has counted them") {
		t.Fatalf("summary %q", s)
	}
	fs.listed = []*sweep.State{{Collection: "clinic", Last: &sweep.Inventory{Tokens: map[string]int64{"pii:1": 7}}}}
	f.call(t, "sofia", "POST", "/v1/approvals/"+out["approval"].(map[string]any)["id"].(string)+"/reject", `{}`, http.StatusOK)
	out = f.call(t, "sofia", "POST", "/v1/keys/pii/versions/1/destroy", `{"confirm":"pii","reason":"swept"}`, http.StatusAccepted)
	if s := out["approval"].(map[string]any)["summary"].(string); !strings.Contains(s, "found 7 value(s) under it") {
		t.Fatalf("summary %q", s)
	}
}
