#!/usr/bin/env bash
# Runs sidecrypt's benchmarks and writes the results into docs/BENCHMARKS.md,
# between the markers <!-- bench:begin --> and <!-- bench:end --> (the rest
# of the file is hand-written and left alone). `make bench` runs it after
# building bin/sidecrypt.
#
#   1. Go micro-benchmarks of the packages on the hot path.
#   2. A closed-loop load test: direct, nginx, sidecrypt with no rule
#      matching and sidecrypt encrypting 4 fields per 1 KiB document, in
#      interleaved rounds at a fixed concurrency (maximum throughput).
#   3. An open-loop load test at half of sidecrypt's maximum throughput
#      (measured again by a calibration), for the p99 latency it adds.
#   4. Issue 16's comparison with wrk as the load generator: nginx,
#      sidecrypt with no rule matching and sidecrypt encrypting 4 fields
#      (writes), then reads with the 4 fields decrypted, proxy CPU per
#      request from /proc around each wrk round; and the goal table
#      (scripts/benchgoals) with allocations per request from
#      BenchmarkServeHTTP.
#
# The load average is recorded before and after each load test: compare
# figures taken on a quiet machine only (other builds and tests on the
# same two cores inflate every CPU-per-request figure, nginx's included).
#
# Settings (environment): BENCH_ROUNDS (4), BENCH_ROUND (3s),
# BENCH_CONCURRENCY (16), BENCH_BENCHTIME (1s for the Go benchmarks),
# BENCH_WRK_ROUNDS (3), BENCH_WRK_ROUND (5s), BENCH_WRK_CONNECTIONS (32),
# BENCH_BASELINE (another sidecrypt binary, e.g. the previous commit's: its
# sidecars are measured by the same wrk comparison, as "before"),
# BENCH_DOC (docs/BENCHMARKS.md: the file the section goes into),
# BENCH_REPORT (loadtest-report.html: the HTML report of the open loop's
# comparison is written next to the closed loop's, -closed.html).
# With a 2-core machine the whole script takes about 4-6 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=bin/sidecrypt
doc=${BENCH_DOC:-docs/BENCHMARKS.md}
rounds=${BENCH_ROUNDS:-4}
round=${BENCH_ROUND:-3s}
concurrency=${BENCH_CONCURRENCY:-16}
benchtime=${BENCH_BENCHTIME:-1s}
report=${BENCH_REPORT:-loadtest-report.html}

if [ ! -x "$bin" ]; then
  echo "bench: $bin is missing; run 'make build' (or 'make bench', which does)" >&2
  exit 1
fi
round_s=${round%s}
case $round_s in
  ''|*[!0-9]*) echo "bench: BENCH_ROUND=$round: want whole seconds, e.g. 3s" >&2; exit 2 ;;
esac
duration="$((rounds * round_s))s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "bench: Go micro-benchmarks (-benchtime $benchtime)" >&2
pkgs=()
for p in fieldcrypt keycache hsm proxy rules; do
  [ -d "$p" ] && pkgs+=("./$p/")
done
micro_cmd="go test -run '^\$' -bench . -benchmem -benchtime $benchtime ${pkgs[*]}"
# A package without benchmarks prints "no test files" or nothing: fine. A
# package that fails is reported in the section, and the load test still
# runs.
if ! go test -run '^$' -bench . -benchmem -benchtime "$benchtime" "${pkgs[@]}" >"$work/micro.txt" 2>&1; then
  echo "bench: some micro-benchmarks failed; see the FAIL lines in $doc" >&2
fi
cat "$work/micro.txt" >&2

closed_args=(loadtest --workload write --doc-size 1KiB --concurrency "$concurrency"
  --duration "$duration" --round "$round" --warmup 2s)
echo "bench: sidecrypt ${closed_args[*]}" >&2
"$bin" "${closed_args[@]}" --markdown "$work/closed.md" --report "${report%.html}-closed.html" >"$work/closed.txt"
cat "$work/closed.txt" >&2

# The calibration inside the open-loop run uses the same concurrency as the
# closed loop, so "maximum" means the same thing in both.
open_args=(loadtest --workload write --doc-size 1KiB --rate 50% --concurrency "$concurrency"
  --duration "$duration" --round "$round" --warmup 1s)
echo "bench: sidecrypt ${open_args[*]}" >&2
"$bin" "${open_args[@]}" --markdown "$work/open.md" --report "$report" --json >"$work/open.json"
cat "$work/open.md" >&2

load() { cut -d' ' -f1-3 /proc/loadavg; }
wrk_rounds=${BENCH_WRK_ROUNDS:-3}
wrk_round=${BENCH_WRK_ROUND:-5s}
wrk_conns=${BENCH_WRK_CONNECTIONS:-32}
wrk_round_s=${wrk_round%s}
wrk_duration="$((wrk_rounds * wrk_round_s))s"
wrk_args=(loadtest --generator wrk --doc-size 1KiB --concurrency "$wrk_conns" --duration "$wrk_duration"
  --round "$wrk_round" --warmup 2s --setup-docs 1000 --targets nginx,sidecrypt-passthrough,sidecrypt)
# wrk_compare NAME [extra loadtest args]: the write and the read comparison.
wrk_compare() {
  local name=$1
  shift
  for w in write read; do
    echo "bench: sidecrypt ${wrk_args[*]} --workload $w $*" >&2
    echo "$(load)" >"$work/$name-$w.load0"
    "$bin" "${wrk_args[@]}" --workload "$w" "$@" --json --markdown "$work/$name-$w.md" >"$work/$name-$w.json"
    echo "$(load)" >"$work/$name-$w.load1"
  done
  # The open loop and the micro-benchmarks measured this build: they go
  # into its table only, not into the baseline's.
  local own=()
  if [ "$name" = after ]; then
    own=(-open "$work/open.json" -micro "$work/micro.txt")
  fi
  go run ./scripts/benchgoals -write "$work/$name-write.json" -read "$work/$name-read.json" \
    "${own[@]}" >"$work/$name-goals.md"
}
# The engine probe (scripts/engineprobe, its own module so that fasthttp
# stays out of sidecrypt's): the same pass-through on net/http +
# ReverseProxy (with the standard Transport and with a direct round
# tripper like sidecrypt's), on fasthttp, and on fasthttp's server in front
# of the net/http handler (fasthttpadaptor), measured beside nginx and
# sidecrypt, for the engine choice of issue 16 (docs/BENCHMARKS.md, "HTTP
# engine").
engine_args=()
if (cd scripts/engineprobe && go build -o "$work/engineprobe" .) >&2; then
  for e in nethttp nethttp-direct fasthttp fasthttp-adaptor; do
    engine_args+=(--target-cmd "engine-$e=$work/engineprobe -engine $e -listen {listen} -upstream {upstream}")
  done
else
  echo "bench: the engine probe did not build; the comparison goes on without it" >&2
fi
wrk_compare after "${engine_args[@]}"
# The same comparison with the sidecars on the other engine, net/http and
# httputil.ReverseProxy (SIDECRYPT_ENGINE=nethttp), nginx beside them again.
wrk_compare net --engine nethttp
# And with one core's worth of Go scheduler (GOMAXPROCS=1 for the load
# test, so nginx gets one worker and the sidecars and the upstream one P):
# what a sidecar limited to one CPU runs as (Go sizes GOMAXPROCS from the
# cgroup's CPU limit).
GOMAXPROCS=1 wrk_compare one
if [ -n "${BENCH_BASELINE:-}" ]; then
  wrk_compare before --sidecar-exe "$BENCH_BASELINE"
fi

cpu=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
{
  echo "<!-- bench:begin -->"
  echo "<!-- Generated by scripts/bench.sh (make bench); edits here are overwritten. -->"
  echo "## Latest run"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "- machine: $(nproc) CPUs, ${cpu:-unknown CPU}, $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) memory, kernel $(uname -r)"
  echo "- Go: $(go env GOVERSION)"
  echo
  echo "### Issue 16: reverse mode against nginx, wrk as the load generator"
  echo
  echo '```'
  echo "sidecrypt ${wrk_args[*]} --workload write|read"
  echo '```'
  echo
  echo "The sidecars run on the default engine (fasthttp in reverse mode). Load average (1, 5, 15 min) before and after: writes $(cat "$work/after-write.load0") / $(cat "$work/after-write.load1"); reads $(cat "$work/after-read.load0") / $(cat "$work/after-read.load1")."
  echo
  cat "$work/after-goals.md"
  echo
  echo "The same with the sidecars on the net/http engine (\`--engine nethttp\`, SIDECRYPT_ENGINE=nethttp; load average: writes $(cat "$work/net-write.load0") / $(cat "$work/net-write.load1"); reads $(cat "$work/net-read.load0") / $(cat "$work/net-read.load1")):"
  echo
  cat "$work/net-goals.md"
  echo
  echo "The same on the default engine with GOMAXPROCS=1 for the whole run (nginx one worker, sidecars and upstream one P; load average: writes $(cat "$work/one-write.load0") / $(cat "$work/one-write.load1"); reads $(cat "$work/one-read.load0") / $(cat "$work/one-read.load1")):"
  echo
  cat "$work/one-goals.md"
  if [ -n "${BENCH_BASELINE:-}" ]; then
    echo
    echo "Before: the same comparison with the sidecars of $BENCH_BASELINE (load average: writes $(cat "$work/before-write.load0") / $(cat "$work/before-write.load1"); reads $(cat "$work/before-read.load0") / $(cat "$work/before-read.load1")):"
    echo
    cat "$work/before-goals.md"
  fi
  echo
  echo "<details><summary>wrk runs in full</summary>"
  echo
  cat "$work/after-write.md"
  echo
  cat "$work/after-read.md"
  echo
  echo "</details>"
  echo
  echo "### Load test: maximum throughput (closed loop)"
  echo
  echo '```'
  echo "sidecrypt ${closed_args[*]}"
  echo '```'
  echo
  cat "$work/closed.md"
  echo
  echo "### Load test: latency at half of sidecrypt's maximum (open loop)"
  echo
  echo '```'
  echo "sidecrypt ${open_args[*]}"
  echo '```'
  echo
  cat "$work/open.md"
  echo
  echo "### Go micro-benchmarks"
  echo
  echo '```'
  echo "$micro_cmd"
  echo '```'
  echo
  echo '```'
  grep -E '^(Benchmark|goos|goarch|pkg|cpu|ok|PASS|FAIL|\?|#)|: ' "$work/micro.txt" | grep -v '^ok .*no test files' || echo "(no benchmarks)"
  echo '```'
  echo "<!-- bench:end -->"
} >"$work/section.md"

# Replace the generated section, or append it (creating the file if need be).
if [ ! -f "$doc" ]; then
  printf '# Benchmarks\n\n' >"$doc"
fi
if grep -q '<!-- bench:begin -->' "$doc"; then
  awk -v section="$work/section.md" '
    /<!-- bench:begin -->/ { while ((getline line < section) > 0) print line; skip = 1; next }
    /<!-- bench:end -->/   { skip = 0; next }
    !skip { print }
  ' "$doc" >"$work/doc.md"
  cat "$work/doc.md" >"$doc"
else
  { echo; cat "$work/section.md"; } >>"$doc"
fi
echo "bench: wrote $doc, $report and ${report%.html}-closed.html" >&2
