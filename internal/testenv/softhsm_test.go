package testenv

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	code := m.Run()
	CleanupSoftHSM()
	os.Exit(code)
}

func TestUseSoftHSM(t *testing.T) {
	s := UseSoftHSM(t)
	if got := os.Getenv("SOFTHSM2_CONF"); got != s.Conf {
		t.Fatalf("SOFTHSM2_CONF = %q; want %q", got, s.Conf)
	}
	conf, err := os.ReadFile(s.Conf)
	if err != nil || !strings.Contains(string(conf), "directories.tokendir = "+s.TokenDir) {
		t.Fatalf("config %q (%v) does not point at %s", conf, err, s.TokenDir)
	}
	if again := UseSoftHSM(t); again != s {
		t.Error("a second call made a second configuration; SoftHSM2 reads only one per process")
	}

	tok := s.InitToken(t, "Test/Name with spaces and a very long tail")
	if len(tok.Label) > 32 || strings.ContainsAny(tok.Label, " /") {
		t.Errorf("label %q: want at most 32 bytes of [A-Za-z0-9-]", tok.Label)
	}
	other := s.InitToken(t, "Test/Name with spaces and a very long tail")
	if other.Label == tok.Label || other.PIN == tok.PIN {
		t.Error("two tokens share a label or PIN")
	}
	out := Run(t, 30*time.Second, []string{"SOFTHSM2_CONF=" + s.Conf}, s.Util, "--show-slots")
	if !strings.Contains(out, tok.Label) || !strings.Contains(out, other.Label) {
		t.Fatalf("softhsm2-util --show-slots does not list the new tokens:\n%s", out)
	}
	pin, err := os.ReadFile(tok.PINFile)
	if err != nil || strings.TrimSpace(string(pin)) != tok.PIN {
		t.Errorf("PIN file holds %q (%v)", pin, err)
	}
	if st, _ := os.Stat(tok.PINFile); st.Mode().Perm() != 0o600 {
		t.Errorf("PIN file mode %v; want 0600", st.Mode().Perm())
	}

	uri := tok.URI("app", "wrap-mechanism=kw")
	want := "pkcs11:token=" + tok.Label + ";object=app?module-path=" + s.Module + "&wrap-mechanism=kw"
	if uri != want {
		t.Errorf("URI = %q; want %q", uri, want)
	}
	if strings.Contains(uri, tok.PIN) {
		t.Error("URI contains the PIN")
	}

	tok.Delete()
	out = Run(t, 30*time.Second, []string{"SOFTHSM2_CONF=" + s.Conf}, s.Util, "--show-slots")
	if strings.Contains(out, tok.Label) {
		t.Errorf("token %s still listed after Delete", tok.Label)
	}
}
