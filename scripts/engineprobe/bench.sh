#!/usr/bin/env bash
# Rough engine comparison: wrk through each engineprobe engine against
# sidecrypt's built-in upstream, with the proxy's CPU time per request read
# from /proc/PID/stat. Usage (from the repo root):
#   scripts/engineprobe/bench.sh [DURATION] [CONNECTIONS]
set -euo pipefail
dur=${1:-5s}
conns=${2:-32}
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

(cd "$root/scripts/engineprobe" && go build -o "$tmp/engineprobe" .)
(cd "$root" && go build -o "$tmp/sidecrypt" ./cmd/sidecrypt)

up=127.0.0.1:18980
"$tmp/sidecrypt" loadtest upstream --listen "$up" 2>"$tmp/upstream.log" &
pids+=($!)
for _ in $(seq 50); do curl -sf "http://$up/" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf -X PUT "http://$up/bench" >/dev/null
curl -sf -X PUT "http://$up/bench/d1" -H 'Content-Type: application/json' -d '{"name":"x"}' >/dev/null

cat >"$tmp/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"type":"patient","name":"Alice Example","ssn":"123-45-6789","email":"alice.example@example.com",' ..
  '"diagnosis":"Acute bronchitis, follow-up in two weeks; no known drug allergies",' ..
  '"card":{"number":"4111111111111111","exp":"12/30","holder":"ALICE EXAMPLE"},' ..
  '"address":{"street":"1 Example Street","city":"Springfield","zip":"12345","country":"US"},' ..
  '"notes":"Patient reports improvement since the last visit. Continue current medication and re-check.",' ..
  '"tags":["outpatient","respiratory","2026"],"visits":3,"active":true}'
LUA

tck=$(getconf CLK_TCK)
cputicks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# measure NAME PID URL [wrk args...]
measure() {
  local name=$1 pid=$2 url=$3; shift 3
  wrk -t2 -c"$conns" -d1s "$@" "$url" >/dev/null # warm up
  local t0 t1 out reqs rps
  t0=$(cputicks "$pid")
  out=$(wrk -t2 -c"$conns" -d"$dur" "$@" "$url")
  t1=$(cputicks "$pid")
  reqs=$(awk '/requests in/{print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  awk -v n="$name" -v r="$reqs" -v s="$rps" -v d="$((t1 - t0))" -v t="$tck" \
    'BEGIN{printf "%-28s %10.0f req/s  %6.1f us CPU/req\n", n, s, d/t*1e6/r}'
  grep -E 'Non-2xx|Socket errors' <<<"$out" || true
}

echo "# $(date -u +%FT%TZ) nproc=$(nproc) cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) wrk -t2 -c$conns -d$dur"
echo "# loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
measure "upstream direct GET" "${pids[0]}" "http://$up/bench/d1"
port=18981
for transform in "" -transform; do
  for engine in nethttp fasthttp; do
    "$tmp/engineprobe" -engine "$engine" -listen "127.0.0.1:$port" -upstream "http://$up" $transform 2>>"$tmp/probe.log" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/bench/d1" >/dev/null 2>&1 && break; sleep 0.1; done
    measure "$engine${transform:+ $transform} GET" "$pid" "http://127.0.0.1:$port/bench/d1"
    measure "$engine${transform:+ $transform} POST" "$pid" "http://127.0.0.1:$port/bench" -s "$tmp/post.lua"
    kill -TERM "$pid"
    wait "$pid" || echo "engineprobe $engine exited with $?"
    port=$((port + 1))
  done
done
echo "# loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)"
