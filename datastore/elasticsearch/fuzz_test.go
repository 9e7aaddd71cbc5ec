package elasticsearch

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// FuzzBulk: whatever a _bulk body looks like, the profile either refuses
// it or forwards it with every ssn (a member named ssn, or a dotted name
// ending in .ssn, at any depth, in every index: the collection is "*")
// sealed, line for line.
func FuzzBulk(f *testing.F) {
	for _, seed := range []string{
		"{\"index\":{\"_index\":\"a\"}}\n{\"ssn\":\"123\"}\n",
		"{\"create\":{}}\r\n{\"x\":{\"ssn\":[1,\"2\"]}}\r\n{\"delete\":{\"_id\":\"1\"}}\n",
		"\n{\"update\":{\"_id\":\"1\"}}\n{\"doc\":{\"p.ssn\":\"1\"},\"upsert\":{\"ssn\":null}}\n",
		"{\"index\":{}}\n{\"ssn\":\"1\"} {\"ssn\":\"2\"}\n",
		"{\"index\":{}}\n[{\"ssn\":\"1\"}]\n",
		"{\"index\":{}}\n{\"\\u0073sn\":\"1\"}\n",
	} {
		f.Add(seed)
	}
	p, err := New(&datastore.Schema{Datastore: Name, Collections: []*datastore.Collection{{Name: "*", Fields: []*datastore.Field{
		{Name: "ssn", Path: []string{"ssn"}, AnyDepth: true, Key: "pii", Mode: fieldcrypt.ModeRandom},
	}}}})
	if err != nil {
		f.Fatal(err)
	}
	keys := fieldcrypt.NewStaticKeyring(testKey(f, "pii"))
	f.Fuzz(func(t *testing.T, body string) {
		op := p.Classify(request("POST", "/idx/_bulk", "", true))
		lt := op.Lines(context.Background(), &datastore.LinesEnv{Keys: keys})
		var out []byte
		rest := body
		for rest != "" {
			line := rest
			if i := strings.IndexByte(rest, '\n'); i >= 0 {
				line = rest[:i+1]
			}
			rest = rest[len(line):]
			o, err := lt.Line([]byte(line))
			if err != nil {
				return
			}
			out = append(out, o...)
		}
		o, err := lt.End()
		if err != nil {
			return
		}
		out = append(out, o...)
		if bytes.Count(out, []byte("\n")) != strings.Count(body, "\n") {
			t.Fatalf("line count changed:\n%q\n%q", body, out)
		}
		for _, line := range bytes.Split(out, []byte("\n")) {
			var v any
			if json.Unmarshal(line, &v) != nil {
				continue
			}
			checkSealed(t, v, line)
		}
	})
}

func checkSealed(t *testing.T, v any, line []byte) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			parts := strings.Split(k, ".")
			if parts[len(parts)-1] == "ssn" && e != nil {
				if s, ok := e.(string); !ok || !strings.HasPrefix(s, fieldcrypt.TokenPrefix) {
					t.Fatalf("an ssn left in plaintext: %s", line)
				}
				continue
			}
			checkSealed(t, e, line)
		}
	case []any:
		for _, e := range x {
			checkSealed(t, e, line)
		}
	}
}
