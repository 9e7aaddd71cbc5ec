package rules

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden with the current output")

// TestGolden compiles testdata/golden/*.txtar: each holds a rule file
// ("rules.yaml") and the expected output ("want"): every diagnostic in
// order, then the compiled plan when the file is valid. Run
// `go test ./rules -run TestGolden -update` after an intended change and
// review the diff.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/golden/*.txtar")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden files")
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".txtar")
		t.Run(name, func(t *testing.T) {
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var src []byte
			wantIdx := -1
			for i, f := range ar.Files {
				switch f.Name {
				case "rules.yaml":
					src = f.Data
				case "want":
					wantIdx = i
				}
			}
			if src == nil {
				t.Fatalf("%s: no rules.yaml section", file)
			}
			got := goldenOutput(src)
			if *update {
				if wantIdx < 0 {
					ar.Files = append(ar.Files, txtar.File{Name: "want"})
					wantIdx = len(ar.Files) - 1
				}
				ar.Files[wantIdx].Data = []byte(got)
				if err := os.WriteFile(file, txtar.Format(ar), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if wantIdx < 0 {
				t.Fatalf("%s: no want section (run with -update)", file)
			}
			if want := string(ar.Files[wantIdx].Data); got != want {
				t.Errorf("output differs from %s (run with -update if intended)\n--- got\n%s\n--- want\n%s", file, got, want)
			}
		})
	}
}

func goldenOutput(src []byte) string {
	plan, diags, err := Compile("rules.yaml", src)
	var b strings.Builder
	for _, d := range diags {
		b.WriteString(d.String())
		b.WriteByte('\n')
	}
	if err != nil {
		errs, _ := CountDiagnostics(diags)
		if errs == 0 {
			b.WriteString("unexpected: refused without an error diagnostic: " + err.Error() + "\n")
		}
		b.WriteString("refused\n")
		return b.String()
	}
	b.WriteString("plan:\n")
	// The hash changes with every edit of the case; the plan is what
	// matters here, and the hash is tested on its own.
	b.WriteString(strings.Replace(plan.Describe(), plan.Hash, "sha256:…", 1))
	return b.String()
}
