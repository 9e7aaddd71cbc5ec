package metrics

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/internal/audit"
)

// stringConsts returns the string constants whose names start with prefix
// in the non-test Go files of dir.
func stringConsts(t *testing.T, dir, prefix string) map[string]string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	out := map[string]string{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(af, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			for i, name := range vs.Names {
				if i < len(vs.Values) && strings.HasPrefix(name.Name, prefix) {
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						out[name.Name], _ = strconv.Unquote(lit.Value)
					}
				}
			}
			return true
		})
	}
	return out
}

// TestRefusalCodesComplete: every error code the proxy and the datastore
// profiles define is a known reason label, so that a new code is at zero
// from the start like the others.
func TestRefusalCodesComplete(t *testing.T) {
	for _, dir := range []string{"../../proxy", "../../datastore"} {
		for name, code := range stringConsts(t, dir, "Code") {
			if !slices.Contains(RefusalCodes, code) {
				t.Errorf("%s.%s = %q is not in RefusalCodes", filepath.Base(dir), name, code)
			}
		}
	}
}

// TestHSMOpsComplete: every operation InstrumentHSM observes is listed.
func TestHSMOpsComplete(t *testing.T) {
	af, err := parser.ParseFile(token.NewFileSet(), "metrics.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	ast.Inspect(af, func(node ast.Node) bool {
		call, ok := node.(*ast.CallExpr)
		if !ok {
			return true
		}
		if sel, ok := call.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "observe" && len(call.Args) > 0 {
			if lit, ok := call.Args[0].(*ast.BasicLit); ok {
				op, _ := strconv.Unquote(lit.Value)
				n++
				if !slices.Contains(HSMOps, op) {
					t.Errorf("InstrumentHSM observes %q, which HSMOps lacks", op)
				}
			}
		}
		return true
	})
	if n != len(HSMOps) {
		t.Errorf("InstrumentHSM observes %d operations, HSMOps lists %d", n, len(HSMOps))
	}
}

// TestKnownLabelsAtZero: a fresh sidecar's /metrics already has the
// labelled counters dashboards query, at zero.
func TestKnownLabelsAtZero(t *testing.T) {
	m := New()
	m.ZeroKnownLabels([]string{"pii", "card"})
	m.RegisterAudit(func() audit.Stats { return audit.Stats{WitnessFailures: 2} })
	out := scrape(t, m)
	for _, want := range []string{
		`sidecrypt_refusals_total{reason="key_unavailable"} 0`,
		`sidecrypt_refusals_total{reason="unprotected_operation"} 0`,
		`sidecrypt_token_open_failures_total{key="pii"} 0`,
		`sidecrypt_hsm_errors_total{op="unwrap"} 0`,
		`sidecrypt_key_rotations_total{key="card",trigger="schedule"} 0`,
		`sidecrypt_audit_witness_failures_total 2`,
		`sidecrypt_audit_tampering_total 0`,
		`sidecrypt_audit_torn_tails_total 0`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
}
