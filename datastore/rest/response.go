package rest

import (
	"strings"
	"sync"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Responses: tokens are opened only in the protected fields of the
// records an answer carries (datastore.ResponseBound), never where
// somebody copied one (docs/FORMAT.md section 7). Under a protected
// prefix the answer is a record or an array of records ($, arrays
// transparent); a nested read (/{parent}/{id}/{sub}) carries records of
// {sub}'s collection; json-server's GET /db carries each collection under
// its name. Everything else opens nothing.

type responseCache struct {
	mu sync.Mutex
	m  map[*collection]*fieldcrypt.Decryptor
	db *fieldcrypt.Decryptor
}

func (p *Profile) bind(op *datastore.Operation, c *collection) {
	if p.schema == nil || p.schema.Reveal == nil {
		return // no decrypt policy to bind: the rule file's decryptor decides
	}
	if op.Refusal != nil || c == nil {
		op.Response = datastore.ResponseNone
		return
	}
	p.resp.mu.Lock()
	defer p.resp.mu.Unlock()
	d := p.resp.m[c]
	if d == nil {
		var err error
		d, err = c.ResponseDecryptor(p.schema.Reveal, [][]fieldcrypt.Step{nil}, nil)
		if err != nil {
			op.Response = datastore.ResponseNone
			return
		}
		if p.resp.m == nil {
			p.resp.m = map[*collection]*fieldcrypt.Decryptor{}
		}
		p.resp.m[c] = d
	}
	op.Response, op.Decryptor = datastore.ResponseBound, d
}

// bindDB binds json-server's GET /db: each collection whose prefix is one
// plain segment, under its name.
func (p *Profile) bindDB(op *datastore.Operation) {
	if p.schema == nil || p.schema.Reveal == nil {
		return
	}
	p.resp.mu.Lock()
	defer p.resp.mu.Unlock()
	if p.resp.db == nil {
		var extra []fieldcrypt.FieldRule
		for _, c := range p.cols {
			name := strings.TrimPrefix(c.Name, "/")
			if name == "" || strings.ContainsAny(name, "/*") {
				continue
			}
			rules, err := c.DocumentRules(fieldcrypt.Step{Kind: fieldcrypt.StepMember, Name: name})
			if err != nil {
				continue
			}
			extra = append(extra, rules...)
		}
		d, err := fieldcrypt.NewBoundDecryptor(p.schema.Reveal, extra, fieldcrypt.Limits{})
		if err != nil {
			op.Response = datastore.ResponseNone
			return
		}
		p.resp.db = d
	}
	op.Response, op.Decryptor = datastore.ResponseBound, p.resp.db
}
