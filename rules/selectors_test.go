package rules

import (
	"testing"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

func TestSelectorOverlap(t *testing.T) {
	tests := []struct {
		a, b string
		want overlap
	}{
		{"$.ssn", "$.ssn", overlapSame},
		{"$..ssn", "$.docs[*].ssn", overlapSame},
		{"$.docs[*].ssn", "$.docs[3].ssn", overlapSame},
		{"$.docs[*]", "$.docs.ssn", overlapSame}, // an object member under [*]
		{"$.a", "$.b", overlapNone},
		{"$..diagnosis", "$.docs[*].email", overlapInside}, // possible in JSON, if absurd
		{"$..diagnosis", "$.docs[*].ssn.x", overlapInside},
		{"$.a.diagnosis", "$.docs[*].email", overlapNone},
		{"$.docs[1].ssn", "$.docs[2].ssn", overlapNone},
		{"$.patient", "$.patient.email", overlapInside},
		{"$.patient.email", "$.patient", overlapNone}, // reported from the other side
		{"$..a..b", "$.x.a.y.b", overlapSame},
		{"$..a..b", "$.b.a", overlapNone},
		{"$['a b']", "$..['a b']", overlapSame},
	}
	for _, tt := range tests {
		t.Run(tt.a+" vs "+tt.b, func(t *testing.T) {
			a := fieldcrypt.MustParseSelector(tt.a)
			b := fieldcrypt.MustParseSelector(tt.b)
			if got := selectorOverlap(a, b); got != tt.want {
				t.Errorf("overlap = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCanonical(t *testing.T) {
	for in, want := range map[string]string{
		"$.a":            "$.a",
		"$['a']":         "$.a",
		"$.a.*":          "$.a[*]",
		"$..['b c']":     "$..['b c']",
		"$.docs[0].x":    "$.docs[0].x",
		"$..ssn":         "$..ssn",
		"$.selector.$eq": "$.selector.$eq",
	} {
		if got := canonical(fieldcrypt.MustParseSelector(in)); got != want {
			t.Errorf("canonical(%s) = %s, want %s", in, got, want)
		}
	}
}
