package testenv

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// local-kms in tests
//
// StartLocalKMS runs local-kms (github.com/nsmithuk/local-kms), the AWS
// KMS emulator written in Go, on a free loopback port with its database in
// t.TempDir(), and stops it when the test ends. scripts/deps.sh builds it
// from the Go module proxy into .deps/bin (`go install`), so a fresh clone
// needs nothing else. It implements the KMS JSON API the awskms provider
// uses: symmetric keys with encryption contexts, HMAC keys
// (GenerateMac/VerifyMac), ECC signing keys (Sign/GetPublicKey), aliases,
// tags, DisableKey and ScheduleKeyDeletion. It checks no credentials and
// no IAM policy: the tests sign their requests with dummy keys.

// LocalKMSPath returns the local-kms binary: SIDECRYPT_TEST_LOCAL_KMS,
// .deps/bin/local-kms (scripts/deps.sh), or local-kms on PATH.
func LocalKMSPath() (string, bool) {
	if p := os.Getenv("SIDECRYPT_TEST_LOCAL_KMS"); p != "" {
		return p, true
	}
	p := filepath.Join(RepoRoot(), ".deps", "bin", "local-kms")
	if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
		return p, true
	}
	return LookPath("local-kms")
}

// LocalKMSRegion is the region the emulator is started with; ARNs name it.
const LocalKMSRegion = "eu-west-1"

// LocalKMSAccount is the emulator's dummy AWS account id.
const LocalKMSAccount = "111122223333"

// LocalKMS is a running local-kms.
type LocalKMS struct {
	// Endpoint is http://127.0.0.1:PORT, the URI's endpoint= value.
	Endpoint string
	Region   string
	DataDir  string
	Proc     *Process
}

// Env returns the environment a client (the sidecrypt binary, or this
// process through SetEnv) needs: dummy static credentials, which the
// standard AWS credential chain finds first, so it never goes looking
// elsewhere (the instance metadata service is switched off too, and no
// shared config or credentials file is read).
func (k *LocalKMS) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=AKIDSIDECRYPTTEST",
		"AWS_SECRET_ACCESS_KEY=sidecrypt-test-not-a-secret",
		"AWS_SESSION_TOKEN=",
		"AWS_REGION=" + k.Region,
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + filepath.Join(k.DataDir, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(k.DataDir, "no-aws-credentials"),
		"AWS_PROFILE=",
	}
}

// SetEnv sets Env in this process for the rest of t (t.Setenv: not for
// parallel tests).
func (k *LocalKMS) SetEnv(t testing.TB) {
	t.Helper()
	for _, kv := range k.Env() {
		name, value, _ := strings.Cut(kv, "=")
		t.Setenv(name, value)
	}
}

// URI returns an awskms: provider URI for alias prefix alias (without
// "alias/") on this emulator.
func (k *LocalKMS) URI(alias string) string {
	return "awskms:///alias/" + alias + "?region=" + k.Region + "&endpoint=" + k.Endpoint
}

// StartLocalKMS starts local-kms on a free loopback port and waits until
// it answers.
func StartLocalKMS(t testing.TB) *LocalKMS {
	t.Helper()
	bin, ok := LocalKMSPath()
	if !ok {
		Missing(t, "local-kms (the AWS KMS emulator)", "scripts/deps.sh test, which builds it with go install")
	}
	dir := t.TempDir()
	var lastLog string
	for attempt := 0; attempt < 3; attempt++ {
		addr := FreeAddr(t)
		_, port, _ := net.SplitHostPort(addr)
		data := filepath.Join(dir, "data")
		cmd := exec.Command(bin)
		cmd.Dir = dir
		// local-kms listens on every interface of PORT; the port was
		// just free on loopback, and tests only ever dial loopback.
		cmd.Env = append(os.Environ(),
			"PORT="+port,
			"KMS_REGION="+LocalKMSRegion,
			"KMS_ACCOUNT_ID="+LocalKMSAccount,
			"KMS_DATA_PATH="+data,
			"KMS_SEED_PATH="+filepath.Join(dir, "no-seed.yaml"),
		)
		p := Start(t, "local-kms", cmd)
		k := &LocalKMS{Endpoint: "http://" + addr, Region: LocalKMSRegion, DataDir: dir, Proc: p}
		if waitTCP(p, addr, 30*time.Second) {
			return k
		}
		lastLog = p.Log.String()
		p.Stop()
	}
	t.Fatalf("testenv: local-kms did not start:\n%s", lastLog)
	return nil
}

// waitTCP waits until addr accepts connections, the process exits, or
// timeout passes.
func waitTCP(p *Process, addr string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.Exited() {
			return false
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}
