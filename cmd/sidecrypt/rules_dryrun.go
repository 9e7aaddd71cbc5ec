package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/rules"
)

// The version 2 dry run of `rules test`: the plan's profile classifies the
// request exactly as the proxy asks it to, and the operation it returns is
// carried out with throw-away keys.

// v2Request is the request a dry run classifies.
type v2Request struct {
	method, path, host, rawQuery, contentType string
}

// sealedValue is one value a dry run saw sealed (or, for a null under
// nulls: leave, left).
type sealedValue struct {
	path    string // in selector syntax: $.docs[0].ssn, or "query key[1]"
	key     string
	version uint32
	mode    fieldcrypt.Mode
	action  string
	field   *datastore.Field
}

func (d *dryRun) runV2(ctx context.Context, req v2Request, body []byte) int {
	w := d.a.stdout
	target := req.method + " " + req.path
	if req.rawQuery != "" {
		target += "?" + req.rawQuery
	}
	if req.host != "" {
		if hosts, any := d.plan.Hosts(); !any && !hostListed(hosts, req.host) {
			msg := fmt.Sprintf("%s is not one of the datastore's hosts (%s): the %s profile does not read requests to it", req.host, strings.Join(hosts, ", "), d.plan.Schema.Datastore)
			return d.passThrough(ctx, msg, req.rawQuery, body)
		}
	}
	hdr := http.Header{}
	if req.contentType != "" && len(body) > 0 {
		hdr.Set("Content-Type", req.contentType)
	}
	op := d.plan.Profile.Classify(&datastore.Request{Method: req.method, Path: req.path, RawQuery: req.rawQuery, Header: hdr, HasBody: len(body) > 0})
	if op.Refusal != nil {
		if d.sections {
			d.header(op)
		}
		return d.refuseV2(op.Refusal.Status, op.Refusal.Code, op.Refusal.Message)
	}
	if !op.Protected() {
		return d.passThrough(ctx, fmt.Sprintf("%s reaches no protected collection (%s): it passes through unchanged", target, op.Endpoint), req.rawQuery, body)
	}
	if d.sections {
		d.header(op)
	}
	var sealed []sealedValue
	newQuery := req.rawQuery
	if op.Query != nil && req.rawQuery != "" {
		q, err := op.Query(ctx, req.rawQuery, d.ring)
		if err != nil {
			return d.refuseErr(err, http.StatusBadRequest, "bad_query")
		}
		newQuery = q
		sealed = append(sealed, d.querySeals(op, req.path, req.rawQuery, q)...)
	}
	stored := body
	bodyRule := op.Body
	if len(body) == 0 && bodyRule >= datastore.BodyJSON {
		bodyRule = datastore.BodyNone
	}
	switch bodyRule {
	case datastore.BodyNone:
		if len(body) > 0 {
			return d.refuseV2(http.StatusBadRequest, "unexpected_body", "this request must not carry a body on a protected collection; nothing was forwarded")
		}
	case datastore.BodyJSON, datastore.BodyEncrypt, datastore.BodyTransform:
		if !jsonMedia(req.contentType) {
			return d.refuseV2(http.StatusUnsupportedMediaType, "unsupported_media_type", fmt.Sprintf("a protected collection accepts JSON bodies only, not %q", req.contentType))
		}
		if _, _, err := validator.EncryptBytes(ctx, body, d.ring, nil); err != nil {
			return d.refuseErr(err, http.StatusBadRequest, "invalid_json")
		}
		// The body's shape, as the proxy checks it (Operation.Check).
		if op.Check != nil && bodyRule != datastore.BodyTransform {
			if err := op.Check(body); err != nil {
				return d.refuseErr(err, http.StatusBadRequest, "invalid_json")
			}
		}
	case datastore.BodyNDJSON:
		if !ndjsonMedia(req.contentType) {
			return d.refuseV2(http.StatusUnsupportedMediaType, "unsupported_media_type", fmt.Sprintf("this request accepts newline-delimited JSON or JSON only, not %q", req.contentType))
		}
	}
	switch bodyRule {
	case datastore.BodyEncrypt:
		opt := &fieldcrypt.CallOptions{OnField: func(ev fieldcrypt.FieldEvent) {
			sealed = append(sealed, sealedValue{path: ev.Path, key: ev.Key, version: ev.Version, mode: ev.Mode, action: ev.Action})
		}}
		out, _, err := op.Encryptor.EncryptBytes(ctx, body, d.ring, opt)
		if err != nil {
			return d.refuseErr(err, http.StatusBadRequest, "invalid_json")
		}
		stored = out
	case datastore.BodyNDJSON: // rules_dryrun_ndjson.go
		out, seals, code, ok := d.runNDJSON(ctx, op, body)
		if !ok {
			return code
		}
		stored, sealed = out, append(sealed, seals...)
	case datastore.BodyTransform:
		out, err := op.Transform(ctx, body, d.ring)
		if err != nil {
			return d.refuseErr(err, http.StatusBadRequest, "invalid_json")
		}
		stored = out
		view := viewOf(op, req.path)
		for _, s := range jsonSeals(body, out, "$") {
			if view != nil && strings.HasPrefix(s.path, "$.keys[") {
				s.field = viewField(op.Collection, view, "keys", strings.TrimPrefix(s.path, "$.keys"), s)
			}
			sealed = append(sealed, s)
		}
	}
	if d.explain {
		d.explainV2(op, sealed, bodyRule, newQuery != req.rawQuery || op.Query != nil && req.rawQuery != "")
	}
	if d.sections {
		if req.rawQuery != "" {
			fmt.Fprintf(w, "query (as the datastore receives it): %s\n", newQuery)
		}
		fmt.Fprintln(w, "body (as the datastore receives it):")
	}
	d.writeBody(stored)
	if d.response {
		return d.showResponse(ctx, stored)
	}
	return exitOK
}

// validator checks that a body is one JSON document without changing it.
var validator = func() *fieldcrypt.Encryptor {
	e, err := fieldcrypt.NewEncryptor(nil, fieldcrypt.Limits{})
	if err != nil {
		panic(err)
	}
	return e
}()

// jsonMedia reports whether a body of this media type is read as JSON on
// a protected collection, as the proxy does.
func jsonMedia(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || mt == "text/plain" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")
}

func hostListed(hosts []string, host string) bool {
	h := strings.ToLower(host)
	for _, x := range hosts {
		if x == h || strings.Split(x, ":")[0] == strings.Split(h, ":")[0] && (!strings.Contains(x, ":") || !strings.Contains(h, ":")) {
			return true
		}
	}
	return false
}

func (d *dryRun) header(op *datastore.Operation) {
	w := d.a.stdout
	if op.Collection != nil {
		fmt.Fprintf(w, "collection: %s (%s:%d)\n", op.Collection.Name, d.plan.Source, op.Collection.Line)
	} else {
		fmt.Fprintln(w, "collection: none (a server-wide request)")
	}
	fmt.Fprintf(w, "endpoint: %s\n", op.Endpoint)
}

func (d *dryRun) passThrough(ctx context.Context, msg, rawQuery string, body []byte) int {
	w := d.a.stdout
	if d.sections {
		fmt.Fprintf(w, "collection: none (%s)\n", msg)
		if rawQuery != "" {
			fmt.Fprintf(w, "query (as the datastore receives it): %s\n", rawQuery)
		}
		fmt.Fprintln(w, "body (as the datastore receives it):")
	} else {
		fmt.Fprintln(d.a.stderr, msg)
	}
	d.writeBody(body)
	if d.response {
		return d.showResponse(ctx, body)
	}
	return exitOK
}

func (d *dryRun) refuseV2(status int, code, msg string) int {
	fmt.Fprintf(d.a.stdout, "refused: the proxy would answer %d %s and forward nothing: %s\n", status, code, msg)
	return exitFail
}

// refuseErr reports a failed query or body rewrite: a profile's refusal
// as it is, anything else (a syntax error, a key error) with the fallback
// status and code.
func (d *dryRun) refuseErr(err error, status int, code string) int {
	var ref *datastore.Refusal
	if errors.As(err, &ref) {
		return d.refuseV2(ref.Status, ref.Code, ref.Message)
	}
	return d.refuseV2(status, code, err.Error())
}

// explainV2 lists what was sealed, with the field rule that sealed it, and
// every field rule of the collection that selected nothing in the sample.
func (d *dryRun) explainV2(op *datastore.Operation, sealed []sealedValue, body datastore.BodyRule, queried bool) {
	w := d.a.stdout
	c := op.Collection
	used := map[*datastore.Field]bool{}
	fmt.Fprintln(w, "sealed:")
	if len(sealed) == 0 {
		fmt.Fprintln(w, "  (nothing: no protected value occurs in this request)")
	}
	pathW, ruleW := 28, 20
	rules := make([]string, len(sealed))
	for i := range sealed {
		s := &sealed[i]
		s.field = attributeField(c, *s)
		rules[i] = "(no field rule)"
		if s.field != nil {
			used[s.field] = true
			rules[i] = fmt.Sprintf("field %s (line %d)", s.field.Name, s.field.Line)
		}
		pathW, ruleW = max(pathW, len(s.path)), max(ruleW, len(rules[i]))
	}
	for i, s := range sealed {
		rule := rules[i]
		prot := fmt.Sprintf("key %s v%d, %s", s.key, s.version, s.mode)
		if s.version == 0 {
			prot = fmt.Sprintf("key %s, %s", s.key, s.mode)
		}
		action := ""
		if s.action != "" && s.action != "encrypted" {
			action = ": " + s.action
		}
		fmt.Fprintf(w, "  %-*s %-*s %s%s\n", pathW, s.path, ruleW, rule, prot, action)
	}
	if c == nil {
		return
	}
	if body != datastore.BodyEncrypt && body != datastore.BodyTransform && body != datastore.BodyNDJSON && !queried {
		fmt.Fprintln(w, "field rules: not applied (this request carries no document and no compared value)")
		return
	}
	var idle []*datastore.Field
	for _, f := range c.Fields {
		if !used[f] {
			idle = append(idle, f)
		}
	}
	if len(idle) == 0 {
		fmt.Fprintln(w, "field rules that selected nothing in this sample: none")
		return
	}
	if body != datastore.BodyEncrypt && body != datastore.BodyNDJSON {
		// A query names only the fields it compares: say which, briefly.
		names := make([]string, len(idle))
		for i, f := range idle {
			names[i] = f.Name
		}
		fmt.Fprintf(w, "field rules this query does not compare: %s\n", strings.Join(names, ", "))
		return
	}
	fmt.Fprintln(w, "field rules that selected nothing in this sample:")
	nameW := 20
	for _, f := range idle {
		nameW = max(nameW, len(f.Name))
	}
	for _, f := range idle {
		where := "at any depth"
		if !f.AnyDepth {
			where = "exactly this path"
		}
		fmt.Fprintf(w, "  %-*s line %d, %s, key %s, %s\n", nameW, f.Name, f.Line, where, f.Key, f.Mode)
	}
}

// attributeField finds the field rule that sealed a value: the one that
// protects the value's path (its member names, from some document root
// within the body) under the token's key and mode.
func attributeField(c *datastore.Collection, s sealedValue) *datastore.Field {
	if c == nil {
		return nil
	}
	if s.field != nil {
		return s.field
	}
	members := pathMembers(s.path)
	try := func(members []string) *datastore.Field {
		for r := range members {
			f, inside := c.FieldAt(members[r:])
			if f != nil && !inside && f.Key == s.key && f.Mode == s.mode {
				return f
			}
		}
		return nil
	}
	if f := try(members); f != nil {
		return f
	}
	// Query languages name nested fields with dots ("card.number").
	var split []string
	for _, m := range members {
		split = append(split, strings.Split(m, ".")...)
	}
	return try(split)
}

// pathMembers returns the member names of a path in selector syntax,
// leaving out array positions and query operators ($eq, $in, ...).
func pathMembers(path string) []string {
	sel, err := fieldcrypt.ParseSelector(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, st := range sel.Steps() {
		if st.Kind == fieldcrypt.StepMember && !strings.HasPrefix(st.Name, "$") {
			out = append(out, st.Name)
		}
	}
	return out
}

// jsonSeals compares a document before and after a transform and returns
// the values that became tokens.
func jsonSeals(before, after []byte, root string) []sealedValue {
	var a, b any
	if decodeJSON(before, &a) != nil || decodeJSON(after, &b) != nil {
		return nil
	}
	var out []sealedValue
	var walk func(a, b any, path []fieldcrypt.PathElem)
	walk = func(a, b any, path []fieldcrypt.PathElem) {
		switch bv := b.(type) {
		case string:
			if av, ok := a.(string); ok && av == bv || !fieldcrypt.HasTokenPrefix(bv) {
				return
			}
			info, err := fieldcrypt.ParseTokenInfo([]byte(bv))
			if err != nil {
				return
			}
			p := fieldcrypt.FormatPath(path)
			out = append(out, sealedValue{path: root + strings.TrimPrefix(p, "$"), key: info.Key, version: info.KeyVersion, mode: info.Mode, action: "encrypted"})
		case map[string]any:
			am, _ := a.(map[string]any)
			keys := make([]string, 0, len(bv))
			for k := range bv {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				walk(am[k], bv[k], append(slices.Clone(path), fieldcrypt.PathElem{Name: k}))
			}
		case []any:
			as, _ := a.([]any)
			for i := range bv {
				var ai any
				if i < len(as) {
					ai = as[i]
				}
				walk(ai, bv[i], append(slices.Clone(path), fieldcrypt.PathElem{Index: i, IsIndex: true}))
			}
		}
	}
	walk(a, b, nil)
	return out
}

func decodeJSON(data []byte, v *any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return dec.Decode(v)
}

// viewKeyParams are the query parameters that carry a view's key.
var viewKeyParams = []string{"key", "keys", "startkey", "endkey", "start_key", "end_key"}

// querySeals compares the query string before and after the profile's
// rewrite and returns the values it sealed, attributed through the view's
// declared key where the request is a view lookup.
func (d *dryRun) querySeals(op *datastore.Operation, path, before, after string) []sealedValue {
	bq, err1 := url.ParseQuery(before)
	aq, err2 := url.ParseQuery(after)
	if err1 != nil || err2 != nil {
		return nil
	}
	view := viewOf(op, path)
	names := make([]string, 0, len(aq))
	for n := range aq {
		names = append(names, n)
	}
	slices.Sort(names)
	var out []sealedValue
	for _, name := range names {
		for i, v := range aq[name] {
			var old string
			if i < len(bq[name]) {
				old = bq[name][i]
			}
			if v == old {
				continue
			}
			label := "query " + name
			if len(aq[name]) > 1 {
				label += "[" + strconv.Itoa(i) + "]"
			}
			var seals []sealedValue
			if fieldcrypt.HasTokenPrefix(v) {
				if info, err := fieldcrypt.ParseTokenInfo([]byte(v)); err == nil {
					seals = []sealedValue{{path: label, key: info.Key, version: info.KeyVersion, mode: info.Mode, action: "encrypted"}}
				}
			} else {
				seals = jsonSeals([]byte(old), []byte(v), label)
			}
			for _, s := range seals {
				if view != nil && slices.Contains(viewKeyParams, name) {
					s.field = viewField(op.Collection, view, name, strings.TrimPrefix(s.path, label), s)
				}
				out = append(out, s)
			}
		}
	}
	return out
}

// viewOf returns the declared key of the view a request looks up, or nil.
func viewOf(op *datastore.Operation, path string) *datastore.ViewKey {
	c := op.Collection
	if c == nil {
		return nil
	}
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(segs) >= 5 && segs[1] == "_design" && segs[3] == "_view" {
		ddoc, _ := url.PathUnescape(segs[2])
		name, _ := url.PathUnescape(segs[4])
		if vk, ok := c.Views[ddoc+"/"+name]; ok {
			return &vk
		}
	}
	return nil
}

// viewField finds the field a view key position holds: rest is the
// position inside the parameter's JSON value ("[1]", or "[0][1]" for keys).
func viewField(c *datastore.Collection, vk *datastore.ViewKey, param, rest string, s sealedValue) *datastore.Field {
	var idx []int
	for _, part := range strings.Split(strings.Trim(rest, "[]"), "][") {
		if n, err := strconv.Atoi(part); err == nil {
			idx = append(idx, n)
		}
	}
	if param == "keys" && len(idx) > 0 {
		idx = idx[1:] // the element of the list of keys
	}
	name := ""
	switch {
	case !vk.Array && len(vk.Fields) == 1:
		name = vk.Fields[0]
	case vk.Array && len(idx) > 0 && idx[0] < len(vk.Fields):
		name = vk.Fields[idx[0]]
	}
	if name == "" {
		return nil
	}
	path, err := rules.SplitFieldName(name)
	if err != nil {
		return nil
	}
	f, inside := c.FieldAt(path)
	if f == nil || inside || f.Key != s.key || f.Mode != s.mode {
		return nil
	}
	return f
}

// v1RoutePath reads an escaped request path the way the proxy matches
// version 1 routes against it: split at '/', each segment unescaped once,
// a '/' that was "%2F" kept as "%2F" so that the segment stays one
// segment ("/clinic/a%2Fb" is the document "a/b", matched by
// "/clinic/*"). empty reports an empty segment before the last; ok is
// false for a malformed escape or a "." or ".." segment.
func v1RoutePath(escaped string) (path string, empty, ok bool) {
	segs := strings.Split(escaped, "/")
	for i, seg := range segs {
		if seg == "" {
			if i > 0 && i < len(segs)-1 {
				empty = true
			}
			continue
		}
		dec, err := url.PathUnescape(seg)
		if err != nil || dec == "." || dec == ".." {
			return "", false, false
		}
		segs[i] = strings.ReplaceAll(dec, "/", "%2F")
	}
	return strings.Join(segs, "/"), empty, true
}
