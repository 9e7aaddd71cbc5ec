package rules

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Severity says whether a Diagnostic stops a rule file from loading.
type Severity string

const (
	// SeverityError: the file is refused. Compile returns no Plan.
	SeverityError Severity = "error"
	// SeverityWarning: the file loads, but probably does not do what its
	// author meant (a route that can match nothing, an unused key, ...).
	SeverityWarning Severity = "warning"
)

// Diagnostic is one problem found in a rule file, with its position.
// Messages quote the rule file (selectors, key names, patterns), never a
// request or a field value: they are safe to log.
type Diagnostic struct {
	File     string   `json:"file"`
	Line     int      `json:"line"` // 1-based; 0 when the problem concerns the whole file
	Col      int      `json:"col"`  // 1-based, in characters
	Severity Severity `json:"severity"`
	Message  string   `json:"message"`
	Hint     string   `json:"hint,omitempty"`
}

// String renders the diagnostic as FILE:LINE:COL: severity: message, with
// the hint on a second, indented line, the way compilers print them.
func (d Diagnostic) String() string {
	var b strings.Builder
	b.WriteString(d.position())
	b.WriteString(": ")
	b.WriteString(string(d.Severity))
	b.WriteString(": ")
	b.WriteString(d.Message)
	if d.Hint != "" {
		b.WriteString("\n\thint: ")
		b.WriteString(d.Hint)
	}
	return b.String()
}

func (d Diagnostic) position() string {
	file := d.File
	if file == "" {
		file = "<rules>"
	}
	if d.Line <= 0 {
		return file
	}
	return fmt.Sprintf("%s:%d:%d", file, d.Line, max(d.Col, 1))
}

// IsError reports whether d is an error (as opposed to a warning).
func (d Diagnostic) IsError() bool { return d.Severity == SeverityError }

// sortDiagnostics orders diagnostics by position, then errors first, so
// that output is stable and reads top to bottom like the file.
func sortDiagnostics(ds []Diagnostic) {
	sort.SliceStable(ds, func(i, j int) bool {
		a, b := ds[i], ds[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		if a.Col != b.Col {
			return a.Col < b.Col
		}
		if a.Severity != b.Severity {
			return a.Severity == SeverityError
		}
		return a.Message < b.Message
	})
}

// CountDiagnostics returns how many of ds are errors and how many warnings.
func CountDiagnostics(ds []Diagnostic) (errs, warnings int) {
	for _, d := range ds {
		if d.IsError() {
			errs++
		} else {
			warnings++
		}
	}
	return errs, warnings
}

// ErrInvalid is matched (errors.Is) by every error that refuses a rule
// file because of its content; the *Error carries the diagnostics.
var ErrInvalid = errors.New("rules: invalid rule file")

// Error refuses a rule file. It lists every error diagnostic (warnings
// are left out: they did not cause the refusal).
type Error struct {
	Source      string
	Diagnostics []Diagnostic // all of them, errors and warnings
}

func (e *Error) Error() string {
	var b strings.Builder
	errs, _ := CountDiagnostics(e.Diagnostics)
	fmt.Fprintf(&b, "rules: %s: %d %s", e.Source, errs, plural(errs, "error", "errors"))
	for _, d := range e.Diagnostics {
		if d.IsError() {
			b.WriteString("\n")
			b.WriteString(d.String())
		}
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// didYouMean returns the candidate closest to s, if it is close enough to
// be a plausible typo, else "".
func didYouMean(s string, candidates []string) string {
	best, bestDist := "", 1<<30
	ls := strings.ToLower(s)
	for _, c := range candidates {
		d := editDistance(ls, strings.ToLower(c))
		if d < bestDist {
			best, bestDist = c, d
		}
	}
	// Allow roughly one typo per three characters, at least one.
	if bestDist <= max(1, (len(best)+2)/3) {
		return best
	}
	return ""
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		// Long strings are never typos of our short keywords.
		return 1 << 20
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
