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
