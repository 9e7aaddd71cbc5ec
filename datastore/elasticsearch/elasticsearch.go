package elasticsearch

import (
	"fmt"
	"slices"
	"strings"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Name is the profile's name in rule files (datastore: elasticsearch).
const Name = "elasticsearch"

// Server-wide operations that the profile refuses unless a rule file's
// allow: list names them. Each can move data into a protected index, or
// change documents inside the datastore in ways the sidecar cannot see.
const (
	// OpReindex: POST /_reindex whose destination or source is a
	// protected index, and _clone, _split and _shrink into a protected
	// index from another collection. A reindex copies documents as they
	// are stored: from an unprotected index, or from a remote cluster, it
	// writes plaintext into a protected one.
	OpReindex = "reindex"
	// OpUpdateByQuery: POST /{index}/_update_by_query on a protected
	// index. It rewrites every matching document inside the datastore,
	// with a script or a pipeline that change fields the sidecar cannot
	// see. When allowed, its query is sealed like a search's; a script
	// still needs "scripts" and a pipeline "pipelines".
	OpUpdateByQuery = "update_by_query"
	// OpDeleteByQuery: POST /{index}/_delete_by_query on a protected
	// index: deletes every matching document in one request. When
	// allowed, its query is sealed like a search's.
	OpDeleteByQuery = "delete_by_query"
	// OpPipelines: ingest pipelines. A pipeline runs inside the datastore
	// on every document it is given, and can create protected fields in
	// plaintext from other fields (json, kv, grok, dissect, csv, enrich)
	// or send the document to another index (set _index, reroute), so a
	// write to any index with ?pipeline= can land in a protected one.
	// Covers the pipeline query parameter and the pipeline member of
	// _bulk action lines on every index, index settings default_pipeline
	// and final_pipeline, writes under /_ingest/pipeline, and
	// /_ingest/pipeline/_simulate.
	OpPipelines = "pipelines"
	// OpScripts: scripts that run on protected documents (an _update or
	// _bulk update script, the script of _update_by_query and _reindex),
	// painless _execute with a protected index as its context, and
	// writes of stored scripts (/_scripts/{id}), which any request can
	// then run by id. A script's params travel in plaintext and the
	// script can write any field.
	OpScripts = "scripts"
	// OpAliases: POST /_aliases, and PUT|POST /{index}/_alias(es)/{name}
	// and an index creation's aliases on a protected index. An alias the
	// rule file does not name is a second name for a protected index
	// under which writes would pass unencrypted.
	OpAliases = "aliases"
	// OpTemplates: writes to /_index_template, /_template and
	// /_component_template. A template attaches aliases, default
	// pipelines and mappings to every index created under its patterns,
	// protected ones included.
	OpTemplates = "templates"
	// OpSnapshots: POST /_snapshot/{repo}/{snapshot}/_restore and _mount,
	// and writes under /_dangling: they create or overwrite indices with
	// documents from elsewhere, in whatever form they were stored there.
	OpSnapshots = "snapshots"
	// OpJobs: writes to the background jobs that copy or write documents
	// between indices: transforms, rollups, cross-cluster replication
	// (/_ccr, /{index}/_ccr/follow, OpenSearch's _plugins/_replication),
	// watches, enrich policies, machine learning jobs and their data.
	OpJobs = "jobs"
	// OpSQL: /_sql, /_query (ES|QL), OpenSearch's _plugins/_sql and
	// _plugins/_ppl: the query is text the sidecar cannot read, which
	// names any index and carries compared values in plaintext.
	OpSQL = "sql"
)

// Operations lists the server-wide operations in the order the manual
// gives them.
var Operations = []string{OpReindex, OpUpdateByQuery, OpDeleteByQuery, OpPipelines, OpScripts, OpAliases, OpTemplates, OpSnapshots, OpJobs, OpSQL}

func init() {
	datastore.Register(Name, New, Operations...)
}

// Profile is the Elasticsearch/OpenSearch profile. It is immutable and
// safe for concurrent use.
type Profile struct {
	schema *datastore.Schema
	cols   []*collection // in file order
	// maxDepth bounds the nesting of the bodies the profile parses.
	maxDepth int
	// resp holds the bound response decryptors (response.go), built on
	// first use: the decrypt policy is filled in after the profile.
	resp responseCache
}

// collection is a protected collection with its fields read the way
// Elasticsearch reads field names: a dot always separates members.
type collection struct {
	orig *datastore.Collection
	// es is orig with every field path split at its dots: Elasticsearch
	// maps {"card.number": x} and {"card": {"number": x}} to one field,
	// card.number, and a rule's escaped dot ("meta\.tag") cannot name
	// anything else there.
	es *datastore.Collection
	// keys are all the keys the collection seals with; searchKeys those
	// of its searchable fields.
	keys, searchKeys []string
	// patterns the collection's name matches: the name as written, and
	// the backing indices of a data stream of that name
	// (.ds-{name}-{date}-{generation}).
	patterns []string
}

// metadataFields are Elasticsearch's metadata fields, which travel in
// URLs and action lines, never inside a document's source.
var metadataFields = []string{"_id", "_index", "_routing", "_source", "_seq_no", "_primary_term", "_version", "_type", "_uid", "_parent", "_field_names", "_ignored", "_tier", "_doc_count", "_data_stream_timestamp", "_size", "_score"}

// New builds the Elasticsearch profile for s. It refuses a field named
// after a metadata field (ids and routing travel in URLs, where nothing
// is encrypted).
func New(s *datastore.Schema) (datastore.Profile, error) {
	p := &Profile{schema: s, maxDepth: fieldcrypt.DefaultMaxDepth}
	if s == nil {
		return p, nil
	}
	for _, c := range s.Collections {
		cc, err := compile(c)
		if err != nil {
			return nil, err
		}
		p.cols = append(p.cols, cc)
	}
	return p, nil
}

func compile(c *datastore.Collection) (*collection, error) {
	es := &datastore.Collection{Name: c.Name, Attachments: c.Attachments, DesignDocs: c.DesignDocs, Line: c.Line}
	cc := &collection{orig: c, es: es, keys: c.Keys(),
		patterns: []string{c.Name, ".ds-" + c.Name + "-*"}}
	for _, f := range c.Fields {
		g := *f
		var path []string
		for _, m := range f.Path {
			path = append(path, strings.Split(m, ".")...)
		}
		for _, m := range path {
			if m == "" {
				return nil, fmt.Errorf("elasticsearch: collection %q: field %q has an empty member, which Elasticsearch refuses in a field name", c.Name, f.Name)
			}
		}
		if slices.Contains(metadataFields, path[0]) {
			return nil, fmt.Errorf("elasticsearch: collection %q: field %q is an Elasticsearch metadata field; ids, routing and index names travel in URLs and action lines, where nothing can be encrypted", c.Name, f.Name)
		}
		g.Path = path
		if len(path) > 1 {
			// "a\.b" is a.b from the root in Elasticsearch.
			g.AnyDepth = false
		}
		es.Fields = append(es.Fields, &g)
		if searchable(f) && !slices.Contains(cc.searchKeys, f.Key) {
			cc.searchKeys = append(cc.searchKeys, f.Key)
		}
	}
	slices.Sort(cc.searchKeys)
	return cc, nil
}

// Name implements datastore.Profile.
func (p *Profile) Name() string { return Name }

func searchable(f *datastore.Field) bool {
	return f.Searchable && f.Mode == fieldcrypt.ModeDeterministic
}

var (
	_ datastore.Profile   = (*Profile)(nil)
	_ datastore.Describer = (*Profile)(nil)
)
