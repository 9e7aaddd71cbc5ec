package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

// sidecryptBin is the sidecrypt binary the tests run: built once by
// TestMain from the working tree (with the race detector when the tests
// run with it), or named by SIDECRYPT_TEST_BINARY.
var sidecryptBin string

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if testing.Short() {
		return m.Run() // every test here skips in -short mode
	}
	if bin := os.Getenv("SIDECRYPT_TEST_BINARY"); bin != "" {
		sidecryptBin = bin
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "sidecrypt-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "sidecrypt")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: the go command is needed to build sidecrypt:", err)
		return 1
	}
	cmd := exec.Command(goTool, append(args, "./cmd/sidecrypt")...)
	cmd.Dir = testenv.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/sidecrypt: %v\n%s", err, out)
		return 1
	}
	sidecryptBin = bin
	code := m.Run()
	testenv.CleanupSoftHSM()
	return code
}
