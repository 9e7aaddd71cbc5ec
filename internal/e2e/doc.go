// Package e2e holds sidecrypt's end-to-end tests against the real
// datastore: the sidecrypt binary (`sidecrypt serve`, built once per test
// run by TestMain, with -race when the tests run with it) with version 2
// rules in front of pouchdb-server, and between them a recording relay
// (internal/testenv.Relay) that keeps every byte the datastore received.
//
// The tests, each on one set of stores and sidecars:
//
//   - TestEndpoints (endpoints_test.go, clients_test.go): every endpoint
//     of the CouchDB profile, each group run twice, through the sidecar
//     (KEK on SoftHSM2) and against a second pouchdb-server directly. The
//     application must get the same answers both ways (revision hashes,
//     sequences, sizes and server ids normalised; compare_test.go), the
//     relay must have seen no protected value, and the store, read
//     directly, must hold none. Then unmodified real clients, the
//     official CouchDB client nano and PouchDB replication, from node
//     scripts in testdata/clients, compared the same way.
//   - TestAttacks (attack_test.go, forward_test.go): an attacker's suite,
//     one subtest per class of attack, each a table of requests with the
//     exact outcome each must have, the relay proving that nothing (or
//     nothing in plaintext) reached the store; forward mode with a second
//     sidecar in front of the same store.
//   - TestMaskedWriteBackNano (masked_test.go): issue 19 with nano: a
//     card number shown masked (last4) and written back with db.insert
//     and db.bulk keeps its stored value, read through a second sidecar
//     that shares the keystore and opens the card key.
//
// Settings for a run by hand:
//
//	SIDECRYPT_TEST_BINARY=path     run this sidecrypt instead of building one
//	SIDECRYPT_TEST_E2E_DUMP=1      log every compared answer, both sides
//	SIDECRYPT_TEST_E2E_BYPASSES=1  run the attacks skipped as known bypasses
//
// The package has no code outside its tests; this file is its manual.
package e2e
