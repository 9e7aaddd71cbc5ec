package rest

import "github.com/sidecrypt/sidecrypt/datastore"

// Coverage implements datastore.Describer.
func (p *Profile) Coverage(c *datastore.Collection) []datastore.Coverage {
	return []datastore.Coverage{
		{Endpoint: EpCollection, Request: "POST /{prefix}; PUT|PATCH /{prefix} (a singular resource)", Treatment: "document encrypted",
			Why: "the collection's fields are sealed in one streaming pass (a dotted path also protects a member literally named so, which json-server's filters read)"},
		{Endpoint: EpItem, Request: "PUT|PATCH /{prefix}/{id}", Treatment: "document encrypted",
			Why: "sealed like a new record; a masked value written back keeps the stored token (read with GET /{prefix}/{id})"},
		{Endpoint: EpCollection, Request: "GET|DELETE /{prefix}[/{id}]?field=value", Treatment: "compared values sealed",
			Why: "field=value and field_ne=value on a searchable field are sealed (every occurrence of a repeated parameter); _gte, _lte, _like, _sort on an encrypted field, any filter on a random field or inside an encrypted value, bracket syntax on one, and q (full-text over every field) are refused; _page, _limit, _order, _start, _end, _embed, _expand pass; responses (objects or arrays) are decrypted"},
		{Endpoint: EpNested, Request: "GET /{prefix}/{id}/{sub} without query parameters", Treatment: "passes: no protected value travels", Why: "a nested read; the response is decrypted"},
		{Endpoint: EpNested, Request: "writes to /{prefix}/{id}/{sub}, /{parent}/{id}/{prefix}; nested reads with query parameters", Treatment: "refused", Refused: true,
			Why: "json-server stores a nested write in the nested collection: the profile cannot tell which collection's rules apply"},
		{Endpoint: EpItem, Request: "POST /{prefix}/{id}, other methods, OPTIONS with a body, a body on GET or DELETE", Treatment: "refused", Refused: true,
			Why: "deny by default under a protected prefix"},
		{Endpoint: EpPath, Request: "paths with . or .. segments, bad escapes; // or %2F where it decides whether a prefix is reached", Treatment: "refused", Refused: true,
			Why: "read differently by stores and proxies in between"},
		{Endpoint: EpOther, Request: "any path outside every protected prefix", Treatment: "passes: no protected value travels", Why: "not protected"},
		{Endpoint: EpOptions, Request: "OPTIONS without a body", Treatment: "passes: no protected value travels", Why: "a CORS preflight carries nothing"},
	}
}
