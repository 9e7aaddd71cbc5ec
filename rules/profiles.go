package rules

// The datastore profiles that version 2 files can name. Each registers
// itself with the datastore package in its init; importing it here makes
// it available wherever rules are compiled (serve, lint, the admin API).
import (
	_ "github.com/sidecrypt/sidecrypt/datastore/couchdb"
	_ "github.com/sidecrypt/sidecrypt/datastore/elasticsearch"
	_ "github.com/sidecrypt/sidecrypt/datastore/rest"
)
