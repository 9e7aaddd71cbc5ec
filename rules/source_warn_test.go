package rules

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
)

// TestReloadThatRemovesProtectionWarns: a reload whose diff has flagged
// changes (a field no longer protected) is logged at WARN, an ordinary one
// at INFO, so that an alert on WARN sees protection go away however the
// file changed (an edit on disk, a ConfigMap, etcd).
func TestReloadThatRemovesProtectionWarns(t *testing.T) {
	const both = `version: 1
routes:
  - name: w
    match: {methods: [POST], paths: ["/db"]}
    encrypt:
      - {fields: ["$.ssn", "$.name"], key: pii}
`
	const ssnOnly = `version: 1
routes:
  - name: w
    match: {methods: [POST], paths: ["/db"]}
    encrypt:
      - {fields: ["$.ssn"], key: pii}
`
	path := filepath.Join(t.TempDir(), "rules.yaml")
	writeFile(t, path, ssnOnly)
	var logBuf syncBuffer
	src, err := NewFileSource(path, FileSourceOptions{Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	writeFile(t, path, both) // adds protection: INFO
	if err := src.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if logs := logBuf.String(); !strings.Contains(logs, `level=INFO msg="rules: reloaded"`) || strings.Contains(logs, "level=WARN") {
		t.Fatalf("adding protection:\n%s", logs)
	}
	writeFile(t, path, ssnOnly) // removes $.name: WARN
	if err := src.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if logs := logBuf.String(); !strings.Contains(logs, `level=WARN msg="rules: reloaded, and the change removes or weakens protection"`) ||
		!strings.Contains(logs, "flagged=") {
		t.Fatalf("removing protection is not a WARN:\n%s", logs)
	}
}
