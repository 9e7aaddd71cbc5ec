package couchdb

import (
	"strings"
	"testing"
)

// pouchName mirrors express-pouchdb's cleanFilename (sanitize-filename
// 1.6): these are the names pouchdb-server stores databases under.
func TestPouchName(t *testing.T) {
	for in, want := range map[string]string{
		"clinic":                 "clinic",
		"clinic?":                "clinic",
		"c/l\\i:n*i|c\"<>":       "clinic",
		"clinic. . ":             "clinic",
		"cli\x00\x1fnic":         "clinic",
		"cli\u0080\u009fnic":     "clinic",
		"cli\u00a0nic":           "cli\u00a0nic",
		"...":                    "__...__",
		"con":                    "__con__",
		"LPT1.txt":               "__LPT1.txt__",
		"com10":                  "com10",
		"_replicator":            "_replicator",
		"?":                      "____",
		"tenant-a+b":             "tenant-a+b",
		strings.Repeat("é", 200): strings.Repeat("é", 127),
	} {
		if got := pouchName(in); got != want {
			t.Errorf("pouchName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPouchPattern(t *testing.T) {
	for in, want := range map[string]string{
		"clinic":     "clinic",
		"org/clinic": "orgclinic",
		"org/*":      "org*",
		"a.*.b. ":    "a.*.b",
		"*":          "*",
	} {
		if got := pouchPattern(in); got != want {
			t.Errorf("pouchPattern(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzSanitizeFilename: a name plainFilename lets through unfiltered is
// one the rune filter would keep whole, so the shortcut never changes
// what pouchdb-server's name is taken to be.
func FuzzSanitizeFilename(f *testing.F) {
	for _, s := range []string{"clinic", "clinic.", "a b ", "con", "...", "x\x7f", "\xff", "a/b", strings.Repeat("a", 300), "_design", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if !plainFilename(in) {
			return
		}
		var b strings.Builder
		for _, r := range in {
			if strings.ContainsRune(`/?<>\:*|"`, r) || r <= 0x1f || (r >= 0x80 && r <= 0x9f) {
				continue
			}
			b.WriteRune(r)
		}
		if b.String() != in {
			t.Fatalf("plainFilename(%q) but the filter keeps %q", in, b.String())
		}
	})
}

// TestPlainNameNoAlloc: a plain database name is classified without a copy.
func TestPlainNameNoAlloc(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = pouchName("clinic") }); n != 0 {
		t.Fatalf("pouchName of a plain name: %v allocations", n)
	}
}
