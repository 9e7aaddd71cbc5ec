package rules

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"
)

// FuzzCompile: Compile never panics; an accepted file yields a complete,
// deterministic plan whose every route can be matched; a refused one
// always says why with at least one error diagnostic.
func FuzzCompile(f *testing.F) {
	files, _ := filepath.Glob("testdata/golden/*.txtar")
	for _, file := range files {
		ar, err := txtar.ParseFile(file)
		if err != nil {
			continue
		}
		for _, af := range ar.Files {
			if af.Name == "rules.yaml" {
				f.Add(af.Data)
			}
		}
	}
	examples, _ := filepath.Glob("../examples/rules/*.yaml")
	for _, e := range examples {
		if data, err := os.ReadFile(e); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		plan, diags, err := Compile("fuzz.yaml", data)
		errs, _ := CountDiagnostics(diags)
		for _, d := range diags {
			if d.Message == "" || (d.Severity != SeverityError && d.Severity != SeverityWarning) {
				t.Fatalf("malformed diagnostic %+v", d)
			}
		}
		if err != nil {
			if plan != nil || errs == 0 {
				t.Fatalf("refused with plan=%v and %d errors: %v", plan != nil, errs, err)
			}
			return
		}
		if errs != 0 || plan == nil || plan.Decryptor == nil {
			t.Fatalf("accepted with %d errors", errs)
		}
		if (plan.Version == 2) != (plan.Schema != nil && plan.Profile != nil) || plan.Version == 2 && len(plan.Routes) > 0 {
			t.Fatalf("version %d plan with schema %v, profile %v, %d routes", plan.Version, plan.Schema != nil, plan.Profile != nil, len(plan.Routes))
		}
		for _, r := range plan.Routes {
			if (len(r.Fields) > 0) != r.HasBodyRules() || len(r.ContentTypes) == 0 {
				t.Fatalf("route %q incomplete", r.Name)
			}
			for _, m := range r.Methods {
				for _, p := range r.Paths {
					// A path with no wildcard must meet its own route (or
					// an earlier one).
					if !strings.Contains(p, "*") && m != "*" && len(r.Hosts) == 0 && plan.Match(Request{Method: m, Path: p}) == nil {
						t.Fatalf("%s %s matches no route, though route %q names it", m, p, r.Name)
					}
				}
			}
		}
		again, _, err := Compile("fuzz.yaml", data)
		if err != nil || again.Describe() != plan.Describe() {
			t.Fatal("compiling the same file twice gave different plans")
		}
	})
}
