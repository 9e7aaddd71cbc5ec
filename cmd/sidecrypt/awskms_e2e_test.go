package main

// End-to-end tests of the awskms provider through the binary: `sidecrypt
// serve` with AWS KMS (local-kms) as its only KEK provider, and a keystore
// whose SoftHSM2 token is lost and recovered from its KMS escrow copies.

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

// kekStatus is one row of `kek list --json`.
type kekStatus struct {
	Version   uint32 `json:"version"`
	State     string `json:"state"`
	DEKs      int    `json:"deks"`
	Retirable bool   `json:"retirable"`
	Label     string `json:"label"`
}

func kekList(t *testing.T, s *sidecar) (kind string, keks []kekStatus) {
	t.Helper()
	var out struct {
		Provider struct {
			Kind string `json:"kind"`
		} `json:"provider"`
		KEKs []kekStatus `json:"keks"`
	}
	if err := json.Unmarshal([]byte(s.cli("kek", "list", "--json")), &out); err != nil {
		t.Fatal(err)
	}
	return out.Provider.Kind, out.KEKs
}

// readBack reads p-ann through the sidecar and checks its plaintext.
func readBack(t *testing.T, s *sidecar, what string) {
	t.Helper()
	got := mustCall(t, "GET", s.url+"/clinic/p-ann", "", 200)
	for _, want := range []string{`"ssn":"123-45-6789"`, `"diagnosis":"J45.909 asthma"`} {
		if !bytes.Contains(got, []byte(want)) {
			t.Fatalf("%s: read through the sidecar lacks %s:\n%s", what, want, got)
		}
	}
}

// checkCiphertext fails if a protected value reached the store.
func checkCiphertext(t *testing.T, dbURL, what string) {
	t.Helper()
	raw := mustCall(t, "GET", dbURL+"/clinic/_all_docs?include_docs=true", "", 200)
	for _, secret := range patientSecrets {
		if bytes.Contains(raw, []byte(secret)) {
			t.Fatalf("%s: plaintext %q reached the datastore", what, secret)
		}
	}
}

// TestServeAWSKMS: a sidecar whose only KEK provider is AWS KMS (local-kms):
// keys created through the admin API, a write and a read, `kek rotate`, the
// background re-wrap in the running sidecar, a read after a restart (the
// keys now unwrap under KEK v2), and the old KEK retired, which disables
// its KMS key.
func TestServeAWSKMS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts local-kms, pouchdb-server and the sidecar")
	}
	kms := testenv.StartLocalKMS(t)
	db := testenv.StartPouchDB(t)
	rulesFile := filepath.Join(testenv.RepoRoot(), "examples", "rules", "clinic.yaml")
	extra := append([]string{"SIDECRYPT_HSM=" + kms.URI("sidecrypt-e2e")}, kms.Env()...)
	s := newSidecar(t, db.URL, rulesFile, extra...)
	// No software KEK file may appear: KMS is the only provider.
	s.env = slices.DeleteFunc(s.env, func(kv string) bool { return strings.HasPrefix(kv, "SIDECRYPT_MASTER_PASSPHRASE=") })
	s.start()
	for _, k := range []string{"pii", "phi", "contact", "card"} {
		s.admin("POST", "/v1/keys", `{"name":"`+k+`"}`, http.StatusCreated)
	}
	mustCall(t, "PUT", s.url+"/clinic", "", 201)
	mustCall(t, "PUT", s.url+"/clinic/p-ann", patientAnn, 201)
	checkCiphertext(t, db.URL, "after PUT")
	readBack(t, s, "before rotation")
	if _, err := os.Stat(filepath.Join(s.dir, "data", "kek.json")); err == nil {
		t.Fatal("a software KEK file was created next to the keystore")
	}

	kind, keks := kekList(t, s)
	if kind != "awskms" || len(keks) != 1 || keks[0].State != "current" || keks[0].DEKs != 4 || !strings.Contains(keks[0].Label, "alias/sidecrypt-e2e-v1") {
		t.Fatalf("kek list before rotation: %s %+v", kind, keks)
	}
	if out := s.cli("kek", "rotate"); !strings.Contains(out, "KEK v2 is now current") {
		t.Fatalf("kek rotate: %s", out)
	}
	// The running sidecar re-wraps in the background when asked (asked
	// again while waiting: a pass may have read the aliases just before
	// the rotation, see awsListTTL).
	waitFor(t, "the background re-wrap under KEK v2", func() bool {
		s.admin("POST", "/v1/rewrap", "", http.StatusAccepted)
		var out struct {
			KEKs []kekStatus `json:"keks"`
		}
		_ = json.Unmarshal(s.admin("GET", "/v1/kek", "", 200), &out)
		k := out.KEKs
		if len(k) != 2 || k[0].DEKs != 0 || k[1].DEKs != 4 || !k[0].Retirable {
			time.Sleep(200 * time.Millisecond)
			return false
		}
		return true
	})
	readBack(t, s, "after the re-wrap")

	// A fresh process has nothing cached: every key it opens comes from
	// KMS, under v2.
	s.proc.Stop()
	s.cli("kek", "retire", "--version", "1")
	s.start()
	readBack(t, s, "after a restart with KEK v1 retired")
	mustCall(t, "PUT", s.url+"/clinic/p-bob", `{"type":"patient","name":"Bob Sample","ssn":"987-65-4321","email":"bob@example.org"}`, 201)
	checkCiphertext(t, db.URL, "after a write under KEK v2")
	_, keks = kekList(t, s)
	if keks[0].State != "retired" || keks[1].State != "current" {
		t.Fatalf("kek list after retire: %+v", keks)
	}
	// The audit log verifies, its checkpoints MAC'd by the KMS HMAC key.
	if out := s.cli("audit", "verify"); !strings.Contains(out, ": OK") {
		t.Errorf("audit verify: %s", out)
	}
}

// TestRecoverSoftHSMTokenFromKMSEscrow: the on-site token (SoftHSM2) is
// the primary and AWS KMS (local-kms) the escrow. Data is written through
// the sidecar; the token is deleted; `keys recover --from awskms` moves
// every key under a fresh token; the sidecar, restarted on it, reads the
// data written before.
func TestRecoverSoftHSMTokenFromKMSEscrow(t *testing.T) {
	if testing.Short() {
		t.Skip("starts local-kms, pouchdb-server, SoftHSM2 tokens and the sidecar")
	}
	softhsm := testenv.UseSoftHSM(t)
	lost := softhsm.InitToken(t, "onsite")
	fresh := softhsm.InitToken(t, "replacement")
	kms := testenv.StartLocalKMS(t)
	db := testenv.StartPouchDB(t)
	rulesFile := filepath.Join(testenv.RepoRoot(), "examples", "rules", "clinic.yaml")
	extra := append([]string{
		"SIDECRYPT_HSM=" + lost.URI("kek"),
		"SIDECRYPT_HSM_PIN=" + lost.PIN,
		"SIDECRYPT_HSM_ESCROW=" + kms.URI("sidecrypt-escrow"),
		"SOFTHSM2_CONF=" + softhsm.Conf,
	}, kms.Env()...)
	s := newSidecar(t, db.URL, rulesFile, extra...)
	s.start()
	for _, k := range []string{"pii", "phi", "contact", "card"} {
		s.admin("POST", "/v1/keys", `{"name":"`+k+`"}`, http.StatusCreated)
	}
	mustCall(t, "PUT", s.url+"/clinic", "", 201)
	mustCall(t, "PUT", s.url+"/clinic/p-ann", patientAnn, 201)
	checkCiphertext(t, db.URL, "after PUT")
	readBack(t, s, "before the loss")
	if out := s.cli("keys", "verify"); !strings.Contains(out, "4 of 4 version(s) have an escrow copy; 0 record(s) lack an escrow MAC") {
		t.Fatalf("keys verify before the loss:\n%s", out)
	}
	s.proc.Stop()

	// The escrow's own KEK rotates and retires like the primary's.
	if out, err := sidecarCLI(s, "kek", "escrow", "retire", "--version", "1"); err == nil || !strings.Contains(out, "current") {
		t.Fatalf("retiring the escrow's current KEK: %v\n%s", err, out)
	}
	if out := s.cli("kek", "escrow", "rotate"); !strings.Contains(out, "escrow KEK v2 is now current") {
		t.Fatalf("kek escrow rotate:\n%s", out)
	}
	if out, err := sidecarCLI(s, "kek", "escrow", "retire", "--version", "1"); err == nil || !strings.Contains(out, "still wraps 4 escrow copy") {
		t.Fatalf("retiring an escrow KEK still in use: %v\n%s", err, out)
	}
	s.cli("keys", "rewrap")
	var esc struct {
		Provider struct {
			Kind string `json:"kind"`
		} `json:"provider"`
		KEKs []kekStatus `json:"keks"`
	}
	if err := json.Unmarshal([]byte(s.cli("kek", "escrow", "list", "--json")), &esc); err != nil {
		t.Fatal(err)
	}
	if esc.Provider.Kind != "awskms" || len(esc.KEKs) != 2 || esc.KEKs[0].DEKs != 0 || esc.KEKs[1].DEKs != 4 || !esc.KEKs[0].Retirable {
		t.Fatalf("kek escrow list after the re-wrap: %+v", esc)
	}
	s.cli("kek", "escrow", "retire", "--version", "1")

	// The token is gone.
	lost.Delete()
	if out, err := sidecarCLI(s, "keys", "list"); err == nil {
		t.Fatalf("keys list works without the token:\n%s", out)
	}

	// The replacement token becomes the primary; the old audit log was
	// keyed by the lost token, so the recovery starts a new one.
	s.env = setEnv(s.env, "SIDECRYPT_HSM", fresh.URI("kek"))
	s.env = setEnv(s.env, "SIDECRYPT_HSM_PIN", fresh.PIN)
	s.env = setEnv(s.env, "SIDECRYPT_AUDIT_LOG", filepath.Join(s.dir, "data", "audit-after-recovery.log"))
	if out, err := sidecarCLI(s, "keys", "recover", "--from", "pkcs11", "--yes"); err == nil || !strings.Contains(out, "the escrow provider (SIDECRYPT_HSM_ESCROW) is awskms") {
		t.Fatalf("recover --from the wrong kind: %v\n%s", err, out)
	}
	plan := s.cli("keys", "recover", "--from", "awskms", "--dry-run")
	if !strings.Contains(plan, "4 key(s), 4 version(s)") {
		t.Fatalf("recover --dry-run:\n%s", plan)
	}
	out := s.cli("keys", "recover", "--from", "awskms", "--yes")
	if !strings.Contains(out, "recovered 4 version(s) of 4 key(s)") {
		t.Fatalf("keys recover:\n%s", out)
	}
	if out := s.cli("keys", "verify"); !strings.Contains(out, "OK: 4 key record(s)") {
		t.Errorf("keys verify after recovery:\n%s", out)
	}
	s.start()
	readBack(t, s, "after recovery onto the replacement token")
	mustCall(t, "PUT", s.url+"/clinic/p-bob", `{"type":"patient","name":"Bob Sample","ssn":"987-65-4321"}`, 201)
	checkCiphertext(t, db.URL, "after a write on the replacement token")
}

// sidecarCLI runs a sidecrypt command with the sidecar's environment and
// returns its combined output and error, for commands expected to fail.
func sidecarCLI(s *sidecar, args ...string) (string, error) {
	bin, _ := exec.LookPath("sidecrypt")
	cmd := exec.Command(bin, args...)
	cmd.Env = s.environ()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// setEnv replaces (or adds) NAME=value in env.
func setEnv(env []string, name, value string) []string {
	env = slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, name+"=") })
	return append(env, name+"="+value)
}
