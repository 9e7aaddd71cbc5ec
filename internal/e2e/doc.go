// Package e2e holds sidecrypt's end-to-end tests against the real
// datastore: the sidecrypt binary (`sidecrypt serve`, built once per test
// run) with version 2 rules in front of pouchdb-server, and between them
// a recording relay (internal/testenv.Relay) that keeps every byte the
// datastore received.
//
// Three groups of tests:
//
//   - endpoints_test.go: every endpoint of the CouchDB profile, each run
//     twice, through the sidecar and against a second pouchdb-server
//     directly; the application must get the same answers (revisions,
//     sequence numbers and timestamps normalised), the relay must have
//     seen no protected value, and the store, read directly, must hold
//     none.
//   - clients_test.go: unmodified real clients (the official CouchDB
//     client nano, and PouchDB replication) driven through the sidecar
//     from node scripts in testdata/clients.
//   - attack_test.go, forward_test.go: an attacker's suite, one test per
//     class of attack, each proving with the relay that nothing reached
//     the store and checking the exact refusal.
//
// The package has no code outside its tests; this file is its manual.
package e2e
