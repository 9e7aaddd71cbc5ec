#!/usr/bin/env bash
# Installs what sidecrypt's tests, demo and benchmarks need when it is
# missing, and does nothing when it is present:
#   softhsm2      (apt)  the PKCS#11 token for the HSM tests
#   etcd-server   (apt)  the shared keystore for the multi-sidecar tests
#   nginx         (apt)  the plain reverse proxy the load test compares with
#   wrk           (apt)  the load generator `sidecrypt loadtest --generator wrk`
#                        and `make bench` drive the comparison with
#   chromium      (apt)  the headless browser that renders `rules report` HTML
#   systemd       (apt)  systemd-analyze verify, for the example unit (no
#                        running systemd needed)
#   zsh           (apt)  the zsh completion script's test
#   curl          (apt)  the requests the docs show (internal/doctest)
#   pouchdb-server (npm) the CouchDB-API datastore of the end-to-end tests,
#                        pinned in scripts/pouchdb, installed into .deps/
#                        with json-server (the REST store of the rest
#                        profile's tests) and the unmodified clients the
#                        tests drive (nano, PouchDB, @elastic/elasticsearch)
#   local-kms     (go)   the AWS KMS emulator of the awskms tests, built
#                        with go install into .deps/bin
# Usage: scripts/deps.sh [all|test|demo|bench]
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
need_apt=()

have() { command -v "$1" >/dev/null 2>&1; }

case $what in
  all|test) want_apt=(softhsm2:softhsm2-util etcd-server:etcd nginx-light:nginx wrk:wrk chromium:chromium systemd:systemd-analyze zsh:zsh curl:curl) ;;
  bench)    want_apt=(softhsm2:softhsm2-util nginx-light:nginx wrk:wrk) ;;
  demo)     want_apt=() ;;
  *) echo "usage: $0 [all|test|demo|bench]" >&2; exit 2 ;;
esac

for pair in "${want_apt[@]}"; do
  pkg=${pair%%:*} bin=${pair##*:}
  # nginx and etcd install their binaries in sbin or bin depending on the
  # package; look in both.
  if ! have "$bin" && [ ! -x "/usr/sbin/$bin" ] && [ ! -x "/usr/bin/$bin" ]; then
    need_apt+=("$pkg")
  fi
done

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "deps: installing ${need_apt[*]} with apt-get" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian starts services on install; the tests start their own on free
  # loopback ports, so stop the system ones.
  for svc in nginx etcd; do
    $sudo service "$svc" stop >/dev/null 2>&1 || true
  done
fi

# pouchdb-server: installed once into .deps/pouchdb from the lock file.
pouch=.deps/pouchdb/node_modules/.bin/pouchdb-server
if [ ! -x "$pouch" ] || ! cmp -s scripts/pouchdb/package-lock.json .deps/pouchdb/package-lock.json; then
  if ! have npm; then
    echo "deps: npm is needed to install pouchdb-server (the test datastore)" >&2
    exit 1
  fi
  echo "deps: installing pouchdb-server with npm into .deps/pouchdb" >&2
  mkdir -p .deps/pouchdb
  cp scripts/pouchdb/package.json scripts/pouchdb/package-lock.json .deps/pouchdb/
  # --ignore-scripts: the native leveldown/sqlite3 builds are not needed
  # for --in-memory and would need a compiler toolchain for node.
  (cd .deps/pouchdb && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null)
fi

# local-kms: the AWS KMS emulator the awskms provider's tests run against,
# built from the Go module proxy (no prebuilt binary is fetched) into
# .deps/bin at the pinned version. Rebuilt when the pin changes.
local_kms_version=v0.0.0-20260228092603-2a5e92d09ab6
case $what in
  all|test)
    if [ ! -x .deps/bin/local-kms ] || [ "$(cat .deps/bin/local-kms.version 2>/dev/null)" != "$local_kms_version" ]; then
      echo "deps: building local-kms $local_kms_version with go install into .deps/bin" >&2
      mkdir -p .deps/bin
      GOBIN="$PWD/.deps/bin" CGO_ENABLED=0 go install "github.com/nsmithuk/local-kms@$local_kms_version"
      echo "$local_kms_version" > .deps/bin/local-kms.version
    fi
    ;;
esac
