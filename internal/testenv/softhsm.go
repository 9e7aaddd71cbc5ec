package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// SoftHSM2 in tests
//
// SoftHSM2 reads SOFTHSM2_CONF once per C_Initialize, and its token
// directory only then: a token created with softhsm2-util after the module
// was initialised in this process is invisible to it until the module is
// finalised and initialised again (checked by TestSoftHSMTokenVisibility).
// So this file keeps ONE configuration per test process, set in the
// environment before any test loads the module, and tests create the
// tokens they need before opening a provider on them. The hsm package
// finalises a module when its last provider closes, so sequential tests
// that each close their providers (t.Cleanup) can each make new tokens.

// SoftHSMModulePaths are where SoftHSM2's PKCS#11 library is looked for,
// after $SIDECRYPT_TEST_SOFTHSM_MODULE: Debian/Ubuntu first, then other
// distributions' and Homebrew's locations.
var SoftHSMModulePaths = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
	"/usr/lib/pkcs11/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
	"/opt/homebrew/lib/softhsm/libsofthsm2.so",
}

// SoftHSMModule returns the path of libsofthsm2.so.
func SoftHSMModule() (string, bool) {
	if p := os.Getenv("SIDECRYPT_TEST_SOFTHSM_MODULE"); p != "" {
		return p, true
	}
	for _, p := range SoftHSMModulePaths {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, true
		}
	}
	return "", false
}

// SoftHSM is this test process's SoftHSM2 set-up.
type SoftHSM struct {
	Module   string // libsofthsm2.so
	Util     string // softhsm2-util
	Conf     string // the SOFTHSM2_CONF file
	TokenDir string
}

var softhsm struct {
	once sync.Once
	s    *SoftHSM
	err  error
	dir  string
}

// UseSoftHSM returns the process-wide SoftHSM2 configuration, creating it
// (and setting SOFTHSM2_CONF for this process and its children) on first
// use. It skips or fails t through Missing when SoftHSM2 is not installed.
func UseSoftHSM(t testing.TB) *SoftHSM {
	t.Helper()
	module, ok := SoftHSMModule()
	if !ok {
		Missing(t, "SoftHSM2 PKCS#11 module (libsofthsm2.so)", "apt-get install softhsm2")
	}
	util, ok := LookPath("softhsm2-util")
	if !ok {
		Missing(t, "softhsm2-util", "apt-get install softhsm2")
	}
	softhsm.once.Do(func() {
		dir, err := os.MkdirTemp("", "sidecrypt-softhsm-")
		if err != nil {
			softhsm.err = err
			return
		}
		softhsm.dir = dir
		tokens := filepath.Join(dir, "tokens")
		if err := os.Mkdir(tokens, 0o700); err != nil {
			softhsm.err = err
			return
		}
		conf := filepath.Join(dir, "softhsm2.conf")
		// slots.removable=false: tokens behave like a fixed HSM.
		// log.level=ERROR keeps SoftHSM's syslog chatter down.
		body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\nslots.mechanisms = ALL\nlibrary.reset_on_fork = false\n", tokens)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			softhsm.err = err
			return
		}
		// Go's os.Setenv also updates the C environment when cgo is in
		// use, which is where SoftHSM's C_Initialize reads it.
		if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
			softhsm.err = err
			return
		}
		softhsm.s = &SoftHSM{Module: module, Util: util, Conf: conf, TokenDir: tokens}
	})
	if softhsm.err != nil {
		t.Fatalf("testenv: SoftHSM2 set-up: %v", softhsm.err)
	}
	return softhsm.s
}

// CleanupSoftHSM removes the process's SoftHSM2 directory. Call it from
// TestMain after m.Run in packages that use UseSoftHSM; tokens themselves
// are deleted when the test that made them ends.
func CleanupSoftHSM() {
	if softhsm.dir != "" {
		os.RemoveAll(softhsm.dir)
	}
}

// SoftHSMToken is an initialised token.
type SoftHSMToken struct {
	Label   string
	PIN     string // user PIN
	SOPIN   string
	PINFile string // file holding PIN, mode 0600, for pin-source
	Module  string
	hsm     *SoftHSM
}

var labelUnsafe = regexp.MustCompile(`[^A-Za-z0-9-]+`)

// InitToken initialises a fresh token with random PINs on the first free
// slot and deletes it when t ends. The label is derived from name and
// made unique; token labels hold at most 32 bytes.
//
// A provider already holding the module open will not see the new token
// (see the note at the top of this file): create tokens first.
func (s *SoftHSM) InitToken(t testing.TB, name string) *SoftHSMToken {
	t.Helper()
	suffix := randomHex(t, 4)
	base := labelUnsafe.ReplaceAllString(name, "-")
	if max := 32 - len(suffix) - 1; len(base) > max {
		base = base[:max]
	}
	tok := &SoftHSMToken{
		Label:  base + "-" + suffix,
		PIN:    randomHex(t, 8),
		SOPIN:  randomHex(t, 8),
		Module: s.Module,
		hsm:    s,
	}
	Run(t, 30*time.Second, []string{"SOFTHSM2_CONF=" + s.Conf}, s.Util,
		"--init-token", "--free", "--label", tok.Label, "--pin", tok.PIN, "--so-pin", tok.SOPIN)
	tok.PINFile = filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(tok.PINFile, []byte(tok.PIN+"\n"), 0o600); err != nil {
		t.Fatalf("testenv: write PIN file: %v", err)
	}
	t.Cleanup(tok.Delete)
	return tok
}

// Delete removes the token from the token directory.
func (tok *SoftHSMToken) Delete() {
	// softhsm2-util --delete-token fails if it is gone already; that is
	// fine, so run it directly instead of through Run.
	_ = runQuiet(30*time.Second, []string{"SOFTHSM2_CONF=" + tok.hsm.Conf}, tok.hsm.Util, "--delete-token", "--token", tok.Label)
}

// URI returns an RFC 7512 URI for this token with the given KEK label
// prefix (empty for the default) and extra query attributes
// ("wrap-mechanism=kw"). The PIN is not in it: pass PIN in hsm.Options,
// or add "pin-source="+tok.PINFile.
func (tok *SoftHSMToken) URI(object string, query ...string) string {
	path := "token=" + url.PathEscape(tok.Label)
	if object != "" {
		path += ";object=" + url.PathEscape(object)
	}
	q := append([]string{"module-path=" + tok.Module}, query...)
	return "pkcs11:" + path + "?" + strings.Join(q, "&")
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("testenv: random: %v", err)
	}
	return hex.EncodeToString(b)
}

// runQuiet runs a command with a timeout and reports only whether it
// worked.
func runQuiet(timeout time.Duration, env []string, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	return cmd.Run()
}
