#!/usr/bin/env bash
# The HTTP path against its own ceiling and against the stack's floor, with an external load
# generator.
#
#   tools/http-bench/run.sh [STRATEGY ...]        (default: every strategy)
#
# The floor (crates/lab/examples/floor.rs) is the smallest axum + redis-rs server on the
# workspace's own versions: /health answers `ok`, GET does one Redis GET, PUT one HINCRBY. It runs
# beside `serve` on the same Redis, and each round measures both, route by route; the service's
# median is reported as a fraction of the floor's.
#
# For each strategy: a private redis-server on a free port, `flyrtech serve` on it, then wrk
# (or oha, if wrk is missing) with 50 connections against GET /health (no Redis behind it: the
# server's own ceiling), GET /api/journeys/JRN-001 and PUT .../segments/SEG-001-1/status, in
# turn, ROUNDS times (default 3); the median of each is reported with PUT and GET as fractions
# of /health. Only answers of 2xx count: a strategy that refuses under contention (409) is not
# credited with its refusals. Then the lab's view of the same server: `flyrtech-lab compare --http
# BASE --http-floor FLOOR` (spread, 50 writers), which drives /health with its own client too,
# judges the floor targets, and replays the strategy's commands with redis-benchmark on the
# server's Redis, on journeys of two segments like JRN-001: that ceiling is the PUT's second
# yardstick (`put/ceiling`), since a strategy's script or round trips cost Redis more than the
# floor's one HINCRBY. Each strategy's processes are stopped before the next one's start.
#
# Environment: DURATION (seconds per wrk run, default 5), ROUNDS (3), CONNECTIONS (50),
# OUT (default docs/results/http-floor.txt; the lab's JSON goes beside it as http-lab-STRATEGY.json),
# FLYRTECH_BIN (another build of flyrtech to measure, e.g. an older commit's; default: this one).
set -euo pipefail
cd "$(dirname "$0")/../.."
strategies=("$@")
[ ${#strategies[@]} -gt 0 ] || strategies=(naive local-lock optimistic redlock lua hash)
duration=${DURATION:-5}
rounds=${ROUNDS:-3}
connections=${CONNECTIONS:-50}
out=${OUT:-docs/results/http-floor.txt}
mkdir -p "$(dirname "$out")"

bin=${FLYRTECH_BIN:-target/release/flyrtech}
[ -n "${FLYRTECH_BIN:-}" ] || cargo build --release -q -p flyrtech-api
cargo build --release -q -p flyrtech-lab
cargo build --release -q -p flyrtech-lab --example floor
floor=target/release/examples/floor
work=$(mktemp -d)
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  stop_all
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=tools/http-bench/lib.sh
source tools/http-bench/lib.sh

if command -v wrk >/dev/null; then
  tool="wrk $( (wrk -v 2>&1 || true) | head -1 | awk '{print $2}')"
  load() { # URL [PUT]
    local script=()
    [ "${2:-}" = PUT ] && script=(-s tools/http-bench/put.lua)
    # Answers per second that were 2xx: wrk's rate times the share that was not an error.
    wrk -t2 -c"$connections" -d"${duration}s" "${script[@]}" "$1" | awk '
      / requests in / {total = $1}
      /Non-2xx or 3xx responses:/ {bad = $5}
      /Requests\/sec/ {rate = $2}
      END {print (total > 0 ? rate * (total - bad) / total : 0)}'
  }
elif command -v oha >/dev/null; then
  tool="oha $(oha --version | awk '{print $2}')"
  load() {
    local extra=()
    [ "${2:-}" = PUT ] && extra=(-m PUT -H 'Content-Type: application/json' -d '{"status":"Delayed"}')
    oha --no-tui -j -c "$connections" -z "${duration}s" "${extra[@]}" "$1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["summary"]["requestsPerSec"] * d["summary"]["successRate"])'
  }
else
  echo "neither wrk (apt-get install wrk) nor oha (cargo install --locked oha) is installed" >&2
  exit 2
fi
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

{
  echo "# tools/http-bench/run.sh ${strategies[*]}  ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
  echo "# $tool, $connections connections, ${duration}s per run, median of $rounds rounds; redis-server $(redis-server --version | awk '{print $3}' | cut -d= -f2); $(nproc) cores"
  printf '%-10s %10s %10s %10s %8s %8s | %10s %10s %10s | %9s %9s %9s | %10s %11s\n' strategy health_rps get_rps put_rps get/h put/h floor_h floor_get floor_put health/fl get/fl put/fl ceiling put/ceiling
} | tee "$out"

for strategy in "${strategies[@]}"; do
  rport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    --logfile "$work/redis-$strategy.log" &
  pids+=($!)
  until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.05; done
  hport=$(free_port)
  "$bin" --redis-url "redis://127.0.0.1:$rport" serve --strategy "$strategy" --rate-limit off \
    --listen "127.0.0.1:$hport" 2>"$work/serve-$strategy.log" &
  pids+=($!)
  base="http://127.0.0.1:$hport"
  wait_for "$base/health"
  fport=$(free_port)
  "$floor" "redis://127.0.0.1:$rport" "127.0.0.1:$fport" 2>"$work/floor-$strategy.log" &
  pids+=($!)
  fbase="http://127.0.0.1:$fport"
  wait_for "$fbase/health"
  h=(); g=(); p=(); fh=(); fg=(); fp=()
  for _ in $(seq 1 "$rounds"); do
    h+=("$(load "$base/health")");   fh+=("$(load "$fbase/health")")
    g+=("$(load "$base/api/journeys/JRN-001")"); fg+=("$(load "$fbase/api/journeys/JRN-001")")
    p+=("$(load "$base" PUT)");      fp+=("$(load "$fbase" PUT)")
  done
  mh=$(median "${h[@]}"); mg=$(median "${g[@]}"); mp=$(median "${p[@]}")
  fmh=$(median "${fh[@]}"); fmg=$(median "${fg[@]}"); fmp=$(median "${fp[@]}")
  lab_json="$(dirname "$out")/http-lab-$strategy.json"
  lab_row=$(target/release/flyrtech-lab --redis-url "redis://127.0.0.1:$rport" compare --http "$base" --http-floor "$fbase" \
    --scenario spread --segments 2 --json "$lab_json" 2>/dev/null | grep -F "│ $strategy (http)" || true)
  ceiling=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["runs"][0]; print(round((r.get("ceiling") or {}).get("updates_per_second") or 0))' "$lab_json" 2>/dev/null || echo 0)
  printf '%-10s %10.0f %10.0f %10.0f %8.2f %8.2f | %10.0f %10.0f %10.0f | %9.2f %9.2f %9.2f | %10.0f %11s\n' \
    "$strategy" "$mh" "$mg" "$mp" "$(echo "$mg / $mh" | bc -l)" "$(echo "$mp / $mh" | bc -l)" \
    "$fmh" "$fmg" "$fmp" \
    "$(echo "$mh / $fmh" | bc -l)" "$(echo "$mg / $fmg" | bc -l)" "$(echo "$mp / $fmp" | bc -l)" \
    "$ceiling" "$( [ "$ceiling" -gt 0 ] && printf '%.2f' "$(echo "$mp / $ceiling" | bc -l)" || echo -)" \
    | tee -a "$out"
  [ -z "$lab_row" ] || echo "$lab_row" | tee -a "$out"
  stop_all
done
