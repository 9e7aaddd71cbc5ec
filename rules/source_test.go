package rules

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/internal/audit"
)

// recorder keeps audit events for inspection.
type recorder struct {
	mu     sync.Mutex
	events []audit.Event
	fail   error
}

func (r *recorder) Record(_ context.Context, e audit.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.events = append(r.events, e)
	return nil
}

func (r *recorder) all() []audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]audit.Event(nil), r.events...)
}

// ruleVersion returns a valid rule file; every version protects $.ssn and
// $.docs[*].ssn, under a key that varies with n.
func ruleVersion(n int) string {
	return fmt.Sprintf(`version: 1
# version %d
routes:
  - name: write
    match: {methods: [POST], paths: ["/db/_bulk_docs", "/db/*"]}
    encrypt:
      - fields: ["$.ssn", "$.docs[*].ssn"]
        key: %s
      - fields: ["$.docs[*].email"]
        key: contact
        mode: deterministic
decrypt: {keys: [pii]}
`, n, []string{"pii", "pii2"}[n%2])
}

var invalidVersions = []string{
	"version: 1\nroutes:\n  - name: write\n    match: {methods: [POST], paths: [\"/db/*\"]\n",                                                          // YAML syntax
	"version: 1\nroutes:\n  - name: write\n    match: {methods: [POST], paths: [\"/db/*\"]}\n    encrypt: [{fields: [$.ssn], key: pii, mode: fast}]\n", // unknown mode
	"version: 2\n", // unsupported version
	"",             // empty (an in-place write caught half-way)
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestNewFileSourceRefusesInvalid(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	writeFile(t, path, invalidVersions[1])
	_, err := NewFileSource(path, FileSourceOptions{})
	var re *Error
	if !errors.As(err, &re) || !strings.Contains(err.Error(), `unknown mode "fast"`) {
		t.Errorf("invalid file at start: %v", err)
	}
	if _, err := NewFileSource(filepath.Join(dir, "missing.yaml"), FileSourceOptions{}); err == nil {
		t.Error("missing file at start accepted")
	}
	rec := &recorder{fail: errors.New("disk full")}
	writeFile(t, path, ruleVersion(0))
	if _, err := NewFileSource(path, FileSourceOptions{Recorder: rec}); err == nil || !strings.Contains(err.Error(), "audit") {
		t.Errorf("unauditable start: %v", err)
	}
}

func TestFileSourceReload(t *testing.T) {
	ctx := audit.WithActor(context.Background(), "signal:SIGHUP")
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	writeFile(t, path, ruleVersion(0))
	rec := &recorder{}
	var logBuf syncBuffer
	var loaded, refused atomic.Int32
	src, err := NewFileSource(path, FileSourceOptions{
		Recorder: rec,
		Logger:   slog.New(slog.NewTextHandler(&logBuf, nil)),
		Hooks: Hooks{
			Loaded:  func(*Plan, time.Time, time.Duration) { loaded.Add(1) },
			Refused: func(error) { refused.Add(1) },
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	first := src.Current()
	if first == nil || first.Hash != HashBytes([]byte(ruleVersion(0))) {
		t.Fatal("no plan after start")
	}
	if ev := rec.all(); len(ev) != 1 || ev[0].Action != "rules.load" || ev[0].Rules != first.Hash || ev[0].Actor != "proxy" {
		t.Errorf("start event: %+v", ev)
	}

	// Unchanged file: nothing happens.
	if err := src.Reload(ctx); err != nil || src.Current() != first || len(rec.all()) != 1 {
		t.Errorf("unchanged reload: %v", err)
	}

	// A valid change is put in force and audited with both hashes and
	// the diff summary.
	writeFile(t, path, ruleVersion(1))
	if err := src.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	second := src.Current()
	if second.Hash != HashBytes([]byte(ruleVersion(1))) {
		t.Fatal("valid change not in force")
	}
	ev := rec.all()[1]
	if ev.Action != "rules.reload" || ev.Outcome != "ok" || ev.Actor != "signal:SIGHUP" || ev.Details["old_hash"] != first.Hash || ev.Details["new_hash"] != second.Hash ||
		!strings.Contains(ev.Details["diff"], "key/mode change") {
		t.Errorf("reload event: %+v", ev)
	}

	// Each invalid file is refused; the last good plan stays.
	for i, bad := range invalidVersions {
		writeFile(t, path, bad)
		err := src.Reload(ctx)
		if err == nil {
			t.Fatalf("invalid version %d accepted", i)
		}
		if src.Current() != second {
			t.Fatalf("invalid version %d replaced the plan", i)
		}
	}
	st := src.Status()
	if st.Failures != uint64(len(invalidVersions)) || st.Reloads != 2 || st.Hash != second.Hash || st.LastError == nil {
		t.Errorf("status: %+v", st)
	}
	if refused.Load() != int32(len(invalidVersions)) || loaded.Load() != 2 {
		t.Errorf("hooks: loaded %d refused %d", loaded.Load(), refused.Load())
	}
	var errorEvents int
	for _, e := range rec.all() {
		if e.Outcome == "error" {
			errorEvents++
			if e.Rules != second.Hash {
				t.Errorf("refusal event names hash %s, want the one in force", e.Rules)
			}
		}
	}
	if errorEvents != len(invalidVersions) {
		t.Errorf("%d refusal events, want %d", errorEvents, len(invalidVersions))
	}
	if logs := logBuf.String(); !strings.Contains(logs, "reload refused") || !strings.Contains(logs, `unknown mode \"fast\"`) {
		t.Errorf("refusal not logged with its diagnostics:\n%s", logs)
	}

	// A change the audit log will not take is refused too.
	rec.mu.Lock()
	rec.fail = errors.New("audit log unavailable")
	rec.mu.Unlock()
	writeFile(t, path, ruleVersion(2))
	if err := src.Reload(ctx); err == nil || src.Current() != second {
		t.Errorf("unaudited change put in force: %v", err)
	}

	// A missing file is refused as well.
	rec.mu.Lock()
	rec.fail = nil
	rec.mu.Unlock()
	os.Remove(path)
	if err := src.Reload(ctx); err == nil || src.Current() != second {
		t.Errorf("missing file: %v", err)
	}
}

// waitFor polls cond until it holds or a generous deadline passes. The
// deadline only stops a broken test from hanging; nothing is asserted
// about speed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFileSourceRunWatches(t *testing.T) {
	dir := t.TempDir()
	// Kubernetes mounts a ConfigMap as a symlink to a directory that is
	// swapped atomically: rules.yaml -> ..data/rules.yaml, ..data -> ..v1.
	for _, v := range []string{"..v1", "..v2", "..v3"} {
		if err := os.Mkdir(filepath.Join(dir, v), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "..v1", "rules.yaml"), []byte(ruleVersion(0)), 0o600)
	os.WriteFile(filepath.Join(dir, "..v2", "rules.yaml"), []byte(ruleVersion(1)), 0o600)
	os.WriteFile(filepath.Join(dir, "..v3", "rules.yaml"), []byte(invalidVersions[0]), 0o600)
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "rules.yaml")
	if err := os.Symlink(filepath.Join("..data", "rules.yaml"), path); err != nil {
		t.Fatal(err)
	}
	swap := func(target string) {
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(target, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	src, err := NewFileSource(path, FileSourceOptions{PollInterval: 5 * time.Millisecond, Debounce: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- src.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	h1 := HashBytes([]byte(ruleVersion(1)))
	swap("..v2")
	waitFor(t, "the ConfigMap swap to be loaded", func() bool { return src.Current().Hash == h1 })

	swap("..v3") // invalid: refused once, v2 stays
	waitFor(t, "the invalid file to be refused", func() bool { return src.Status().Failures == 1 })
	if src.Current().Hash != h1 {
		t.Fatal("invalid file replaced the plan")
	}

	// An in-place write is seen too (not only renames).
	h3 := HashBytes([]byte(ruleVersion(3)))
	if err := os.WriteFile(filepath.Join(dir, "..v3", "rules.yaml"), []byte(ruleVersion(3)), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the in-place write to be loaded", func() bool { return src.Current().Hash == h3 })
	if st := src.Status(); st.Failures != 1 {
		t.Errorf("the invalid file was refused %d times; once is enough", st.Failures)
	}
}

// TestReloadUnderTraffic rewrites the rule file with valid and invalid
// versions, through the watcher and through Reload, while goroutines
// match and encrypt requests the way the proxy does. No request may fail,
// no protected field may come out in plaintext, and the plan in force may
// only ever be a valid version.
func TestReloadUnderTraffic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	writeFile(t, path, ruleVersion(0))
	src, err := NewFileSource(path, FileSourceOptions{PollInterval: 2 * time.Millisecond, Debounce: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	valid := map[string]bool{}
	const versions = 6
	for i := range versions {
		valid[HashBytes([]byte(ruleVersion(i)))] = true
	}
	ring := fieldcrypt.NewStaticKeyring(newKey(t, "pii", 1), newKey(t, "pii2", 1), newKey(t, "contact", 1))

	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error)
	go func() { runDone <- src.Run(ctx) }()

	stop := make(chan struct{})
	var requests atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := []byte(fmt.Sprintf(`{"docs":[{"_id":"w%d","ssn":"123-45-6789","email":"a@example.com"}],"ssn":"987-65-4321"}`, w))
			for {
				select {
				case <-stop:
					return
				default:
				}
				plan := src.Current() // once per request
				if !valid[plan.Hash] {
					errs <- fmt.Errorf("plan in force has hash %s, not a valid version", plan.Hash)
					return
				}
				r := plan.Match(Request{Method: "POST", Path: "/db/_bulk_docs"})
				if r == nil || !r.HasBodyRules() {
					errs <- errors.New("request matched no route")
					return
				}
				out, _, err := r.Body.EncryptBytes(context.Background(), body, ring, nil)
				if err != nil {
					errs <- fmt.Errorf("encrypt: %v", err)
					return
				}
				if bytes.Contains(out, []byte("123-45-6789")) || bytes.Contains(out, []byte("987-65-4321")) || bytes.Count(out, []byte(fieldcrypt.TokenPrefix)) != 3 {
					errs <- fmt.Errorf("protected field left in plaintext: %s", out)
					return
				}
				requests.Add(1)
			}
		}()
	}

	for i := range 60 {
		switch i % 4 {
		case 0, 2:
			writeFile(t, path, ruleVersion(i%versions))
		case 1:
			writeFile(t, path, invalidVersions[(i/4)%len(invalidVersions)])
		case 3:
			// An in-place write, which a reader may catch half-written.
			os.WriteFile(path, []byte(ruleVersion((i+1)%versions)), 0o600)
			_ = src.Reload(context.Background()) // as on SIGHUP
		}
		time.Sleep(3 * time.Millisecond) // let traffic and the watcher run
	}
	// Let the watcher load a final valid version, then stop everything.
	writeFile(t, path, ruleVersion(5))
	waitFor(t, "the final version", func() bool { return src.Current().Hash == HashBytes([]byte(ruleVersion(5))) })
	close(stop)
	wg.Wait()
	cancel()
	<-runDone
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := src.Status()
	t.Logf("%d requests, %d reloads, %d refusals", requests.Load(), st.Reloads, st.Failures)
	if requests.Load() == 0 || st.Reloads < 2 || st.Failures == 0 {
		t.Errorf("the test did not exercise reloads under traffic: %d requests, status %+v", requests.Load(), st)
	}
}

func TestStatic(t *testing.T) {
	p := mustCompile(t, ruleVersion(0))
	if Static(p).Current() != p {
		t.Error("Static does not return its plan")
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
