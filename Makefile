# sidecrypt — build, test, benchmark and demo.
# `make test` and `make demo` install what they need (scripts/deps.sh).

GO        ?= go
BIN       := bin/sidecrypt
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
# -race needs cgo, and PKCS#11 needs cgo: build with it on.
export CGO_ENABLED := 1
# Tests must not pass by skipping a component that is missing.
export SIDECRYPT_TEST_REQUIRE_ALL := 1

.PHONY: all build test test-short bench demo lint deps clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/sidecrypt

deps:
	scripts/deps.sh all

# Every test, with the race detector, against real SoftHSM2, etcd and
# pouchdb-server. Also checks that a build without cgo still works (the
# PKCS#11 stub) and that the code is formatted and vetted.
test:
	scripts/deps.sh test
	$(MAKE) --no-print-directory lint
	CGO_ENABLED=0 $(GO) build -tags nopkcs11 -o /dev/null ./cmd/sidecrypt
	$(GO) test -race -count=1 -timeout 25m ./...
	# The reverse-mode proxy tests and the end-to-end suite (recording
	# relay, attacks, real clients) again on the net/http engine (the
	# run above uses the default, fasthttp).
	SIDECRYPT_TEST_ENGINE=nethttp $(GO) test -count=1 -timeout 10m ./proxy ./internal/e2e

# Quick loop while editing: no race detector, no long tests.
test-short:
	$(GO) test -short ./...

# Go micro-benchmarks and a short load-test comparison; writes the tables
# into docs/BENCHMARKS.md.
bench: build
	scripts/deps.sh bench
	scripts/bench.sh

# Starts pouchdb-server and the sidecar, writes records through it, shows
# what the app sees next to what the datastore holds, stops both.
demo: build
	scripts/deps.sh demo
	$(BIN) demo

# gofmt, go vet, and go.mod/go.sum exactly as go mod tidy leaves them (a
# direct dependency marked indirect, or a missing go.sum line, fails).
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@$(GO) mod tidy -diff || { echo "go.mod or go.sum is not tidy: run go mod tidy"; exit 1; }

clean:
	rm -rf bin
