package couchdb

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// In the wanted outputs, ⟨key:json⟩ stands for the deterministic token of
// that value under that key.
type xformCase struct {
	name string
	in   string
	want string // the output, or "" when a refusal or error is wanted
	code string // refusal code
	err  error  // a fieldcrypt sentinel
}

func runXform(t *testing.T, p *Profile, method, path, query string, cases []xformCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := transform(t, p, method, path, query, tc.in)
			switch {
			case tc.err != nil:
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			case tc.code != "":
				if got := refusalCode(err); got != tc.code {
					t.Fatalf("err = %v, want refusal %s", err, tc.code)
				}
				if !strings.HasPrefix(err.(*datastore.Refusal).Message, "couchdb: ") {
					t.Errorf("message does not name the package: %v", err)
				}
				return
			case err != nil:
				t.Fatalf("err = %v", err)
			}
			if want := expand(t, tc.want); out != want {
				t.Errorf("got  %s\nwant %s", out, want)
			}
		})
	}
}

func TestFindSelector(t *testing.T) {
	runXform(t, newProfile(t), "POST", "/clinic/_find", "", []xformCase{
		// Implicit and explicit equality, nested and dotted paths.
		{name: "implicit eq", in: `{"selector":{"email":"a@b"}}`, want: `{"selector":{"email":⟨contact:"a@b"⟩}}`},
		{name: "explicit eq", in: `{"selector":{"email":{"$eq":"a@b"}}}`, want: `{"selector":{"email":{"$eq":⟨contact:"a@b"⟩}}}`},
		{name: "ne", in: `{"selector":{"email":{"$ne":"a@b"}}}`, want: `{"selector":{"email":{"$ne":⟨contact:"a@b"⟩}}}`},
		{name: "in mixed types", in: `{"selector":{"email":{"$in":["a@b",1,true,null,{"x":1},[2]]}}}`,
			want: `{"selector":{"email":{"$in":[⟨contact:"a@b"⟩,⟨contact:1⟩,⟨contact:true⟩,null,⟨contact:{"x":1}⟩,⟨contact:[2]⟩]}}}`},
		{name: "nin", in: `{"selector":{"email":{"$nin":["a@b"]}}}`, want: `{"selector":{"email":{"$nin":[⟨contact:"a@b"⟩]}}}`},
		{name: "nested object path", in: `{"selector":{"contact":{"email":"a@b"}}}`, want: `{"selector":{"contact":{"email":⟨contact:"a@b"⟩}}}`},
		{name: "dotted any-depth", in: `{"selector":{"contact.email":"a@b"}}`, want: `{"selector":{"contact.email":⟨contact:"a@b"⟩}}`},
		{name: "dotted field", in: `{"selector":{"accounts.iban":"DE1"}}`, want: `{"selector":{"accounts.iban":⟨pii:"DE1"⟩}}`},
		{name: "numeric member is an array index", in: `{"selector":{"accounts.0.iban":"DE1"}}`, want: `{"selector":{"accounts.0.iban":⟨pii:"DE1"⟩}}`},
		{name: "escaped dot", in: `{"selector":{"meta\\.tag":"x"}}`, want: `{"selector":{"meta\\.tag":⟨contact:"x"⟩}}`},
		{name: "unescaped dot is a path", in: `{"selector":{"meta.tag":"x"}}`, want: `{"selector":{"meta.tag":"x"}}`},
		{name: "escaped member name", in: `{"selector":{"\u0065mail":"a@b"}}`, want: `{"selector":{"\u0065mail":⟨contact:"a@b"⟩}}`},
		{name: "canonical string", in: `{"selector":{"email":"\u0061@b"}}`, want: `{"selector":{"email":⟨contact:"a@b"⟩}}`},
		{name: "several members", in: `{"selector":{"ward":"B","email":"a@b","age":{"$gt":30}}}`,
			want: `{"selector":{"ward":"B","email":⟨contact:"a@b"⟩,"age":{"$gt":30}}}`},

		// Combinations at any depth.
		{name: "or and nor not", in: `{"selector":{"$or":[{"email":"a"},{"$and":[{"ward":"B"},{"$not":{"email":"c"}}]},{"$nor":[{"phone":"1"}]}]}}`,
			want: `{"selector":{"$or":[{"email":⟨contact:"a"⟩},{"$and":[{"ward":"B"},{"$not":{"email":⟨contact:"c"⟩}}]},{"$nor":[{"phone":⟨contact:"1"⟩}]}]}}`},
		{name: "combination under a field", in: `{"selector":{"email":{"$or":[{"$eq":"a"},"b"]}}}`,
			want: `{"selector":{"email":{"$or":[{"$eq":⟨contact:"a"⟩},⟨contact:"b"⟩]}}}`},
		{name: "not under a field", in: `{"selector":{"email":{"$not":{"$in":["a"]}}}}`, want: `{"selector":{"email":{"$not":{"$in":[⟨contact:"a"⟩]}}}}`},
		{name: "elemMatch continues the path", in: `{"selector":{"accounts":{"$elemMatch":{"iban":"DE1","kind":"giro"}}}}`,
			want: `{"selector":{"accounts":{"$elemMatch":{"iban":⟨pii:"DE1"⟩,"kind":"giro"}}}}`},
		{name: "allMatch continues the path", in: `{"selector":{"accounts":{"$allMatch":{"$or":[{"iban":"DE1"},{"iban":{"$in":["DE2"]}}]}}}}`,
			want: `{"selector":{"accounts":{"$allMatch":{"$or":[{"iban":⟨pii:"DE1"⟩},{"iban":{"$in":[⟨pii:"DE2"⟩]}}]}}}}`},
		{name: "elemMatch scalar on unprotected", in: `{"selector":{"tags":{"$elemMatch":{"$eq":"x"}}}}`, want: `{"selector":{"tags":{"$elemMatch":{"$eq":"x"}}}}`},
		{name: "deep nesting", in: `{"selector":{"$and":[{"$or":[{"$not":{"$and":[{"visits":{"$elemMatch":{"contact":{"email":{"$ne":"z"}}}}}]}}]}]}}`,
			want: `{"selector":{"$and":[{"$or":[{"$not":{"$and":[{"visits":{"$elemMatch":{"contact":{"email":{"$ne":⟨contact:"z"⟩}}}}}]}}]}]}}`},

		// Nulls: left unless the field encrypts them.
		{name: "null left", in: `{"selector":{"email":null}}`, want: `{"selector":{"email":null}}`},
		{name: "null sealed when encrypted", in: `{"selector":{"phone":null}}`, want: `{"selector":{"phone":⟨contact:null⟩}}`},

		// $exists and the operators that never compare a protected value.
		{name: "exists on protected", in: `{"selector":{"ssn":{"$exists":true},"email":{"$exists":false}}}`, want: `{"selector":{"ssn":{"$exists":true},"email":{"$exists":false}}}`},
		{name: "range on unprotected", in: `{"selector":{"age":{"$gt":1,"$lte":99.50},"name":{"$regex":"^A"},"n":{"$mod":[2,0]},"t":{"$size":2},"u":{"$type":"string"},"v":{"$all":["a"]},"w":{"$beginsWith":"x"}}}`,
			want: `{"selector":{"age":{"$gt":1,"$lte":99.50},"name":{"$regex":"^A"},"n":{"$mod":[2,0]},"t":{"$size":2},"u":{"$type":"string"},"v":{"$all":["a"]},"w":{"$beginsWith":"x"}}}`},
		{name: "keyMapMatch on unprotected", in: `{"selector":{"m":{"$keyMapMatch":{"$eq":"k"}}}}`, want: `{"selector":{"m":{"$keyMapMatch":{"$eq":"k"}}}}`},
		{name: "empty selector", in: `{"selector":{}}`, want: `{"selector":{}}`},
		{name: "empty object compared", in: `{"selector":{"ward":{}}}`, want: `{"selector":{"ward":{}}}`},

		// Refusals: comparisons that cannot work on an encrypted value.
		{name: "random eq", in: `{"selector":{"ssn":"123"}}`, code: codeUnsupported},
		{name: "random in or", in: `{"selector":{"$or":[{"ward":"B"},{"diagnosis":{"$in":["x"]}}]}}`, code: codeUnsupported},
		{name: "random regex", in: `{"selector":{"ssn":{"$regex":"^1"}}}`, code: codeUnsupported},
		{name: "searchable gt", in: `{"selector":{"email":{"$gt":"a"}}}`, code: codeUnsupported},
		{name: "searchable lte in and", in: `{"selector":{"$and":[{"email":{"$lte":"a"}}]}}`, code: codeUnsupported},
		{name: "searchable regex", in: `{"selector":{"email":{"$regex":"@b$"}}}`, code: codeUnsupported},
		{name: "searchable beginsWith", in: `{"selector":{"email":{"$beginsWith":"a"}}}`, code: codeUnsupported},
		{name: "searchable mod", in: `{"selector":{"phone":{"$mod":[2,1]}}}`, code: codeUnsupported},
		{name: "searchable size", in: `{"selector":{"email":{"$size":1}}}`, code: codeUnsupported},
		{name: "searchable type", in: `{"selector":{"email":{"$type":"string"}}}`, code: codeUnsupported},
		{name: "searchable all", in: `{"selector":{"email":{"$all":["a"]}}}`, code: codeUnsupported},
		{name: "elemMatch on protected", in: `{"selector":{"email":{"$elemMatch":{"$eq":"a"}}}}`, code: codeUnsupported},
		{name: "allMatch on protected", in: `{"selector":{"address":{"$allMatch":{"city":"x"}}}}`, code: codeUnsupported},
		{name: "keyMapMatch on protected", in: `{"selector":{"address":{"$keyMapMatch":{"$eq":"city"}}}}`, code: codeUnsupported},
		{name: "unknown op on protected", in: `{"selector":{"email":{"$near":"a"}}}`, code: codeUnsupported},
		{name: "unknown op on unprotected", in: `{"selector":{"ward":{"$where":"x"}}}`, code: codeUnsupported},
		{name: "text", in: `{"selector":{"$text":"123-45-6789"}}`, code: codeUnsupported},
		{name: "default text", in: `{"selector":{"$default":{"$text":"x"}}}`, code: codeUnsupported},
		{name: "inside protected, dotted", in: `{"selector":{"address.city":"Paris"}}`, code: codeUnsupported},
		{name: "inside protected, nested", in: `{"selector":{"address":{"city":"Paris"}}}`, code: codeUnsupported},
		{name: "inside protected, exists", in: `{"selector":{"address.city":{"$exists":true}}}`, code: codeUnsupported},
		{name: "inside protected, under or", in: `{"selector":{"$or":[{"x":1},{"patient.name.first":"A"}]}}`, code: codeUnsupported},
		{name: "whole object containing protected", in: `{"selector":{"patient":{"$eq":{"name":"A"}}}}`, code: codeUnsupported},
		{name: "whole array containing protected", in: `{"selector":{"accounts":[{"iban":"DE1"}]}}`, code: codeUnsupported},
		{name: "in with objects containing protected", in: `{"selector":{"contact":{"$in":[{"email":"a"}]}}}`, code: codeUnsupported},
		{name: "gt with object containing protected", in: `{"selector":{"contact":{"$gt":{"email":"a"}}}}`, code: codeUnsupported},
		{name: "all with objects containing protected", in: `{"selector":{"accounts":{"$all":[{"iban":"DE1"}]}}}`, code: codeUnsupported},

		// Malformed queries.
		{name: "in not an array", in: `{"selector":{"email":{"$in":"a@b"}}}`, code: codeBad},
		{name: "or not an array", in: `{"selector":{"$or":{"email":"a"}}}`, code: codeBad},
		{name: "not not an object", in: `{"selector":{"$not":"a"}}`, code: codeBad},
		{name: "elemMatch not an object", in: `{"selector":{"accounts":{"$elemMatch":["DE1"]}}}`, code: codeBad},
		{name: "condition without field", in: `{"selector":{"$and":["123-45-6789"]}}`, code: codeBad},
		{name: "operator without field", in: `{"selector":{"$gt":1}}`, code: codeBad},
		{name: "selector not an object", in: `{"selector":["a"]}`, code: codeBad},
		{name: "empty field member", in: `{"selector":{"a..email":"x"}}`, code: codeBad},
		{name: "ambiguous backslash", in: `{"selector":{"em\\ail":"x"}}`, code: codeBad},
		{name: "ambiguous escaped backslash dot", in: `{"selector":{"meta\\\\.tag":"x"}}`, code: codeBad},
		{name: "body not an object", in: `[]`, code: codeBad},
		{name: "syntax", in: `{"selector":{"email":"a@b"}`, err: fieldcrypt.ErrSyntax},
		{name: "duplicate member", in: `{"selector":{"email":"a@b"},"selector":{}}`, err: fieldcrypt.ErrDuplicateKey},
		{name: "duplicate field", in: `{"selector":{"email":"a@b","email":"c"}}`, err: fieldcrypt.ErrDuplicateKey},
		{name: "invalid UTF-8", in: "{\"selector\":{\"email\":\"\xff\"}}", err: fieldcrypt.ErrInvalidUTF8},
		{name: "too deep", in: `{"selector":` + strings.Repeat(`{"$not":`, 600) + `{}` + strings.Repeat(`}`, 601), err: fieldcrypt.ErrTooDeep},
	})
}

func TestFindOtherMembers(t *testing.T) {
	runXform(t, newProfile(t), "POST", "/clinic/_find", "", []xformCase{
		{name: "untouched members", in: `{"selector":{"email":"a@b"}, "limit": 10, "skip":0, "use_index":["d","i"], "bookmark":"g1AAA", "r":1, "conflicts":false, "update":true, "stable":false, "execution_stats":true, "fields":["_id","email","address"], "sort":[{"ward":"asc"},"age"]}`,
			want: `{"selector":{"email":⟨contact:"a@b"⟩},"limit":10,"skip":0,"use_index":["d","i"],"bookmark":"g1AAA","r":1,"conflicts":false,"update":true,"stable":false,"execution_stats":true,"fields":["_id","email","address"],"sort":[{"ward":"asc"},"age"]}`},
		{name: "numbers keep their digits", in: `{"selector":{"n":12345678901234567890123,"f":0.1000,"e":1E400}}`, want: `{"selector":{"n":12345678901234567890123,"f":0.1000,"e":1E400}}`},
		{name: "untouched subtree keeps its spaces", in: `{ "selector" : { "email" : "a@b" , "w" : { "x" : [ 1 , 2 ] } } }`,
			want: `{"selector":{"email":⟨contact:"a@b"⟩,"w":{ "x" : [ 1 , 2 ] }}}`},
		{name: "nothing to seal is byte-identical", in: ` { "selector" : { "ward" : "B" } , "limit" : 1 } `, want: `{ "selector" : { "ward" : "B" } , "limit" : 1 }`},
		{name: "fields inside protected", in: `{"selector":{},"fields":["address.city"]}`, code: codeUnsupported},
		{name: "fields not strings", in: `{"selector":{},"fields":[1]}`, code: codeBad},
		{name: "sort on searchable", in: `{"selector":{},"sort":["email"]}`, code: codeUnsupported},
		{name: "sort on random", in: `{"selector":{},"sort":[{"ssn":"desc"}]}`, code: codeUnsupported},
		{name: "sort inside protected", in: `{"selector":{},"sort":["address.zip"]}`, code: codeUnsupported},
		{name: "sort direction not a string", in: `{"selector":{},"sort":[{"ward":1}]}`, code: codeBad},
		{name: "sort entry with two members", in: `{"selector":{},"sort":[{"a":"asc","b":"asc"}]}`, code: codeBad},
		{name: "sort entry number", in: `{"selector":{},"sort":[3]}`, code: codeBad},
		{name: "sort not an array", in: `{"selector":{},"sort":"ward"}`, code: codeBad},
		{name: "unknown member", in: `{"selector":{},"ssn":"123"}`, code: codeUnprotected},
	})
	runXform(t, newProfile(t), "POST", "/clinic/_explain", "", []xformCase{
		{name: "explain", in: `{"selector":{"$or":[{"email":"a@b"}]}}`, want: `{"selector":{"$or":[{"email":⟨contact:"a@b"⟩}]}}`},
		{name: "explain random", in: `{"selector":{"ssn":"1"}}`, code: codeUnsupported},
	})
	runXform(t, newProfile(t), "POST", "/clinic/_partition/p/_find", "", []xformCase{
		{name: "partition find", in: `{"selector":{"email":"a@b"}}`, want: `{"selector":{"email":⟨contact:"a@b"⟩}}`},
	})
}

func TestIndex(t *testing.T) {
	runXform(t, newProfile(t), "POST", "/clinic/_index", "", []xformCase{
		{name: "names and fields untouched", in: `{"index":{"fields":["email",{"ward":"desc"}],"partial_filter_selector":{"email":{"$ne":"a@b"},"ward":"B"}},"name":"email-idx","ddoc":"idx","type":"json","partitioned":false}`,
			want: `{"index":{"fields":["email",{"ward":"desc"}],"partial_filter_selector":{"email":{"$ne":⟨contact:"a@b"⟩},"ward":"B"}},"name":"email-idx","ddoc":"idx","type":"json","partitioned":false}`},
		{name: "no partial filter is byte-identical", in: `{ "index": { "fields": ["email"] }, "name": "email" }`, want: `{ "index": { "fields": ["email"] }, "name": "email" }`},
		{name: "pouchdb aliases", in: `{"fields":["email"],"index":{"name":"i","ddoc":"d","type":"json"}}`, want: `{"fields":["email"],"index":{"name":"i","ddoc":"d","type":"json"}}`},
		{name: "partial filter random", in: `{"index":{"fields":["a"],"partial_filter_selector":{"ssn":"1"}}}`, code: codeUnsupported},
		{name: "text index", in: `{"index":{"fields":[{"name":"string"}]},"type":"text"}`, code: codeUnprotected},
		{name: "text index inside", in: `{"index":{"fields":["a"],"type":"text"}}`, code: codeUnprotected},
		{name: "type not a string", in: `{"index":{"fields":["a"]},"type":1}`, code: codeBad},
		{name: "field entry with a value", in: `{"index":{"fields":[{"email":{"$eq":"a@b"}}]}}`, code: codeBad},
		{name: "field entry number", in: `{"index":{"fields":[1]}}`, code: codeBad},
		{name: "unknown index member", in: `{"index":{"fields":["a"],"selector":{"email":"a@b"}}}`, code: codeUnprotected},
		{name: "unknown top member", in: `{"index":{"fields":["a"]},"partial_filter_selector":{"email":"a@b"}}`, code: codeUnprotected},
		{name: "index not an object", in: `{"index":["a"]}`, code: codeBad},
	})
}

func TestChangesSelector(t *testing.T) {
	p := newProfile(t)
	runXform(t, p, "POST", "/clinic/_changes", "filter=_selector&feed=continuous", []xformCase{
		{name: "selector", in: `{"selector":{"email":"a@b","ward":"B"}}`, want: `{"selector":{"email":⟨contact:"a@b"⟩,"ward":"B"}}`},
		{name: "selector random", in: `{"selector":{"diagnosis":"x"}}`, code: codeUnsupported},
		{name: "unknown member", in: `{"selector":{},"query_params":{"ssn":"1"}}`, code: codeUnprotected},
	})
	runXform(t, p, "POST", "/clinic/_changes", "filter=_doc_ids", []xformCase{
		{name: "doc_ids", in: `{"doc_ids":["a","b"]}`, want: `{"doc_ids":["a","b"]}`},
	})
	runXform(t, p, "POST", "/clinic/_changes", "", []xformCase{
		{name: "selector without the filter is sealed too", in: `{"selector":{"email":"a@b"}}`, want: `{"selector":{"email":⟨contact:"a@b"⟩}}`},
	})
}

// A deterministic token sent by _find must be the token the document
// encryptor stored, or lookups would find nothing.
func TestFindTokenMatchesStoredToken(t *testing.T) {
	p := newProfile(t)
	kr := keyring(t)
	ctx := context.Background()
	put := p.Classify(request("PUT", "/clinic/doc", "", true))
	stored, _, err := put.Encryptor.EncryptBytes(ctx, []byte(`{"email":"a@b","accounts":[{"iban":"DE1"}]}`), kr, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, sel := range []string{`{"email":"a@b"}`, `{"email":"\u0061@b"}`, `{"email":{"$in":["a@b"]}}`} {
		out, err := transform(t, p, "POST", "/clinic/_find", "", `{"selector":`+sel+`}`)
		if err != nil {
			t.Fatal(err)
		}
		token := firstToken(t, out)
		if !strings.Contains(string(stored), `"email":`+token) {
			t.Errorf("%s: _find sends %s, the document holds %s", sel, token, stored)
		}
	}
	out, err := transform(t, p, "POST", "/clinic/_find", "", `{"selector":{"accounts":{"$elemMatch":{"iban":"DE1"}}}}`)
	if err != nil {
		t.Fatal(err)
	}
	token := firstToken(t, out)
	if !strings.Contains(string(stored), `"iban":`+token) {
		t.Errorf("$elemMatch sends %s, the document holds %s", token, stored)
	}

	// A lookup by a stored token passes it as it is, as the encryptor
	// would store it.
	tokOnly := token[1 : len(token)-1]
	out, err = transform(t, p, "POST", "/clinic/_find", "", `{"selector":{"accounts.iban":"`+tokOnly+`"}}`)
	if err != nil {
		t.Fatal(err)
	}
	if out != `{"selector":{"accounts.iban":"`+tokOnly+`"}}` {
		t.Errorf("a token was sealed again: %s", out)
	}
}

func TestFindNeverForwardsPlaintext(t *testing.T) {
	p := newProfile(t)
	const secret = "s3cr3t@example.org"
	for _, sel := range []string{
		`{"email":"` + secret + `"}`,
		`{"$or":[{"ward":"B"},{"email":"` + secret + `"}]}`,
		`{"$nor":[{"$and":[{"email":{"$in":["x","` + secret + `"]}}]}]}`,
		`{"contact":{"email":{"$ne":"` + secret + `"}}}`,
		`{"people":{"$elemMatch":{"email":"` + secret + `"}}}`,
		`{"email":{"$or":["` + secret + `"]}}`,
		`{"meta\\.tag":"` + secret + `"}`,
		`{"accounts.+0.iban":"` + secret + `"}`,
	} {
		out, err := transform(t, p, "POST", "/clinic/_find", "", `{"selector":`+sel+`}`)
		if err != nil {
			t.Errorf("%s: %v", sel, err)
			continue
		}
		if strings.Contains(out, secret) {
			t.Errorf("%s forwarded in plaintext: %s", sel, out)
		}
	}
	// Refusals do not quote it either.
	for _, sel := range []string{`{"ssn":"` + secret + `"}`, `{"email":{"$gt":"` + secret + `"}}`, `{"$text":"` + secret + `"}`} {
		_, err := transform(t, p, "POST", "/clinic/_find", "", `{"selector":`+sel+`}`)
		if err == nil || strings.Contains(err.Error(), secret) {
			t.Errorf("%s: %v", sel, err)
		}
	}
}

func TestKeyUnavailable(t *testing.T) {
	p := newProfile(t)
	op := p.Classify(request("POST", "/clinic/_find", "", true))
	if len(op.Keys) != 2 || op.Keys[0] != "contact" || op.Keys[1] != "pii" {
		t.Errorf("Keys = %v, want the searchable keys [contact pii]", op.Keys)
	}
	_, err := op.Transform(context.Background(), []byte(`{"selector":{"email":"a@b"}}`), fieldcrypt.NewStaticKeyring(testKey(t, "pii")))
	if !errors.Is(err, fieldcrypt.ErrUnknownKey) {
		t.Fatalf("err = %v, want ErrUnknownKey", err)
	}
	if !strings.HasPrefix(err.Error(), "couchdb: ") || strings.Contains(err.Error(), "a@b") {
		t.Errorf("err = %v", err)
	}
}

func TestParseField(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // members joined by '|', or "!" for a refusal
	}{
		{"a", "a"},
		{"a.b.c", "a|b|c"},
		{`a\.b`, "a.b"},
		{`a.b\.c`, "a|b.c"},
		{`\$eq`, "$eq"},
		{`a\b`, "!"},
		{`a\\.b`, "!"},
		{"a..b", "!"},
		{".a", "!"},
		{"a.", "!"},
		{"", "!"},
	} {
		got, ref := parseField(tc.in)
		s := strings.Join(got, "|")
		if ref != nil {
			s = "!"
		}
		if s != tc.want {
			t.Errorf("parseField(%q) = %q, want %q", tc.in, s, tc.want)
		}
	}
}

func TestFieldAtReadings(t *testing.T) {
	c := clinic()
	for _, tc := range []struct {
		path   string
		field  string
		inside bool
		bad    bool
	}{
		{path: "accounts.iban", field: "accounts.iban"},
		{path: "accounts.0.iban", field: "accounts.iban"},
		{path: "accounts.-1.iban", field: "accounts.iban"},
		{path: "accounts.0.1.iban", field: "accounts.iban"},
		{path: "address.0.city", field: "address", inside: true},
		{path: "x.0", field: ""},
		{path: "0.email", field: "email"},
		{path: "a.1.b.2.c.3.d.4.e.5.f.6.g.7", bad: true},
	} {
		f, inside, ref := fieldAt(c, strings.Split(tc.path, "."))
		if tc.bad {
			if ref == nil {
				t.Errorf("%s: not refused", tc.path)
			}
			continue
		}
		name := ""
		if f != nil {
			name = f.Name
		}
		if ref != nil || name != tc.field || inside != tc.inside {
			t.Errorf("%s: %q %v %v, want %q %v", tc.path, name, inside, ref, tc.field, tc.inside)
		}
	}
}

// firstToken returns the first token in a JSON text, quotes included.
func firstToken(t *testing.T, s string) string {
	t.Helper()
	i := strings.Index(s, `"sc`)
	if i < 0 || !fieldcrypt.HasTokenPrefix(s[i+1:]) {
		t.Fatalf("no token in %s", s)
	}
	j := strings.IndexByte(s[i+1:], '"')
	return s[i : i+j+2]
}
