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
