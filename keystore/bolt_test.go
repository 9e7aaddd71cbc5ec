package keystore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

// The test binary doubles as a child process for the multi-process and
// crash tests: with KEYSTORE_TEST_CHILD set, TestMain runs the child's job
// instead of the tests.
func TestMain(m *testing.M) {
	if job := os.Getenv("KEYSTORE_TEST_CHILD"); job != "" {
		os.Exit(childMain(job, os.Getenv("KEYSTORE_TEST_PATH")))
	}
	code := m.Run()
	testenv.CleanupSoftHSM()
	os.Exit(code)
}

// childMain runs in the child process.
//
//	put-forever: Put keys c0, c1, ... printing "ack N" after each returns,
//	             until killed.
//	put-one NAME: create one key and exit.
func childMain(job, path string) int {
	s, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx := context.Background()
	switch {
	case job == "put-forever":
		w := bufio.NewWriter(os.Stdout)
		for i := 0; ; i++ {
			k := testKey(fmt.Sprintf("c%d", i), i)
			if _, err := s.Put(ctx, k); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			fmt.Fprintf(w, "ack %d\n", i)
			w.Flush()
		}
	case job == "rewrap":
		return childRewrap(path, os.Getenv("KEYSTORE_TEST_KEK"))
	case strings.HasPrefix(job, "put-one "):
		if _, err := s.Put(ctx, testKey(strings.TrimPrefix(job, "put-one "), 7)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown child job", job)
	return 2
}

// testKey is a key whose content encodes n, so that a reader can check it
// came through whole. The wrapped bytes are filler: no KEK is involved.
func testKey(name string, n int) *Key {
	wrapped := make([]byte, 72)
	for i := range wrapped {
		wrapped[i] = byte(n + i)
	}
	return &Key{
		Name: name, Primary: 1, Cryptoperiod: time.Duration(n) * time.Hour,
		Created: time.Unix(1700000000, 0).UTC(),
		Versions: []Version{{
			Version: 1, State: StateActive, Algorithm: Algorithm, Wrapped: wrapped,
			KEKVersion: 1, Mechanism: "test", Fingerprint: fmt.Sprintf("fp-%d", n),
			Created: time.Unix(1700000000, 0).UTC(),
		}},
	}
}

func checkTestKey(t *testing.T, k *Key, n int) {
	t.Helper()
	want := testKey(k.Name, n)
	if k.Cryptoperiod != want.Cryptoperiod || len(k.Versions) != 1 || k.Versions[0].Fingerprint != want.Versions[0].Fingerprint ||
		string(k.Versions[0].Wrapped) != string(want.Versions[0].Wrapped) {
		t.Fatalf("key %s: content does not match what was written for %d: %+v", k.Name, n, k)
	}
}

func openTestStore(t *testing.T) (*BoltStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data", "keys.db")
	s, err := OpenBolt(path, BoltOptions{PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestBoltPutCAS(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)

	created, err := s.Put(ctx, testKey("pii", 1))
	if err != nil {
		t.Fatal(err)
	}
	if created.Revision != 1 {
		t.Fatalf("revision after create = %d, want 1", created.Revision)
	}

	tests := []struct {
		name     string
		key      func() *Key
		wantErr  error
		wantRev  int64
		wantText string
	}{
		{"create existing", func() *Key { return testKey("pii", 2) }, ErrExists, 0, ""},
		{"stale revision", func() *Key { k := testKey("pii", 2); k.Revision = 7; return k }, ErrConflict, 0, ""},
		{"update unknown", func() *Key { k := testKey("nope", 2); k.Revision = 1; return k }, ErrConflict, 0, ""},
		{"invalid name", func() *Key { return testKey("Bad Name", 2) }, nil, 0, "invalid key name"},
		{"update", func() *Key { k := testKey("pii", 2); k.Revision = 1; return k }, nil, 2, ""},
		{"update again", func() *Key { k := testKey("pii", 3); k.Revision = 2; return k }, nil, 3, ""},
		{"replay of first update", func() *Key { k := testKey("pii", 2); k.Revision = 1; return k }, ErrConflict, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := s.Get(ctx, "pii")
			got, err := s.Put(ctx, tc.key())
			switch {
			case tc.wantErr != nil || tc.wantText != "":
				if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) || !strings.Contains(err.Error(), tc.wantText) {
					t.Fatalf("Put: err = %v, want %v %q", err, tc.wantErr, tc.wantText)
				}
				after, _ := s.Get(ctx, "pii")
				if after.Revision != before.Revision || after.Cryptoperiod != before.Cryptoperiod {
					t.Fatalf("a refused Put changed the record: %+v -> %+v", before, after)
				}
			case err != nil:
				t.Fatalf("Put: %v", err)
			case got.Revision != tc.wantRev:
				t.Fatalf("revision = %d, want %d", got.Revision, tc.wantRev)
			}
		})
	}

	k, err := s.Get(ctx, "pii")
	if err != nil {
		t.Fatal(err)
	}
	checkTestKey(t, k, 3)
	if k.Revision != 3 {
		t.Fatalf("Get revision = %d, want 3", k.Revision)
	}
	if _, err := s.Get(ctx, "absent"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get absent: %v, want ErrNotFound", err)
	}
}

func TestBoltListSortedAndCopies(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
	for i, n := range []string{"zeta", "alpha", "mid"} {
		if _, err := s.Put(ctx, testKey(n, i)); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, k := range keys {
		names = append(names, k.Name)
	}
	if strings.Join(names, ",") != "alpha,mid,zeta" {
		t.Fatalf("List order = %v", names)
	}
	// Editing what Get returned must not touch the store.
	keys[0].Versions[0].Wrapped[0] ^= 0xff
	again, _ := s.Get(ctx, "alpha")
	checkTestKey(t, again, 1)
}

func TestBoltFileModes(t *testing.T) {
	s, path := openTestStore(t)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("keystore file mode = %04o, want 0600", st.Mode().Perm())
	}
	dst, _ := os.Stat(filepath.Dir(path))
	if dst.Mode().Perm() != 0o700 {
		t.Errorf("keystore dir mode = %04o, want 0700", dst.Mode().Perm())
	}
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}

	// A file others can read is refused, not silently used.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenBolt(path, BoltOptions{}); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("OpenBolt on a 0644 file: err = %v, want a chmod hint", err)
	}
}

func TestBoltLockTimeoutIsUnavailable(t *testing.T) {
	_, path := openTestStore(t)
	short, err := OpenBolt(path, BoltOptions{LockTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Hold the file's exclusive lock the way another process's bbolt
	// would, and check that the store gives up with ErrUnavailable.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := short.Get(context.Background(), "x"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get with the file locked: %v, want ErrUnavailable", err)
	}
	if _, err := short.Put(context.Background(), testKey("x", 1)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Put with the file locked: %v, want ErrUnavailable", err)
	}
	if err := short.Ping(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ping with the file locked: %v, want ErrUnavailable", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if _, err := short.Put(context.Background(), testKey("x", 1)); err != nil {
		t.Fatalf("Put after the lock was released: %v", err)
	}
}

// increment adds one to the counter kept in a key's Cryptoperiod, with the
// compare-and-swap loop that Manager uses.
func increment(ctx context.Context, s Store, name string) error {
	for {
		k, err := s.Get(ctx, name)
		if err != nil {
			return err
		}
		k.Cryptoperiod++
		_, err = s.Put(ctx, k)
		if errors.Is(err, ErrConflict) {
			continue
		}
		return err
	}
}

func TestBoltTwoStoresOneFileConcurrently(t *testing.T) {
	ctx := context.Background()
	s1, path := openTestStore(t)
	s2, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	k := testKey("counter", 0)
	if _, err := s1.Put(ctx, k); err != nil {
		t.Fatal(err)
	}
	const workers, each = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*2)
	for _, s := range []Store{s1, s2} {
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					if err := increment(ctx, s, "counter"); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, err := s2.Get(ctx, "counter")
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Duration(2 * workers * each); got.Cryptoperiod != want {
		t.Fatalf("counter = %d after %d increments: an update was lost", got.Cryptoperiod, want)
	}
	if got.Revision != int64(2*workers*each)+1 {
		t.Fatalf("revision = %d, want %d", got.Revision, 2*workers*each+1)
	}
}

// waitEvent waits for an event naming name; the generous deadline only
// stops a broken watcher from hanging the test.
func waitEvent(t *testing.T, ch <-chan Event, name string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("watch channel closed before an event for %q", name)
			}
			if ev.Name == name {
				return
			}
		case <-deadline:
			t.Fatalf("no watch event for %q", name)
		}
	}
}

func TestBoltWatchSeesOtherStore(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s1, path := openTestStore(t)
	s2, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s1.Put(ctx, testKey("before", 1)); err != nil {
		t.Fatal(err)
	}
	ch, err := s1.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Put(ctx, testKey("pii", 1)); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, ch, "pii")

	k, _ := s2.Get(ctx, "pii")
	k.Primary = 2
	if _, err := s2.Put(ctx, k); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, ch, "pii")

	cancel()
	for range ch {
		// drain until the watcher closes the channel
	}
}

func childCmd(t *testing.T, job, path string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "KEYSTORE_TEST_CHILD="+job, "KEYSTORE_TEST_PATH="+path)
	return cmd
}

func TestBoltWatchSeesChildProcess(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, path := openTestStore(t)
	ch, err := s.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The parent keeps writing while the child writes: both must get
	// through the file lock.
	done := make(chan error, 1)
	go func() {
		for i := 0; i < 20; i++ {
			if _, err := s.Put(ctx, testKey(fmt.Sprintf("p%d", i), i)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	if out, err := childCmd(t, "put-one fromchild", path).CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitEvent(t, ch, "fromchild")
	k, err := s.Get(ctx, "fromchild")
	if err != nil {
		t.Fatal(err)
	}
	checkTestKey(t, k, 7)
}

// TestBoltSurvivesKill kills a child process in the middle of a stream of
// Puts and checks that the file still opens and holds every key whose Put
// had returned. bbolt commits by writing the new pages, fdatasync, then
// the meta page, fdatasync: a torn transaction is simply not there.
func TestBoltSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes; skipped with -short")
	}
	_, path := openTestStore(t)
	acked := -1
	for round := 0; round < 3; round++ {
		cmd := childCmd(t, "put-forever", path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		start := acked
		for sc.Scan() {
			n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "ack "))
			if err != nil {
				t.Fatalf("child said %q", sc.Text())
			}
			if n > acked {
				acked = n
			}
			// Kill at a different point of the stream each round.
			if acked-start >= 30+round*17 {
				break
			}
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		s, err := OpenBolt(path, BoltOptions{})
		if err != nil {
			t.Fatalf("round %d: store does not open after kill: %v", round, err)
		}
		for i := 0; i <= acked; i++ {
			k, err := s.Get(context.Background(), fmt.Sprintf("c%d", i))
			if err != nil {
				t.Fatalf("round %d: acknowledged key c%d lost: %v (child stderr: %s)", round, i, err, stderr.String())
			}
			checkTestKey(t, k, i)
		}
		if err := s.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
		// The child starts again at c0, so the next round needs a fresh
		// file.
		path = filepath.Join(filepath.Dir(path), fmt.Sprintf("round%d.db", round+1))
		acked = -1
	}
}

func BenchmarkBoltGet(b *testing.B) {
	ctx := context.Background()
	s, err := OpenBolt(filepath.Join(b.TempDir(), "keys.db"), BoltOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if _, err := s.Put(ctx, testKey(fmt.Sprintf("k%d", i), i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Get(ctx, "k7"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBoltPut(b *testing.B) {
	ctx := context.Background()
	s, err := OpenBolt(filepath.Join(b.TempDir(), "keys.db"), BoltOptions{})
	if err != nil {
		b.Fatal(err)
	}
	k, err := s.Put(ctx, testKey("k", 1))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if k, err = s.Put(ctx, k); err != nil {
			b.Fatal(err)
		}
	}
}
