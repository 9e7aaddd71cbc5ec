package keystore

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/hsm/hsmtest"
)

const killTestPassphrase = "rewrap kill test"

// openSoftKEK opens (or creates) the software provider's file at path.
func openSoftKEK(ctx context.Context, path string, create bool) (hsm.Provider, error) {
	return hsm.Open(hsmtest.FastKDF(ctx), "software", hsm.Options{
		KEKFile: path, Passphrase: killTestPassphrase, Create: create,
		Logger: slog.New(slog.DiscardHandler),
	})
}

// sleepLimiter paces the child's re-wrap so that the parent can kill it
// half way.
type sleepLimiter time.Duration

func (l sleepLimiter) Wait(ctx context.Context) error {
	time.Sleep(time.Duration(l))
	return ctx.Err()
}

// childRewrap runs in the child process: a re-wrap that prints its
// progress until it is killed.
func childRewrap(storePath, kekPath string) int {
	ctx := context.Background()
	st, err := OpenBolt(storePath, BoltOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	p, err := openSoftKEK(ctx, kekPath, false)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	m, _ := NewManager(Config{Store: st, KEK: p})
	w := bufio.NewWriter(os.Stdout)
	_, err = m.Rewrap(ctx, RewrapOptions{Limiter: sleepLimiter(5 * time.Millisecond), Progress: func(done, total int) {
		fmt.Fprintf(w, "done %d\n", done)
		w.Flush()
	}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestRewrapSurvivesKill re-wraps in a child process, SIGKILLs it half
// way, and checks that every key still opens, then that a second run
// finishes the job: the work list is recomputed from the records, so
// there is nothing to recover.
func TestRewrapSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a child process; skipped with -short")
	}
	ctx := context.Background()
	dir := t.TempDir()
	storePath, kekPath := filepath.Join(dir, "keys.db"), filepath.Join(dir, "kek.json")
	st, err := OpenBolt(storePath, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := openSoftKEK(ctx, kekPath, true)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := NewManager(Config{Store: st, KEK: p})
	const n = 40
	deks := map[string][]byte{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("k%d", i)
		if _, err := m.Create(ctx, name, 0, false); err != nil {
			t.Fatal(err)
		}
		d, err := m.Unwrap(ctx, name, 1)
		if err != nil {
			t.Fatal(err)
		}
		deks[name] = d
	}
	if _, err := m.RotateKEK(ctx); err != nil {
		t.Fatal(err)
	}
	p.Close()

	cmd := childCmd(t, "rewrap", storePath)
	cmd.Env = append(cmd.Env, "KEYSTORE_TEST_KEK="+kekPath)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if sc.Text() == "done 15" {
			break
		}
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	if strings.TrimSpace(stderr.String()) != "" {
		t.Fatalf("child: %s", stderr.String())
	}

	p, err = openSoftKEK(ctx, kekPath, false)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	m, _ = NewManager(Config{Store: st, KEK: p})
	check := func(wantKEK uint32) {
		t.Helper()
		for name, want := range deks {
			got, err := m.Unwrap(ctx, name, 1)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s after the kill: %v", name, err)
			}
			if wantKEK != 0 {
				k, _ := st.Get(ctx, name)
				if k.Versions[0].KEKVersion != wantKEK {
					t.Fatalf("%s under KEK v%d, want v%d", name, k.Versions[0].KEKVersion, wantKEK)
				}
			}
		}
	}
	check(0)
	_, pending, err := m.RewrapPending(ctx)
	if err != nil || pending == 0 || pending >= n-14 {
		t.Fatalf("pending after the kill = %d (%v); want some but not all of %d left", pending, err, n)
	}
	res, err := m.Rewrap(ctx, RewrapOptions{})
	if err != nil || res.Rewrapped != pending {
		t.Fatalf("second run: %+v, %v", res, err)
	}
	check(2)
}
