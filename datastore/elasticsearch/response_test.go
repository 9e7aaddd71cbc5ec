package elasticsearch

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

type openAll struct{}

func (openAll) Action(string) (fieldcrypt.Action, fieldcrypt.Masker) {
	return fieldcrypt.ActionOpen, nil
}

// Tokens are opened only in the protected fields of the documents an
// answer carries, whichever way the document spells the field.
func TestBoundResponses(t *testing.T) {
	s := testSchema()
	s.Reveal = openAll{}
	prof, err := New(s)
	if err != nil {
		t.Fatal(err)
	}
	p := prof.(*Profile)
	det := func(key, v string) string {
		b, err := fieldcrypt.SealString(testKey(t, key), fieldcrypt.ModeDeterministic, v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	email, card := det("contact", "ann@example.com"), det("card", "4111")
	for _, tc := range []struct {
		method, path, body string
		open, closed       int // tokens opened, left closed
	}{
		{"GET", "/orders/_doc/1", `{"_source":{"email":"` + email + `","note":"` + email + `","card.number":"` + card + `"}}`, 2, 1},
		{"GET", "/orders/_source/1", `{"card":{"number":"` + card + `"},"email":"` + card + `"}`, 1, 1},
		{"POST", "/orders/_search", `{"hits":{"hits":[{"_source":{"email":"` + email + `"},"fields":{"email":["` + email + `"],"card.number":["` + card + `"]}},{"_id":"` + email + `"}]}}`, 3, 1},
		{"POST", "/logs/_msearch", `{"responses":[{"hits":{"hits":[{"_source":{"email":"` + email + `"}}]}}]}`, 1, 0},
		{"POST", "/logs/_search", `{"hits":{"hits":[{"_source":{"email":"` + email + `"}}]}}`, 0, 1},
		{"PUT", "/orders/_doc/1", `{"result":"` + email + `"}`, 0, 1},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			op := p.Classify(request(tc.method, tc.path, "", tc.method != "GET"))
			if op.Refusal != nil {
				t.Fatal(op.Refusal)
			}
			if tc.open == 0 {
				if op.Response != datastore.ResponseNone {
					t.Fatalf("response rule %v, want none", op.Response)
				}
				return
			}
			if op.Response != datastore.ResponseBound || op.Decryptor == nil {
				t.Fatalf("response rule %v", op.Response)
			}
			out, _, err := op.Decryptor.DecryptBytes(context.Background(), []byte(tc.body), keyring(t), &fieldcrypt.CallOptions{Lenient: true})
			if err != nil {
				t.Fatal(err)
			}
			opened := strings.Count(string(out), "ann@example.com") + strings.Count(string(out), `"4111"`)
			closed := strings.Count(string(out), "sc2.")
			if opened != tc.open || closed != tc.closed {
				t.Errorf("opened %d, closed %d: %s", opened, closed, out)
			}
		})
	}
}

type policyOf map[string]fieldcrypt.Action

func (p policyOf) Action(k string) (fieldcrypt.Action, fieldcrypt.Masker) { return p[k], nil }

// A request may carry a token only where its field's rule puts it.
func TestTokensInRequests(t *testing.T) {
	p := newProfile(t)
	ctx := fieldcrypt.WithTokenPolicy(context.Background(), policyOf{"contact": fieldcrypt.ActionOpen, "pii": fieldcrypt.ActionOpen})
	contact := tok(t, "contact", `"ann@example.com"`)
	card := tok(t, "card", `"4111"`)
	for _, tc := range []struct {
		path, body string
		refused    bool
		kept       string
	}{
		{"/orders/_doc/1", `{"note":` + contact + `}`, true, ""},
		{"/orders/_doc/1", `{"email":` + contact + `}`, true, ""},
		{"/orders/_doc/1", `{"card":{"number":` + card + `}}`, false, card},
		{"/orders/_doc/1", `{"note":` + card + `}`, false, card},
		{"/orders/_search", `{"query":{"term":{"email":` + contact + `}}}`, true, ""},
		{"/orders/_search", `{"query":{"term":{"ward":` + contact + `}}}`, true, ""},
		{"/orders/_search", `{"query":{"term":{"card.number":` + card + `}}}`, false, card},
	} {
		op := p.Classify(request("POST", tc.path, "", true))
		var out []byte
		var err error
		if op.Body == datastore.BodyNDJSON {
			lt := op.Lines(ctx, &datastore.LinesEnv{Keys: keyring(t)})
			if _, err = lt.Line([]byte(tc.body)); err == nil {
				out, err = lt.End()
			}
		} else {
			out, err = op.Transform(ctx, []byte(tc.body), keyring(t))
		}
		if tc.refused != errors.Is(err, fieldcrypt.ErrTokenNotAllowed) {
			t.Errorf("%s %s: %v", tc.path, tc.body, err)
			continue
		}
		if tc.kept != "" && !strings.Contains(string(out), tc.kept) {
			t.Errorf("%s %s: token not kept: %s", tc.path, tc.body, out)
		}
	}
}
