// Package doctest runs the shell blocks of sidecrypt's operator
// documentation (README.md, docs/KEK.md, docs/KEYS.md, docs/OPERATIONS.md,
// docs/DEPLOY.md) as a new operator would type them, against real
// SoftHSM2, pouchdb-server and etcd, and compares the output the docs show
// with what the commands print. It is a test only (`go test
// ./internal/doctest`, part of `make test`), so that the docs cannot drift
// from the binary again.
//
// # Marking a block
//
// Every ```sh, ```bash, ```console block, and every plain ``` block whose
// first line starts with "$ ", must be preceded by a marker comment, which
// GitHub does not render:
//
//	<!-- doctest: run -->            run it
//	<!-- doctest: skip REASON -->    do not run it, and say why (needs a
//	                                 Kubernetes cluster, a Docker engine, ...)
//	<!-- doctest: file NAME -->      write the block (any language) to NAME
//	<!-- doctest: output COMMAND --> run COMMAND and compare its output with
//	                                 the block (a plain ``` block of output)
//	<!-- doctest: is PATH -->        the block is the repository file PATH,
//	                                 byte for byte (examples/deploy/...,
//	                                 which deploy_test.go checks)
//
// A marker may carry options after run, separated by ";":
//
//	background        (sh) the block's last command (sidecrypt serve) runs
//	                  in the background until the document ends; the next
//	                  block starts once the admin listener answers /healthz
//	stdin TEXT        (console) each command runs on a terminal (script(1))
//	                  and is typed TEXT and Enter, for confirmation prompts
//	exit N            (console) the last command must exit with status N
//
// A hidden setup, for what an operator already has (their own sample
// document, their datastore's CA file), is a multi-line comment:
//
//	<!-- doctest: setup
//	printf '{"docs":[{"ssn":"123-45-6789"}]}' > sample.json
//	-->
//
// Use it sparingly: what a reader must type belongs in a visible block.
//
// # How a document runs
//
// Each document is one session in a fresh directory, like one terminal:
// its blocks run in order with bash, and the working directory and every
// exported variable carry over from block to block. HOME is a fresh
// directory too. sidecrypt, built once for the test, is on PATH and at
// bin/sidecrypt; `make build` stands for that build; examples/ and .deps/
// are the checkout's. `sudo` runs its
// command, and `apt-get install PKG` only checks that PKG is installed
// (scripts/deps.sh test installed it). pouchdb-server (in memory) and,
// for documents that use etcd://, a one-member etcd run on free ports.
//
// Addresses are rewritten in the blocks before they run, so that a test
// never needs a fixed port: 127.0.0.1:5984 (the datastore) becomes
// pouchdb-server's, 127.0.0.1:8080 and :8081 (the proxy and admin
// listeners, whose defaults SIDECRYPT_LISTEN and SIDECRYPT_ADMIN_LISTEN
// are set to) free ports, and 10.0.0.1:2379 (etcd) the test's etcd.
//
// # How output is compared
//
// In a console block, "$ " starts a command (a trailing "\" continues it);
// the lines up to the next command are its expected output, stdout and
// stderr together. A command without shown output is not compared, only
// required to succeed. Before comparing, both sides are normalised: runs
// of spaces become one, trailing spaces go, and these stand for any value
// of their kind: RFC 3339 times, hex strings of 12 or more digits
// (fingerprints, ids), numbers of 6 or more digits (temporary names,
// counters), sc1./sc2. field tokens, and ports after 127.0.0.1:.
// The session directory's path is removed from the output. A line "..."
// matches any number of lines, and "…" (or "...") inside a line matches
// any text. Log lines (time=... level=...) are left out of the output
// unless the block shows one.
package doctest
