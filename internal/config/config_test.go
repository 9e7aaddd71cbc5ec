package config

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaults(t *testing.T) {
	c, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:8080" || c.AdminListen != "127.0.0.1:8081" || c.HSM != "software" ||
		c.CacheTTL != 5*time.Minute || c.CacheSize != 1000 || c.MaxBody != 16<<20 || c.MaxDepth != 512 {
		t.Fatalf("defaults: %+v", c)
	}
	// Files default next to the keystore.
	if c.KEKFile != filepath.Join("sidecrypt-data", "kek.json") || c.AuditLog != filepath.Join("sidecrypt-data", "audit.log") || c.CADir != filepath.Join("sidecrypt-data", "ca") {
		t.Fatalf("derived paths: %s %s %s", c.KEKFile, c.AuditLog, c.CADir)
	}
	if !c.AdminIsLoopback() {
		t.Fatal("the default admin listener must be loopback")
	}
}

func TestEnvironment(t *testing.T) {
	c, err := Load([]string{
		"SIDECRYPT_LISTEN=0.0.0.0:9000", "SIDECRYPT_KEYSTORE=/var/lib/sc/keys.db", "SIDECRYPT_MAX_BODY=2MiB",
		"SIDECRYPT_CACHE_TTL=90s", "SIDECRYPT_ADMIN_LISTEN=10.0.0.5:8081", "UNRELATED=1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "0.0.0.0:9000" || c.MaxBody != 2<<20 || c.CacheTTL != 90*time.Second || c.AuditLog != "/var/lib/sc/audit.log" {
		t.Fatalf("%+v", c)
	}
	if c.AdminIsLoopback() {
		t.Fatal("10.0.0.5 is not loopback")
	}
}

func TestSecretsFromFiles(t *testing.T) {
	dir := t.TempDir()
	pin := filepath.Join(dir, "pin")
	os.WriteFile(pin, []byte("1234\n"), 0o600)
	c, err := Load([]string{"SIDECRYPT_HSM_PIN_FILE=" + pin, "SIDECRYPT_ADMIN_TOKEN=tok"})
	if err != nil {
		t.Fatal(err)
	}
	if c.HSMPIN.Reveal() != "1234" || c.AdminToken.Reveal() != "tok" {
		t.Fatalf("pin %q token %q", c.HSMPIN.Reveal(), c.AdminToken.Reveal())
	}
	// A secret never prints, whatever the verb.
	for _, s := range []string{fmt.Sprint(c.HSMPIN), fmt.Sprintf("%v %+v %#v %s", c.AdminToken, c, c, c.HSMPIN)} {
		// The PIN file's directory is taken out first: its name ends in
		// random digits, which hold "1234" about 1 run in 1,500.
		s = strings.ReplaceAll(s, dir, "DIR")
		if strings.Contains(s, "1234") || strings.Contains(s, "tok\"") || strings.Contains(s, " tok ") {
			t.Fatalf("secret printed: %s", s)
		}
	}
	if _, err := Load([]string{"SIDECRYPT_HSM_PIN_FILE=" + pin, "SIDECRYPT_HSM_PIN=5678"}); err == nil || !strings.Contains(err.Error(), "set one") {
		t.Fatalf("both the value and the file: %v", err)
	}
	if _, err := Load([]string{"SIDECRYPT_HSM_PIN_FILE=" + filepath.Join(dir, "missing")}); err == nil {
		t.Fatal("a missing secret file was accepted")
	}
}

func TestValidate(t *testing.T) {
	for _, bad := range [][]string{
		{"SIDECRYPT_LISTEN=8080"},
		{"SIDECRYPT_CACHE_TTL=0s"},
		{"SIDECRYPT_CACHE_SIZE=0"},
		{"SIDECRYPT_MAX_BODY=10"},
		{"SIDECRYPT_MAX_DEPTH=0"},
		{"SIDECRYPT_LOG_FORMAT=xml"},
		{"SIDECRYPT_LOG_LEVEL=loud"},
		{"SIDECRYPT_UPSTREAM_TRANSPORT=fast"},
		{"SIDECRYPT_ENGINE=nginx"},
		{"SIDECRYPT_MAX_BODY=lots"},
		{"SIDECRYPT_CACHE_TTL=soon"},
	} {
		if _, err := Load(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if _, err := Load([]string{"SIDECRYPT_ADMIN_LISTEN=off"}); err != nil {
		t.Fatalf("admin off: %v", err)
	}
	for _, v := range []string{"direct", "standard"} {
		if c, err := Load([]string{"SIDECRYPT_UPSTREAM_TRANSPORT=" + v}); err != nil || c.UpstreamTransport != v {
			t.Fatalf("SIDECRYPT_UPSTREAM_TRANSPORT=%s: %+v, %v", v, c, err)
		}
	}
	for _, v := range []string{"nethttp", "fasthttp"} {
		if c, err := Load([]string{"SIDECRYPT_ENGINE=" + v}); err != nil || c.Engine != v {
			t.Fatalf("SIDECRYPT_ENGINE=%s: %+v, %v", v, c, err)
		}
	}
	// Empty: the mode's default (fasthttp in reverse mode, proxy.Config).
	if c, err := Load(nil); err != nil || c.Engine != "" {
		t.Fatalf("default engine: %+v, %v", c, err)
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int64{"1048576": 1 << 20, "512KiB": 512 << 10, "16MiB": 16 << 20, "1GiB": 1 << 30, "2MB": 2 << 20, "7B": 7} {
		var b ByteSize
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("%q: %d %v, want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5MiB", "MiB", "99999999999GiB"} {
		var b ByteSize
		if err := b.Set(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
	b := ByteSize(16 << 20)
	if b.String() != "16MiB" {
		t.Errorf("String: %s", b.String())
	}
}

func TestFlagsOverrideEnvironment(t *testing.T) {
	c, err := Load([]string{"SIDECRYPT_LISTEN=127.0.0.1:1111"})
	if err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	c.BindFlags(fs)
	if err := fs.Parse([]string{"--listen", "127.0.0.1:2222", "--max-body", "1MiB"}); err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:2222" || c.MaxBody != 1<<20 {
		t.Fatalf("%s %v", c.Listen, c.MaxBody)
	}
	// No flag for a secret.
	for _, name := range []string{"hsm-pin", "admin-token", "master-passphrase", "pin", "token", "passphrase"} {
		if fs.Lookup(name) != nil {
			t.Errorf("a flag exposes the secret %q", name)
		}
	}
}
