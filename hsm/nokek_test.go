package hsm_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/sidecrypt/sidecrypt/hsm"
)

// TestSoftwareNoKEKYet: without Create, a missing key file (or its
// directory) is ErrNoKEK, and still ErrUnavailable, so that the CLI can
// say how to make the first KEK.
func TestSoftwareNoKEKYet(t *testing.T) {
	dir := t.TempDir()
	for _, file := range []string{filepath.Join(dir, "kek.json"), filepath.Join(dir, "missing", "kek.json")} {
		_, err := hsm.Open(t.Context(), "software", hsm.Options{KEKFile: file, Passphrase: "p"})
		if !errors.Is(err, hsm.ErrNoKEK) || !errors.Is(err, hsm.ErrUnavailable) {
			t.Errorf("%s: %v", file, err)
		}
	}
}
