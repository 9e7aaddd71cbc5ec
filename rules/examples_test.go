package rules

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestExampleRuleFiles: the shipped examples (the demo uses clinic.yaml)
// must compile; only the read-only research example may warn (its keys
// are written by another sidecar).
func TestExampleRuleFiles(t *testing.T) {
	files, err := filepath.Glob("../examples/rules/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, diags, err := LoadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(diags) > 0 && !strings.Contains(f, "research") {
				t.Errorf("warnings: %v", diags)
			}
		})
	}
}
