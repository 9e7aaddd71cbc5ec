package doctest

import (
	"bytes"
	"fmt"

	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/sidecrypt/sidecrypt/internal/config"
	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

// dockerBuildCommand returns the command of the Dockerfile's RUN line that
// builds sidecrypt.
func dockerBuildCommand() (string, error) {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "Dockerfile"))
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if cmd, ok := strings.CutPrefix(l, "RUN "); ok && strings.Contains(cmd, "go build") {
			return cmd, nil
		}
	}
	return "", fmt.Errorf("Dockerfile: no RUN line with go build")
}

// TestDockerfile checks the image's shape (multi-stage, cgo, non-root)
// and its run-time choices: the proxy on every address of the container
// and EXPOSEd, the admin listener on its loopback, and a HEALTHCHECK that
// works against a sidecar started with the image's environment. (Its
// build command built the binary every test here uses: TestMain.)
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(data), "\\\n", " ")
	env := map[string]string{}
	var froms, users, exposes, health []string
	for _, l := range strings.Split(text, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch f[0] {
		case "FROM":
			froms = append(froms, l)
		case "USER":
			users = append(users, f[1])
		case "EXPOSE":
			exposes = append(exposes, f[1:]...)
		case "HEALTHCHECK":
			health = f
		case "ENV":
			for _, kv := range f[1:] {
				if k, v, ok := strings.Cut(kv, "="); ok {
					env[k] = v
				}
			}
		}
	}
	if len(froms) != 2 || !strings.Contains(text, "CGO_ENABLED=1 go build") {
		t.Errorf("want a two-stage cgo build: %q", froms)
	}
	if len(users) != 1 || strings.HasPrefix(users[0], "0") || strings.HasPrefix(users[0], "root") {
		t.Errorf("the image must run as a non-root user: USER %q", users)
	}
	if env["SIDECRYPT_LISTEN"] != "0.0.0.0:8080" || len(exposes) != 1 || exposes[0] != "8080" {
		t.Errorf("EXPOSE %q with SIDECRYPT_LISTEN=%q: the exposed port must be the one the proxy listens on, on every address", exposes, env["SIDECRYPT_LISTEN"])
	}
	if env["SIDECRYPT_ADMIN_LISTEN"] != "127.0.0.1:8081" {
		t.Errorf("SIDECRYPT_ADMIN_LISTEN=%q: keep the admin listener on the container's loopback by default", env["SIDECRYPT_ADMIN_LISTEN"])
	}
	i := slices.Index(health, "CMD")
	if i < 0 || !strings.Contains(strings.Join(health[i+1:], " "), `"/usr/local/bin/sidecrypt", "healthcheck"`) {
		t.Fatalf("HEALTHCHECK %q", health)
	}

	// A sidecar with the image's environment (ports made free), and the
	// healthcheck against it.
	dir := t.TempDir()
	rulesFile := filepath.Join(dir, "rules.yaml")
	os.WriteFile(rulesFile, []byte("version: 2\ndatastore: couchdb\ncollections:\n  - name: clinic\n    fields:\n      ssn: {key: pii}\n"), 0o644)
	proxyPort := strings.TrimPrefix(testenv.FreeAddr(t), "127.0.0.1:")
	admin := testenv.FreeAddr(t)
	runEnv := append(os.Environ(), "SIDECRYPT_LISTEN=0.0.0.0:"+proxyPort, "SIDECRYPT_ADMIN_LISTEN="+admin,
		"SIDECRYPT_KEYSTORE="+filepath.Join(dir, "data", "keys.db"), "SIDECRYPT_LOG_FORMAT=json", "SIDECRYPT_HSM=software",
		"SIDECRYPT_MASTER_PASSPHRASE=doctest", "SIDECRYPT_RULES="+rulesFile, "SIDECRYPT_UPSTREAM=http://"+testenv.FreeAddr(t))
	check := func() (string, error) {
		cmd := exec.Command(sidecryptBin, "healthcheck")
		cmd.Env = runEnv
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := check(); err == nil {
		t.Fatalf("healthcheck passed with no sidecar: %s", out)
	}
	cmd := exec.Command(sidecryptBin, "serve")
	cmd.Env = runEnv
	p := testenv.Start(t, "sidecrypt serve", cmd)
	testenv.WaitHTTP(t, p, "http://"+admin+"/healthz", 60*time.Second)
	if out, err := check(); err != nil || !strings.Contains(out, "/healthz: 200 OK") {
		t.Fatalf("healthcheck: %v\n%s", err, out)
	}
}

// The deployment examples in examples/deploy (docs/DEPLOY.md shows them
// whole, and TestDocs checks that it shows them as they are).

// TestSystemdUnit: the unit passes systemd-analyze verify, which needs no
// running systemd, with ExecStart pointed at a real sidecrypt binary (it
// checks that the command exists). Any message is a failure: verify
// reports a comment after a value, an unknown setting or a bad time as a
// warning only.
func TestSystemdUnit(t *testing.T) {
	analyze, ok := testenv.LookPath("systemd-analyze")
	if !ok {
		testenv.Missing(t, "systemd-analyze", "apt-get install systemd")
	}
	unit, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "examples/deploy/sidecrypt.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(unit, []byte("ExecStart=/usr/local/bin/sidecrypt serve\n")) {
		t.Fatal("the unit's ExecStart is not /usr/local/bin/sidecrypt serve")
	}
	unit = bytes.ReplaceAll(unit, []byte("/usr/local/bin/sidecrypt"), []byte(sidecryptBin))
	path := filepath.Join(t.TempDir(), "sidecrypt.service")
	if err := os.WriteFile(path, unit, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// And the env file holds only settings sidecrypt knows, no secret.
	env, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "examples/deploy/sidecrypt.env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(env), "\n") {
		k, _, ok := strings.Cut(l, "=")
		if !ok || strings.HasPrefix(l, "#") {
			continue
		}
		for _, secret := range []string{"SIDECRYPT_HSM_PIN", "SIDECRYPT_MASTER_PASSPHRASE", "SIDECRYPT_ADMIN_TOKEN"} {
			if k == secret {
				t.Errorf("sidecrypt.env holds the secret %s: use %s_FILE", k, k)
			}
		}
	}
}

// manifests decodes examples/deploy/kubernetes.yaml strictly into the
// Kubernetes API types: an unknown or misspelt field, or a value of the
// wrong type, fails, as the API server's strict field validation would.
func manifests(t *testing.T) (*appsv1.Deployment, *corev1.PersistentVolumeClaim) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "examples/deploy/kubernetes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var dep *appsv1.Deployment
	var pvc *corev1.PersistentVolumeClaim
	for i, doc := range bytes.Split(data, []byte("\n---\n")) {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		var into any
		switch head.APIVersion + " " + head.Kind {
		case "apps/v1 Deployment":
			dep = &appsv1.Deployment{}
			into = dep
		case "v1 PersistentVolumeClaim":
			pvc = &corev1.PersistentVolumeClaim{}
			into = pvc
		default:
			t.Fatalf("document %d: unexpected %s %s", i, head.APIVersion, head.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, into); err != nil {
			t.Fatalf("document %d (%s): %v", i, head.Kind, err)
		}
	}
	if dep == nil || pvc == nil {
		t.Fatal("want a Deployment and a PersistentVolumeClaim")
	}
	return dep, pvc
}

// TestKubernetesManifest checks what the API types cannot: the choices
// docs/DEPLOY.md explains.
func TestKubernetesManifest(t *testing.T) {
	dep, pvc := manifests(t)
	spec := dep.Spec.Template.Spec
	rwo := len(pvc.Spec.AccessModes) == 1 && pvc.Spec.AccessModes[0] == corev1.ReadWriteOnce
	if rwo && dep.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Error("a ReadWriteOnce keystore volume needs strategy Recreate: a rolling update starts the new pod while the old one holds the volume")
	}
	if rwo && (dep.Spec.Replicas == nil || *dep.Spec.Replicas != 1) {
		t.Error("one embedded keystore file, one replica")
	}
	sc := spec.SecurityContext
	if sc == nil || sc.FSGroup == nil || sc.FSGroupChangePolicy == nil || *sc.FSGroupChangePolicy != corev1.FSGroupChangeOnRootMismatch {
		t.Error("fsGroup without fsGroupChangePolicy: OnRootMismatch makes keys.db group-readable at every start (TestKubeletFSGroup)")
	}
	var side *corev1.Container
	for i := range spec.Containers {
		if spec.Containers[i].Name == "sidecrypt" {
			side = &spec.Containers[i]
		}
	}
	if side == nil {
		t.Fatal("no sidecrypt container")
	}
	env := map[string]string{}
	for _, e := range side.Env {
		env[e.Name] = e.Value
	}
	if env["SIDECRYPT_LISTEN"] != "127.0.0.1:8080" {
		t.Error("the proxy port must stay on the pod's loopback")
	}
	if limit, ok := side.Resources.Limits[corev1.ResourceMemory]; ok && env["GOMEMLIMIT"] == "" {
		t.Errorf("a memory limit (%s) with GOGC 400 wants GOMEMLIMIT", limit.String())
	}
	if spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds <= 30 {
		t.Error("terminationGracePeriodSeconds must exceed SIDECRYPT_SHUTDOWN_TIMEOUT (30s)")
	}
	for _, m := range side.VolumeMounts {
		if m.MountPath == filepath.Dir(env["SIDECRYPT_RULES"]) && !m.ReadOnly {
			t.Error("the rules mount is read-only in the docs")
		}
	}
	for _, p := range []*corev1.Probe{side.LivenessProbe, side.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.String() != "admin" {
			t.Error("probes go to the admin port")
		}
	}
}

// kubelet does to dir what the kubelet does to a volume with fsGroup
// (pkg/volume/volume_linux.go, SetVolumeOwnership): every file and
// directory gets group gid and group rw (directories also x and setgid).
// With policy OnRootMismatch it does nothing when the root already has
// that group and those bits.
func kubelet(t *testing.T, dir string, gid int, policy corev1.PodFSGroupChangePolicy) {
	t.Helper()
	const rw, x = 0o060, 0o010
	if policy == corev1.FSGroupChangeOnRootMismatch {
		st, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if statGID(st) == gid && st.Mode().Perm()&(rw|x) == rw|x && st.Mode()&os.ModeSetgid != 0 {
			return
		}
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		if err := os.Lchown(p, -1, gid); err != nil {
			return err
		}
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		mode := st.Mode() | rw
		if d.IsDir() {
			mode |= x | os.ModeSetgid
		}
		return os.Chmod(p, mode)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestKubeletFSGroup reproduces, on a directory, what happens to the
// keystore volume over a pod's first start and a restart: with the
// kubelet's default policy (Always) the restart makes keys.db 0660 and
// sidecrypt refuses it; with the manifest's policy (OnRootMismatch) the
// restart leaves the files alone and sidecrypt starts.
func TestKubeletFSGroup(t *testing.T) {
	dep, _ := manifests(t)
	policy := *dep.Spec.Template.Spec.SecurityContext.FSGroupChangePolicy
	gid := os.Getgid() // a group this user may chgrp to, root or not
	for _, tc := range []struct {
		policy  corev1.PodFSGroupChangePolicy
		refused bool
	}{
		{corev1.FSGroupChangeAlways, true},
		{policy, false},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			vol := filepath.Join(t.TempDir(), "sidecrypt")
			if err := os.Mkdir(vol, 0o755); err != nil {
				t.Fatal(err)
			}
			env := append(os.Environ(), "SIDECRYPT_KEYSTORE="+filepath.Join(vol, "keys.db"),
				"SIDECRYPT_HSM=software", "SIDECRYPT_MASTER_PASSPHRASE=doctest", "SIDECRYPT_ADMIN_SOCKET=off")
			run := func(args ...string) (string, error) {
				cmd := exec.Command(sidecryptBin, args...)
				cmd.Env = env
				out, err := cmd.CombinedOutput()
				return string(out), err
			}
			kubelet(t, vol, gid, tc.policy) // first start: an empty volume
			if out, err := run("keys", "create", "pii"); err != nil {
				t.Fatalf("first start: %v\n%s", err, out)
			}
			kubelet(t, vol, gid, tc.policy) // the pod restarts
			out, err := run("keys", "list")
			if tc.refused {
				if err == nil || !strings.Contains(out, "mode 0660") {
					t.Fatalf("with policy Always the restarted keystore should be refused as 0660; got %v\n%s%s", err, out, ls(vol))
				}
				return
			}
			if err != nil || !strings.Contains(out, "pii") {
				t.Fatalf("with policy %s sidecrypt does not start after a restart: %v\n%s%s", tc.policy, err, out, ls(vol))
			}
		})
	}
}

func ls(dir string) string {
	var b strings.Builder
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			if st, err := os.Stat(p); err == nil {
				fmt.Fprintf(&b, "%s %s\n", st.Mode(), p)
			}
		}
		return nil
	})
	return b.String()
}

// TestReadmeListsEverySetting: the README's settings table names every
// SIDECRYPT_ variable internal/config reads (X_FILE on the line of X, or a
// sibling written `_X`).
func TestReadmeListsEverySetting(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	ct := reflect.TypeOf(config.Config{})
	for i := 0; i < ct.NumField(); i++ {
		name := ct.Field(i).Tag.Get("env")
		if name == "" {
			continue
		}
		found := false
		for _, l := range strings.Split(string(readme), "\n") {
			if !strings.HasPrefix(l, "| `SIDECRYPT_") {
				continue
			}
			base, isFile := strings.CutSuffix(name, "_FILE")
			if strings.Contains(l, "`"+config.Prefix+name+"`") || strings.Contains(l, "`_"+name+"`") ||
				(isFile && strings.Contains(l, "`"+config.Prefix+base+"`") && strings.Contains(l, "`_FILE`")) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("README.md's settings table lacks %s%s", config.Prefix, name)
		}
	}
}
