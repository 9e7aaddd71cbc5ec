package rules

import (
	"strings"
	"testing"
)

func TestPadding(t *testing.T) {
	file := func(pad string) string {
		return "version: 2\ndatastore: couchdb\ncollections:\n  - name: clinic\n    fields:\n      email: {key: contact, searchable: true" + pad + "}\n"
	}
	for _, tc := range []struct {
		pad, want, err string
	}{
		{"", "none", ""},
		{", pad: 16", "16", ""},
		{", pad: [16, 64, 256]", "16,64,256", ""},
		{", pad: none", "none", ""},
		{", pad: [64, 16]", "", "ascending"},
		{", pad: abc", "", "not a number"},
		{", pad: 0", "", ""},
		{", pad: {a: 1}", "", "want a number of bytes"},
	} {
		plan, diags, err := Compile("t.yaml", []byte(file(tc.pad)))
		if tc.err != "" || (tc.want == "" && tc.err == "") {
			if err == nil {
				t.Errorf("%q accepted", tc.pad)
				continue
			}
			if tc.err != "" && !strings.Contains(diagText(diags), tc.err) {
				t.Errorf("%q: diagnostics %s", tc.pad, diagText(diags))
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v %s", tc.pad, err, diagText(diags))
			continue
		}
		if got := plan.Schema.Collections[0].Fields[0].Pad.String(); got != tc.want {
			t.Errorf("%q: pad %s, want %s", tc.pad, got, tc.want)
		}
	}
	old, _, _ := Compile("a.yaml", []byte(file("")))
	padded, _, _ := Compile("b.yaml", []byte(file(", pad: 32")))
	d := Compare(old, padded)
	if d.Flagged() == 0 || !strings.Contains(d.Summary()+padChanges(d), "padding") {
		t.Errorf("diff: %+v", d.Changes)
	}
}

func diagText(ds []Diagnostic) string {
	var b strings.Builder
	for _, d := range ds {
		b.WriteString(d.String())
		b.WriteByte('\n')
	}
	return b.String()
}

func padChanges(d *Diff) string {
	var b strings.Builder
	for _, c := range d.Changes {
		b.WriteString(c.Message)
		b.WriteByte('\n')
	}
	return b.String()
}
