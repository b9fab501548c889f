#!/usr/bin/env bash
# Instructions per request, route by route, under callgrind: the floor of the stack
# (crates/lab/examples/floor.rs) beside `flyrtech serve`, each on a private redis-server. Counts
# repeat from run to run where times do not (valgrind counts what the server executes, whatever
# else the machine does), so a change of a few per cent is visible. Each server runs with
# callgrind's instrumentation off until a warm-up is done; then `callgrind_control -i on`, a
# fixed load (wrk, 2 threads, 8 connections), `callgrind_control -d`, and the dump's total over
# the requests wrk counted (at most 8 more were in flight: under 1 % at the counts seen).
#
#   tools/http-bench/instructions.sh [SERVER ...]    (default: floor serve:hash)
#
# SERVER is `floor`, `serve:STRATEGY` (target/release/flyrtech), or `bin:PATH:STRATEGY` (another
# build of flyrtech, e.g. an earlier commit's, to compare two builds side by side).
# Environment: DURATION (seconds of measured load per run, default 10), OUT (default
# docs/results/http-instructions.txt), PROFILES (a directory: each run's callgrind_annotate
# summary is written there; default docs/results/profiles), KEEP_DUMPS (a directory for the raw
# callgrind dumps, for callgrind_annotate or kcachegrind; default none), EXTRA_ENV (set in every server's
# environment, e.g. EXTRA_ENV="OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:9"), ROUTES (which
# routes, default "health get put")
set -euo pipefail
cd "$(dirname "$0")/../.."
servers=("$@")
[ ${#servers[@]} -gt 0 ] || servers=(floor serve:hash)
duration=${DURATION:-10}
out=${OUT:-docs/results/http-instructions.txt}
profiles=${PROFILES:-docs/results/profiles}
mkdir -p "$(dirname "$out")" "$profiles"
command -v valgrind >/dev/null || { echo "needs valgrind (Debian: apt-get install valgrind)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "needs wrk (Debian: apt-get install wrk)" >&2; exit 1; }
cargo build --release -q -p flyrtech-api --bin flyrtech && cargo build --release -q -p flyrtech-lab --example floor
# shellcheck source=tools/http-bench/lib.sh
source tools/http-bench/lib.sh
scratch

measure() { # server route(health|get|put)
  local server=$1 route=$2 rport hport rpid spid url script=() cmd=() label
  rport=$(free_port); hport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    --logfile "$work/redis.log" &
  rpid=$!; pids+=("$rpid")
  until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.05; done
  case $server in
    floor) cmd=(target/release/examples/floor "redis://127.0.0.1:$rport" "127.0.0.1:$hport"); label=floor ;;
    serve:*) cmd=(target/release/flyrtech --redis-url "redis://127.0.0.1:$rport" serve
      --strategy "${server#serve:}" --rate-limit off --listen "127.0.0.1:$hport"); label=$server ;;
    bin:*) local rest=${server#bin:}; cmd=("${rest%:*}" --redis-url "redis://127.0.0.1:$rport" serve
      --strategy "${rest##*:}" --rate-limit off --listen "127.0.0.1:$hport"); label="$(basename "${rest%:*}"):${rest##*:}" ;;
  esac
  # shellcheck disable=SC2086
  env ${EXTRA_ENV:-} valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$work/cg.out" "${cmd[@]}" >"$work/server.log" 2>&1 &
  spid=$!; pids+=("$spid")
  wait_for "http://127.0.0.1:$hport/health" 60
  case $route in
    health) url="http://127.0.0.1:$hport/health" ;;
    get) url="http://127.0.0.1:$hport/api/journeys/JRN-001" ;;
    put) url="http://127.0.0.1:$hport"; script=(-s tools/http-bench/put.lua) ;;
  esac
  wrk -t2 -c8 -d2s "${script[@]}" "$url" >/dev/null # warm-up, uninstrumented
  callgrind_control -i on "$spid" >/dev/null 2>&1
  local report n bad ir
  report=$(wrk -t2 -c8 -d"${duration}s" "${script[@]}" "$url")
  callgrind_control -d "$spid" >/dev/null 2>&1
  n=$(echo "$report" | awk '/ requests in / {print $1}')
  bad=$(echo "$report" | awk '/Non-2xx or 3xx responses:/ {print $5}')
  local dump
  dump=$(ls -t "$work"/cg.out.* | head -n 1)
  ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
  # The profile: the functions by their own instructions, then by instructions including what
  # they call (the first 60 of each).
  local profile
  profile="$profiles/$(echo "$label" | tr ':/' '--')-$route.txt"
  callgrind_annotate --threshold=90 "$dump" >"$work/self.txt" 2>/dev/null || true
  callgrind_annotate --threshold=90 --inclusive=yes "$dump" >"$work/inclusive.txt" 2>/dev/null || true
  {
    echo "# $label $route: $n requests; instructions per request = the totals / $n"
    echo "# by own instructions"
    sed -n '/^Ir/,$p' "$work/self.txt" | sed -n 1,62p
    echo "# including callees"
    sed -n '/^Ir/,$p' "$work/inclusive.txt" | sed -n 4,124p
  } | sed -e 's#/root/.cargo/registry/src/index.crates.io-[0-9a-f]*/##' \
      -e 's#/rustc/[0-9a-f]*/##' -e "s#$PWD/##g" >"$profile"
  [ -z "${KEEP_DUMPS:-}" ] || cp "$dump" "$KEEP_DUMPS/$(basename "$profile" .txt).callgrind"
  kill "$spid" "$rpid"; wait "$spid" "$rpid" 2>/dev/null || true
  rm -f "$work"/cg.out*
  awk -v ir="$ir" -v n="$n" -v bad="${bad:-0}" -v label="$label" -v route="$route" \
    'BEGIN {printf "%-22s %-7s %9d %8d %16.0f\n", label, route, n, bad, ir / n}' | tee -a "$out"
}

{
  echo "# tools/http-bench/instructions.sh ${servers[*]}  ($(date -u +%Y-%m-%dT%H:%M:%SZ))${EXTRA_ENV:+  EXTRA_ENV=$EXTRA_ENV}"
  echo "# callgrind, wrk 2 threads 8 connections ${duration}s per run after a 2 s uninstrumented warm-up; instructions per answered request (the server process only)"
  printf '%-22s %-7s %9s %8s %16s\n' server route requests non-2xx instr/request
} | tee "$out"
for route in ${ROUTES:-health get put}; do
  for server in "${servers[@]}"; do
    measure "$server" "$route" # in this shell, so that the exit trap knows its processes
  done
done
