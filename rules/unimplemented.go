package rules

// TEMPORARY placeholder, deleted by the implementation.

type matcher struct{}

func (m *matcher) match(Request) *Route    { return nil }
func (m *matcher) hosts() ([]string, bool) { return nil, false }

// Document is the parsed rule file.
type Document struct{}
