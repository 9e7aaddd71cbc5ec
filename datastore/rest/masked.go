package rest

import (
	"context"
	"net/http"

	"github.com/sidecrypt/sidecrypt/datastore"
)

// preserve is the Preserve hook of PUT and PATCH: a masked value written
// back unchanged keeps the stored token. The stored record is read with
// GET on the same path, with the app's credentials. json-server has no
// conditional writes (it sends ETags but ignores If-Match), so the
// record compared is the one stored when the write arrives, not the
// revision the app read: a concurrent change to the same field in between
// is kept instead of the app's mask (documented in docs/RULES.md). A
// record that does not exist yet holds new data.
func preserve(c *collection, path string) func(context.Context, []byte, *datastore.WriteEnv) ([]byte, error) {
	return func(ctx context.Context, body []byte, env *datastore.WriteEnv) ([]byte, error) {
		doc, err := datastore.ParseDocument(body)
		if err != nil {
			return nil, err
		}
		cands := c.MaskCandidates(doc, env)
		if len(cands) == 0 {
			return body, nil
		}
		status, resp, err := env.Fetch(ctx, http.MethodGet, path, "", nil)
		if err != nil {
			return nil, datastore.MaskedWrite("rest: the record carries a masked value in field %s, and the stored record could not be read to keep the stored value (the datastore did not answer); nothing was forwarded", cands[0].Field.Name)
		}
		if status == http.StatusNotFound {
			return body, nil
		}
		if status != http.StatusOK {
			return nil, datastore.MaskedWrite("rest: the record carries a masked value in field %s, and the datastore answered %d when the stored record was read; nothing was forwarded", cands[0].Field.Name, status)
		}
		stored, err := datastore.ParseDocument(resp)
		if err != nil {
			return nil, datastore.MaskedWrite("rest: the stored record could not be read as JSON; nothing was forwarded")
		}
		datastore.PreserveMasked(ctx, cands, stored, env)
		return doc.Bytes(), nil
	}
}
