package sweep

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
)

func dataKey(t *testing.T, name string, v uint32) *fieldcrypt.DataKey {
	t.Helper()
	m := make([]byte, fieldcrypt.DataKeySize)
	rand.Read(m)
	k, err := fieldcrypt.NewDataKey(name, v, m)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func seal(t *testing.T, k *fieldcrypt.DataKey, mode fieldcrypt.Mode, jsonText string) string {
	t.Helper()
	typ := fieldcrypt.TypeString
	switch jsonText[0] {
	case '{':
		typ = fieldcrypt.TypeObject
	case '[':
		typ = fieldcrypt.TypeArray
	case 't', 'f':
		typ = fieldcrypt.TypeBool
	case 'n':
		typ = fieldcrypt.TypeNull
	case '"':
	default:
		typ = fieldcrypt.TypeNumber
	}
	tok, err := fieldcrypt.SealValue(k, mode, typ, []byte(jsonText))
	if err != nil {
		t.Fatal(err)
	}
	return string(tok)
}

func field(name, key string, mode fieldcrypt.Mode) *datastore.Field {
	path := strings.Split(name, ".")
	return &datastore.Field{Name: name, Path: path, AnyDepth: len(path) == 1, Key: key, Mode: mode, Searchable: mode == fieldcrypt.ModeDeterministic}
}

type env struct {
	t      *testing.T
	store  *memStore
	keys   *fieldcrypt.StaticKeyring
	k      map[string]*fieldcrypt.DataKey // "pii:1"
	m      *keystore.Manager
	rec    *keystoretest.Recorder
	schema *datastore.Schema
	ctx    context.Context
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, store: newMemStore(), k: map[string]*fieldcrypt.DataKey{}, rec: &keystoretest.Recorder{},
		ctx: audit.WithActor(context.Background(), "cli:tester")}
	var all []*fieldcrypt.DataKey
	for _, kv := range []KeyVersion{{"pii", 1}, {"pii", 2}, {"contact", 1}, {"contact", 2}} {
		k := dataKey(t, kv.Key, kv.Version)
		e.k[kv.String()] = k
		all = append(all, k)
	}
	e.keys = fieldcrypt.NewStaticKeyring(all...)
	st, err := keystore.OpenBolt(filepath.Join(t.TempDir(), "keys.db"), keystore.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if e.m, err = keystore.NewManager(keystore.Config{Store: st, KEK: keystoretest.NewFakeKEK(), Audit: e.rec}); err != nil {
		t.Fatal(err)
	}
	e.schema = &datastore.Schema{Datastore: "couchdb", Collections: []*datastore.Collection{{
		Name: "clinic",
		Fields: []*datastore.Field{
			field("ssn", "pii", fieldcrypt.ModeRandom),
			field("email", "contact", fieldcrypt.ModeDeterministic),
			field("card.number", "pii", fieldcrypt.ModeRandom),
		},
	}}}
	return e
}

func (e *env) runner(hooks Hooks) *Runner {
	e.t.Helper()
	r, err := NewRunner(Config{Sweeper: e.store, Rules: func() Rules { return Rules{Schema: e.schema, Hash: "sha256:test"} },
		Keys: e.keys, Notes: e.m, Audit: e.rec, Hooks: hooks, Batch: 3})
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// open returns the plaintext JSON of a token, and its key version.
func (e *env) open(tok string) (string, string) {
	e.t.Helper()
	info, err := fieldcrypt.ParseTokenInfo([]byte(tok))
	if err != nil {
		e.t.Fatalf("not a token: %v", err)
	}
	k := e.k[KeyVersion{info.Key, info.KeyVersion}.String()]
	_, text, err := fieldcrypt.OpenToken(k, []byte(tok))
	if err != nil {
		e.t.Fatalf("open: %v", err)
	}
	return string(text), KeyVersion{info.Key, info.KeyVersion}.String()
}

func TestSweepRotatesAndMigrates(t *testing.T) {
	e := newEnv(t)
	p1, c1 := e.k["pii:1"], e.k["contact:1"]
	for i := range 10 {
		e.store.put(fmt.Sprintf("doc%02d", i), map[string]any{
			"ssn":   seal(t, p1, fieldcrypt.ModeRandom, fmt.Sprintf(`"123-45-%04d"`, i)),
			"email": seal(t, c1, fieldcrypt.ModeDeterministic, `"a@example.com"`),
			"name":  "kept as it is",
			"card":  map[string]any{"number": "4111111111111111"}, // legacy plaintext
			"note":  seal(t, p1, fieldcrypt.ModeRandom, `"outside any field"`),
		})
	}
	e.store.put("_design/app", map[string]any{"views": map[string]any{}})
	st, err := e.runner(Hooks{}).Sweep(e.ctx, "clinic", Request{Runner: RunnerCLI})
	if err != nil {
		t.Fatal(err)
	}
	c := st.Sweep.Counts
	if c.Documents != 10 || c.Rewritten != 10 || c.Reencrypted != 30 || c.Encrypted != 10 || c.Failed != 0 || c.Skipped["design"] != 1 {
		t.Fatalf("counts = %+v", c)
	}
	if got := st.Last.Tokens; got["pii:1"] != 0 || got["pii:2"] != 30 || got["contact:2"] != 10 || got["contact:1"] != 0 {
		t.Fatalf("inventory = %v", got)
	}
	var det string
	for i := range 10 {
		d := e.store.get(fmt.Sprintf("doc%02d", i))
		if v, kv := e.open(d["ssn"].(string)); v != fmt.Sprintf(`"123-45-%04d"`, i) || kv != "pii:2" {
			t.Fatalf("ssn = %s under %s", v, kv)
		}
		if v, kv := e.open(d["card"].(map[string]any)["number"].(string)); v != `"4111111111111111"` || kv != "pii:2" {
			t.Fatalf("card.number = %s under %s", v, kv)
		}
		if v, kv := e.open(d["note"].(string)); v != `"outside any field"` || kv != "pii:2" {
			t.Fatalf("note = %s under %s", v, kv)
		}
		if d["name"] != "kept as it is" {
			t.Fatalf("name changed: %v", d["name"])
		}
		// Deterministic stays deterministic, under the new version:
		// equal values, equal tokens.
		em := d["email"].(string)
		if det != "" && em != det {
			t.Fatal("deterministic tokens of one value differ after the sweep")
		}
		det = em
		if v, kv := e.open(em); v != `"a@example.com"` || kv != "contact:2" {
			t.Fatalf("email = %s under %s", v, kv)
		}
	}
	// The same token as the proxy would write now.
	want, _ := fieldcrypt.SealValue(e.k["contact:2"], fieldcrypt.ModeDeterministic, fieldcrypt.TypeString, []byte(`"a@example.com"`))
	if det != string(want) {
		t.Fatal("the re-sealed deterministic token differs from a fresh seal under the primary")
	}
	// Running it again finds nothing to do.
	st2, err := e.runner(Hooks{}).Sweep(e.ctx, "clinic", Request{Runner: RunnerCLI})
	if err != nil || st2.Sweep.Counts.Rewritten != 0 || st2.Sweep.ID == st.Sweep.ID {
		t.Fatalf("second sweep: %+v, %v", st2.Sweep, err)
	}
	for id, n := range e.store.writes {
		if n != 1 {
			t.Fatalf("%s written %d times", id, n)
		}
	}
	if evs := e.rec.Find("sweep.finish"); len(evs) != 2 || evs[0].Details["reencrypted"] != "30" {
		t.Fatalf("audit: %+v", evs)
	}
	for _, ev := range e.rec.Events() {
		b, _ := json.Marshal(ev)
		// The run id is taken out first: twelve random hex digits hold
		// "4111" by chance about 1 run in 3,600.
		outside := strings.ReplaceAll(string(b), `"run":"`+ev.Details["run"]+`"`, `"run":"RUN"`)
		if strings.Contains(outside, "123-45") || strings.Contains(outside, "4111") {
			t.Fatalf("audit event holds a value: %s", b)
		}
	}
}

func TestDryRunCountsWithoutWriting(t *testing.T) {
	e := newEnv(t)
	p1, p2 := e.k["pii:1"], e.k["pii:2"]
	e.store.put("a", map[string]any{"ssn": seal(t, p1, fieldcrypt.ModeRandom, `"1"`), "email": "plain@example.com"})
	e.store.put("b", map[string]any{"ssn": seal(t, p2, fieldcrypt.ModeRandom, `"2"`), "card": []any{map[string]any{"number": 4111}}})
	e.store.put("c", map[string]any{"ssn": nil, "x": map[string]any{"ssn": "nested plaintext"}})
	e.store.put("d", map[string]any{"name": "x", "email": seal(t, p1, fieldcrypt.ModeRandom, `"pasted"`)})
	st, err := e.runner(Hooks{}).Sweep(e.ctx, "clinic", Request{Runner: RunnerCLI, Spec: Spec{DryRun: true}})
	if err != nil {
		t.Fatal(err)
	}
	c := st.DryRun.Counts
	if c.Rewritten != 0 || len(e.store.writes) != 0 {
		t.Fatalf("a dry run wrote: %+v %v", c, e.store.writes)
	}
	if c.Tokens["pii:1"] != 2 || c.Tokens["pii:2"] != 1 || c.Reencrypted != 2 {
		t.Fatalf("tokens = %v, reencrypted %d", c.Tokens, c.Reencrypted)
	}
	// A null is left (nulls: leave), a nested ssn is a field.
	if c.Plaintext["email"] != 1 || c.Plaintext["card.number"] != 1 || c.Plaintext["ssn"] != 1 || c.Encrypted != 3 {
		t.Fatalf("plaintext = %v, encrypted %d", c.Plaintext, c.Encrypted)
	}
	if c.Misplaced["email"] != 1 || len(c.Misplaced) != 1 {
		t.Fatalf("misplaced = %v", c.Misplaced)
	}
	if st.Last == nil || !st.Last.DryRun || st.Sweep != nil {
		t.Fatalf("state = %+v", st)
	}
}

// An application that writes the same documents while the sweep runs
// loses nothing: the sweep's write loses instead, and is made again on
// the newer version.
func TestSweepLosesToConcurrentWrites(t *testing.T) {
	e := newEnv(t)
	p1 := e.k["pii:1"]
	for i := range 6 {
		e.store.put(fmt.Sprintf("d%d", i), map[string]any{"ssn": seal(t, p1, fieldcrypt.ModeRandom, `"old"`), "n": 0})
	}
	bumps := map[string]int{}
	e.store.beforeWrite = func(id string) {
		// The app updates each document twice while the sweep tries to
		// write it, with a value under the primary (as the sidecar
		// would).
		if bumps[id] < 2 {
			bumps[id]++
			e.store.put(id, map[string]any{"ssn": seal(t, e.k["pii:2"], fieldcrypt.ModeRandom, `"new"`), "n": bumps[id], "card": map[string]any{"number": "1"}})
		}
	}
	st, err := e.runner(Hooks{}).Sweep(e.ctx, "clinic", Request{Runner: RunnerCLI})
	if err != nil {
		t.Fatal(err)
	}
	if st.Sweep.Counts.Conflicts != 12 || st.Sweep.Counts.Failed != 0 {
		t.Fatalf("counts = %+v", st.Sweep.Counts)
	}
	for i := range 6 {
		d := e.store.get(fmt.Sprintf("d%d", i))
		if d["n"] != float64(2) {
			t.Fatalf("the app's last write was lost: %v", d)
		}
		if v, kv := e.open(d["ssn"].(string)); v != `"new"` || kv != "pii:2" {
			t.Fatalf("ssn = %s %s", v, kv)
		}
		if v, _ := e.open(d["card"].(map[string]any)["number"].(string)); v != `"1"` {
			t.Fatalf("card = %s", v)
		}
	}
}

// A document that never stops changing is given up after the bound,
// counted as failed, and what it holds is counted as it stays.
func TestSweepGivesUpOnADocumentThatKeepsChanging(t *testing.T) {
	e := newEnv(t)
	e.store.put("hot", map[string]any{"ssn": "plain"})
	n := 0
	e.store.beforeWrite = func(id string) {
		n++
		e.store.put(id, map[string]any{"ssn": "plain", "n": n})
	}
	st, err := e.runner(Hooks{}).Sweep(e.ctx, "clinic", Request{Runner: RunnerCLI})
	if err != nil {
		t.Fatal(err)
	}
	if c := st.Sweep.Counts; c.Failed != 1 || c.Conflicts != DefaultAttempts || c.Plaintext["ssn"] != 1 {
		t.Fatalf("counts = %+v", c)
	}
}

// A sweep stopped half way (a crash, ^C) resumes from its checkpoint and
// writes no document twice.
func TestSweepResumesFromCheckpoint(t *testing.T) {
	e := newEnv(t)
	for i := range 20 {
		e.store.put(fmt.Sprintf("d%02d", i), map[string]any{"ssn": fmt.Sprintf("plain %d", i)})
	}
	ctx, cancel := context.WithCancel(e.ctx)
	pages := 0
	_, err := e.runner(Hooks{Progress: func(string, *Run, float64) {
		if pages++; pages == 3 {
			cancel()
		}
	}}).Sweep(ctx, "clinic", Request{Runner: RunnerCLI})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted sweep: %v", err)
	}
	st, err := LoadState(e.ctx, e.m, "clinic")
	if err != nil || st.Sweep.State != StateInterrupted || st.Sweep.Counts.Documents != 9 || st.Sweep.Cursor == "" {
		t.Fatalf("checkpoint = %+v, %v", st.Sweep, err)
	}
	// Another option set is refused while it is unfinished.
	if _, err := e.runner(Hooks{}).Sweep(e.ctx, "clinic", Request{Runner: RunnerCLI, Spec: Spec{From: []KeyVersion{{"pii", 1}}}}); !errors.Is(err, ErrUnfinished) {
		t.Fatalf("other options: %v", err)
	}
	st, err = e.runner(Hooks{}).Sweep(e.ctx, "clinic", Request{Runner: RunnerCLI})
	if err != nil {
		t.Fatal(err)
	}
	if c := st.Sweep.Counts; c.Documents != 20 || c.Rewritten != 20 || c.Encrypted != 20 || st.Sweep.State != StateDone {
		t.Fatalf("resumed counts = %+v", c)
	}
	for id, n := range e.store.writes {
		if n != 1 {
			t.Fatalf("%s written %d times", id, n)
		}
	}
	if len(e.rec.Find("sweep.resume")) != 1 {
		t.Fatal("the resume is not audited")
	}
}

func TestSweepRefusesABusyCollection(t *testing.T) {
	e := newEnv(t)
	e.store.put("a", map[string]any{"ssn": "x"})
	if _, err := Update(e.ctx, e.m, "clinic", func(st *State) error {
		st.Sweep = &Run{ID: "other", Owner: "elsewhere/1", State: StateRunning, Heartbeat: time.Now(), Started: time.Now()}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.runner(Hooks{}).Sweep(e.ctx, "clinic", Request{Runner: RunnerCLI}); !errors.Is(err, ErrBusy) {
		t.Fatalf("busy: %v", err)
	}
	// A live owner on this host is seen as alive; a dead pid is not.
	if _, err := Update(e.ctx, e.m, "clinic", func(st *State) error {
		st.Sweep.Owner = DefaultOwner()[:strings.Index(DefaultOwner(), "/")] + "/999999999"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.runner(Hooks{}).Sweep(e.ctx, "clinic", Request{Runner: RunnerCLI}); err != nil {
		t.Fatalf("a dead owner's run: %v", err)
	}
}

func TestSweepFromNamedVersions(t *testing.T) {
	e := newEnv(t)
	e.store.put("a", map[string]any{"ssn": seal(t, e.k["pii:1"], fieldcrypt.ModeRandom, `"p"`), "email": seal(t, e.k["contact:1"], fieldcrypt.ModeDeterministic, `"c"`)})
	st, err := e.runner(Hooks{}).Sweep(e.ctx, "clinic", Request{Runner: RunnerCLI, Spec: Spec{From: []KeyVersion{{"pii", 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Last.Tokens; got["pii:2"] != 1 || got["contact:1"] != 1 {
		t.Fatalf("inventory = %v", got)
	}
}

// Tokens of a version that cannot be opened are counted, never taken for
// plaintext and sealed again (which would hide them inside a new token).
func TestUnopenableTokensAreCountedNotWrapped(t *testing.T) {
	e := newEnv(t)
	gone := dataKey(t, "pii", 7) // not in the keyring: like a destroyed version
	tok := seal(t, gone, fieldcrypt.ModeRandom, `"lost"`)
	e.store.put("a", map[string]any{"ssn": tok, "email": "plain"})
	e.store.put("b", map[string]any{"ssn": tok})
	st, err := e.runner(Hooks{}).Sweep(e.ctx, "clinic", Request{Runner: RunnerCLI, Spec: Spec{From: nil}})
	if err != nil {
		t.Fatal(err)
	}
	c := st.Sweep.Counts
	if c.Unopenable["pii:7"] != 2 || c.Blocked != 1 || c.Plaintext["email"] != 1 || c.Tokens["pii:7"] != 2 {
		t.Fatalf("counts = %+v", c)
	}
	if e.store.get("a")["ssn"] != tok || e.store.get("a")["email"] != "plain" {
		t.Fatal("a blocked document was changed")
	}
}

// Decrypting a field whose protection was removed writes plaintext into
// the store: only with an approved grant that names the field.
func TestDecryptRemovedNeedsAGrant(t *testing.T) {
	e := newEnv(t)
	e.store.put("a", map[string]any{"ssn": seal(t, e.k["pii:2"], fieldcrypt.ModeRandom, `"123"`), "nick": seal(t, e.k["pii:2"], fieldcrypt.ModeRandom, `"bob"`),
		"pasted": seal(t, e.k["contact:2"], fieldcrypt.ModeRandom, `"not pii"`)})
	e.schema.Collections[0].Fields = append(e.schema.Collections[0].Fields, field("nick", "pii", fieldcrypt.ModeRandom), field("pasted", "pii", fieldcrypt.ModeRandom))
	if _, err := e.runner(Hooks{}).Sweep(e.ctx, "clinic", Request{Runner: RunnerCLI}); err != nil {
		t.Fatal(err)
	}
	// The rules stop protecting nick and pasted.
	e.schema.Collections[0].Fields = e.schema.Collections[0].Fields[:3]
	e.schema = &datastore.Schema{Datastore: "couchdb", Collections: []*datastore.Collection{{Name: "clinic", Fields: e.schema.Collections[0].Fields}}}
	st, err := e.runner(Hooks{}).Sweep(e.ctx, "clinic", Request{Runner: RunnerCLI})
	if err != nil {
		t.Fatal(err)
	}
	if st.Sweep.Counts.Removed["nick"] != 1 {
		t.Fatalf("removed = %v", st.Sweep.Counts.Removed)
	}
	if _, err := e.runner(Hooks{}).Sweep(e.ctx, "clinic", Request{Runner: RunnerCLI, Spec: Spec{DecryptRemoved: true}}); !errors.Is(err, ErrNeedsApproval) {
		t.Fatalf("without a grant: %v", err)
	}
	if _, err := Update(e.ctx, e.m, "clinic", func(st *State) error {
		st.Grant = &Grant{ID: "g1", Fields: []FieldSpec{{Name: "nick", Path: []string{"nick"}, Key: "pii"}, {Name: "pasted", Path: []string{"pasted"}, Key: "pii"}},
			RequestedBy: "alice", ApprovedBy: "bob", Expires: time.Now().Add(time.Hour)}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st, err = e.runner(Hooks{}).Sweep(e.ctx, "clinic", Request{Runner: RunnerCLI, Restart: true, Spec: Spec{DecryptRemoved: true, Grant: "g1"}})
	if err != nil {
		t.Fatal(err)
	}
	d := e.store.get("a")
	if d["nick"] != "bob" {
		t.Fatalf("nick = %v", d["nick"])
	}
	// A token of another key in a removed field is not opened: the sweep
	// must not turn a pasted token into a readable value.
	if _, kv := e.open(d["pasted"].(string)); kv != "contact:2" {
		t.Fatalf("pasted = %v", d["pasted"])
	}
	if _, kv := e.open(d["ssn"].(string)); kv != "pii:2" {
		t.Fatal("ssn changed")
	}
	if st.Grant != nil || st.Sweep.Counts.Decrypted != 1 {
		t.Fatalf("grant not used up, or counts wrong: %+v %+v", st.Grant, st.Sweep.Counts)
	}
}

func TestSweepRefusesWithoutConcurrencyControl(t *testing.T) {
	e := newEnv(t)
	e.store.noOCC = true
	if _, err := e.runner(Hooks{}).Sweep(e.ctx, "clinic", Request{Runner: RunnerCLI}); !errors.Is(err, ErrNoConcurrency) {
		t.Fatalf("no OCC: %v", err)
	}
	if _, err := e.runner(Hooks{}).Sweep(e.ctx, "clinic", Request{Runner: RunnerCLI, Spec: Spec{DryRun: true}}); err != nil {
		t.Fatalf("a dry run needs no OCC: %v", err)
	}
}

func TestNoteID(t *testing.T) {
	for in, want := range map[string]string{"clinic": "sweep/clinic", "org/rec_1": "sweep/org.2frec.5f1", "a.b": "sweep/a.2eb", "A$": "sweep/.41.24"} {
		if got := NoteID(in); got != want || !keystore.ValidMetaID("note/"+got) {
			t.Errorf("NoteID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestJobsStartPauseResume(t *testing.T) {
	e := newEnv(t)
	for i := range 30 {
		e.store.put(fmt.Sprintf("d%02d", i), map[string]any{"ssn": fmt.Sprintf("plain %d", i)})
	}
	r := e.runner(Hooks{})
	jobs := NewJobs(JobsConfig{Open: func() (*Runner, error) { return r, nil }, Notes: e.m, Interval: 20 * time.Millisecond})
	paused := make(chan struct{})
	writes := 0
	e.store.beforeWrite = func(string) {
		// Half way, an operator pauses it.
		if writes++; writes == 10 {
			if _, err := jobs.Pause(e.ctx, "clinic"); err != nil {
				t.Error(err)
			}
			close(paused)
		}
	}
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- jobs.Run(ctx) }()
	if _, err := jobs.Start(audit.WithActor(e.ctx, "admin:alice"), StartRequest{Collection: "clinic"}); err != nil {
		t.Fatal(err)
	}
	<-paused
	st := waitState(t, jobs, "clinic", func(st *State) bool { return st.Sweep.State == StatePaused })
	if st.Sweep.Counts.Documents == 30 || st.Sweep.Counts.Documents == 0 {
		t.Fatalf("paused after %d documents", st.Sweep.Counts.Documents)
	}
	// Starting another one while this is unfinished is refused.
	if _, err := jobs.Start(e.ctx, StartRequest{Collection: "clinic"}); !errors.Is(err, ErrUnfinished) {
		t.Fatalf("second start: %v", err)
	}
	if _, err := jobs.Resume(e.ctx, "clinic"); err != nil {
		t.Fatal(err)
	}
	st = waitState(t, jobs, "clinic", func(st *State) bool { return st.Sweep.State == StateDone })
	if c := st.Sweep.Counts; c.Documents != 30 || c.Encrypted != 30 || c.Rewritten != 30 {
		t.Fatalf("counts = %+v", c)
	}
	for id, n := range e.store.writes {
		if n != 1 {
			t.Fatalf("%s written %d times", id, n)
		}
	}
	if evs := e.rec.Find("sweep.start"); len(evs) != 1 || evs[0].Actor != "" && evs[0].Actor != "sweep:admin:alice" {
		t.Fatalf("start events: %+v", evs)
	}
	cancel()
	<-done
}

func waitState(t *testing.T, jobs *Jobs, col string, ok func(*State) bool) *State {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		st, err := jobs.Get(context.Background(), col)
		if err == nil && st.Sweep != nil && ok(st) {
			return st
		}
		time.Sleep(10 * time.Millisecond)
	}
	st, err := jobs.Get(context.Background(), col)
	t.Fatalf("state never reached: %+v %+v, %v", st, st.Sweep, err)
	return nil
}

func TestSweepCompactsWhenAsked(t *testing.T) {
	e := newEnv(t)
	e.store.put("a", map[string]any{"ssn": "plain"})
	if _, err := e.runner(Hooks{}).Sweep(e.ctx, "clinic", Request{Runner: RunnerCLI, Spec: Spec{DryRun: true, Compact: true}}); err != nil || e.store.compacted != 0 {
		t.Fatalf("a dry run compacted (%d), %v", e.store.compacted, err)
	}
	st, err := e.runner(Hooks{}).Sweep(e.ctx, "clinic", Request{Runner: RunnerCLI, Spec: Spec{Compact: true}})
	if err != nil || e.store.compacted != 1 || st.Sweep.Compacted.IsZero() {
		t.Fatalf("compacted %d, state %+v, %v", e.store.compacted, st.Sweep, err)
	}
	if evs := e.rec.Find("sweep.compact"); len(evs) != 1 || evs[0].Outcome != "ok" {
		t.Fatalf("audit: %+v", evs)
	}
}

// A padded searchable field keeps its padding when its tokens are sealed
// again, so that lookups sealed by the proxy still find them.
func TestReencryptKeepsTheFieldsPadding(t *testing.T) {
	e := newEnv(t)
	pad, err := fieldcrypt.ParsePadding("64")
	if err != nil {
		t.Fatal(err)
	}
	e.schema.Collections[0].Fields[1].Pad = pad // email, contact, deterministic
	old, err := fieldcrypt.SealValuePadded(e.k["contact:1"], fieldcrypt.ModeDeterministic, fieldcrypt.TypeString, []byte(`"a@example.com"`), pad)
	if err != nil {
		t.Fatal(err)
	}
	e.store.put("a", map[string]any{"email": string(old)})
	if _, err := e.runner(Hooks{}).Sweep(e.ctx, "clinic", Request{Runner: RunnerCLI}); err != nil {
		t.Fatal(err)
	}
	want, _ := fieldcrypt.SealValuePadded(e.k["contact:2"], fieldcrypt.ModeDeterministic, fieldcrypt.TypeString, []byte(`"a@example.com"`), pad)
	if got := e.store.get("a")["email"]; got != string(want) {
		t.Fatalf("re-sealed %v, want the padded token %s", got, want)
	}
}
