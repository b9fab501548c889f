#!/usr/bin/env bash
# Where a request's CPU goes, floor against service: for each route, wrk (2 threads, 50
# connections) against the floor (crates/lab/examples/floor.rs) and against `flyrtech serve`,
# each on a private redis-server, and the CPU each process spent per answered request: the
# server's (utime + stime from /proc) and Redis' (INFO cpu). On a machine where wrk, the server
# and Redis share the cores, throughput is the cores divided by the sum of the three, so this
# says how far a ratio to the floor can go: a request that costs Redis more than the floor's
# one command caps the ratio even with a server as cheap as the floor.
#
#   tools/http-bench/cpu-split.sh [STRATEGY ...]      (default: hash lua)
#
# A STRATEGY may be `bin:PATH:STRATEGY`: another build of flyrtech (e.g. an earlier commit's)
# serving it, measured in the same rounds against the same floor; it is labelled by the binary's
# file name (copy it to a telling one, e.g. /tmp/flyrtech-9f51eea).
#
# Each figure is the best of ROUNDS runs (the lowest server CPU per request: what the machine's
# other work added is noise, never the server's own cost). The end of the output sets each
# strategy against the floor route by route: the server's CPU per request as a ratio (goals,
# /health <= 1.2, GET <= 1.3, PUT <= 1.5), and Redis' CPU per PUT against the floor's
# one HINCRBY (goal <= 2 for hash). The PUT is also measured against `floor --put-empty-script`
# (server `floor-script`): the floor sending, instead of HINCRBY, an empty script with the hash
# update's keys and arguments, what Redis spends on any script-based update before its first
# command; its Redis ratio is the lowest any atomic update run as a script can reach.
#
# Environment: DURATION (seconds per run, default 5), ROUNDS (default 2), OUT (default
# docs/results/http-cpu.txt).
set -euo pipefail
cd "$(dirname "$0")/../.."
strategies=("$@")
[ ${#strategies[@]} -gt 0 ] || strategies=(hash lua)
duration=${DURATION:-5}
rounds=${ROUNDS:-2}
out=${OUT:-docs/results/http-cpu.txt}
mkdir -p "$(dirname "$out")"
cargo build --release -q -p flyrtech-api --bin flyrtech && cargo build --release -q -p flyrtech-lab --example floor
# shellcheck source=tools/http-bench/lib.sh
source tools/http-bench/lib.sh
scratch
ticks=$(getconf CLK_TCK)

measure() { # server(floor|serve) strategy route(health|get|put)
  local which=$1 strategy=$2 route=$3 rport hport rpid spid url script=() bin=target/release/flyrtech
  if [[ $strategy == bin:* ]]; then
    bin=${strategy#bin:}; bin=${bin%:*}; strategy="$(basename "$bin"):${strategy##*:}"
  fi
  rport=$(free_port); hport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    --logfile "$work/redis.log" &
  rpid=$!; pids+=("$rpid")
  until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.05; done
  case $which in
    serve) "$bin" --redis-url "redis://127.0.0.1:$rport" serve --strategy "${strategy##*:}" \
      --rate-limit off --listen "127.0.0.1:$hport" 2>"$work/serve.log" & ;;
    floor) target/release/examples/floor "redis://127.0.0.1:$rport" "127.0.0.1:$hport" 2>"$work/floor.log" & ;;
    floor-script) target/release/examples/floor "redis://127.0.0.1:$rport" "127.0.0.1:$hport" \
      --put-empty-script 2>"$work/floor.log" & ;;
  esac
  spid=$!; pids+=("$spid")
  wait_for "http://127.0.0.1:$hport/health"
  case $route in
    health) url="http://127.0.0.1:$hport/health" ;;
    get) url="http://127.0.0.1:$hport/api/journeys/JRN-001" ;;
    put) url="http://127.0.0.1:$hport"; script=(-s tools/http-bench/put.lua) ;;
  esac
  wrk -t2 -c50 -d1s "${script[@]}" "$url" >/dev/null # warm-up
  local redis_cpu server_cpu
  redis_cpu() { redis-cli -p "$rport" info cpu | awk -F: '/used_cpu_(user|sys):/ {t += $2} END {printf "%.6f", t}'; }
  server_cpu() { awk -v hz="$ticks" '{printf "%.6f", ($14 + $15) / hz}' "/proc/$spid/stat"; }
  local r0 s0 r1 s1 report
  r0=$(redis_cpu); s0=$(server_cpu)
  report=$(wrk -t2 -c50 -d"${duration}s" "${script[@]}" "$url")
  r1=$(redis_cpu); s1=$(server_cpu)
  kill "$spid" "$rpid"; wait "$spid" "$rpid" 2>/dev/null || true
  echo "$report" | awk -v r0="$r0" -v r1="$r1" -v s0="$s0" -v s1="$s1" -v which="$which" \
    -v strategy="$strategy" -v route="$route" '
    / requests in / {n = $1}
    /Non-2xx or 3xx responses:/ {bad = $5}
    /Requests\/sec/ {rate = $2}
    END {printf "%-12s %-22s %-7s %10.0f %8d %14.2f %14.2f %14.2f\n", which, strategy, route,
      rate, bad, (s1 - s0) * 1e6 / n, (r1 - r0) * 1e6 / n, ((s1 - s0) + (r1 - r0)) * 1e6 / n}'
}

best() { # server strategy route: the round with the lowest server CPU per request
  local i
  # Into a file, not $(…): measure runs in this shell, so that the exit trap knows its processes.
  : >"$work/rounds"
  for ((i = 0; i < rounds; i++)); do measure "$@" >>"$work/rounds"; done
  sort -g -k6 "$work/rounds" | head -n 1
}

{
  echo "# tools/http-bench/cpu-split.sh ${strategies[*]}  ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
  echo "# wrk 2 threads, 50 connections, ${duration}s per run, best of $rounds; redis-server $(redis-server --version | awk '{print $3}' | cut -d= -f2); $(nproc) cores; CPU per request in microseconds"
  printf '%-12s %-22s %-7s %10s %8s %14s %14s %14s\n' server strategy route req/s non-2xx server_us/req redis_us/req both_us/req
} | tee "$out"
for route in health get put; do
  best floor - "$route" >"$work/best"; tee -a "$out" <"$work/best"
  if [ "$route" = put ]; then best floor-script - put >"$work/best"; tee -a "$out" <"$work/best"; fi
  for strategy in "${strategies[@]}"; do
    best serve "$strategy" "$route" >"$work/best"; tee -a "$out" <"$work/best"
  done
done
# The ratios to the floor, and the goals.
{
  echo
  echo "# service / floor, route by route, from the lines above"
  awk '
    $1 == "floor" {server[$3] = $6; redis[$3] = $7}
    $1 == "floor-script" {script = $7}
    $1 == "serve" {rows[++n] = $0}
    END {
      goal["health"] = 1.2; goal["get"] = 1.3; goal["put"] = 1.5
      printf "%-22s %-7s %14s %8s %9s %18s %9s\n", "strategy", "route", "server ratio", "goal", "server", "redis ratio", "redis"
      for (i = 1; i <= n; i++) {
        split(rows[i], f, " ")
        s = f[6] / server[f[3]]
        r = "-"; rmet = ""
        if (f[3] == "put" && redis["put"] > 0) {
          r = sprintf("%.2f", f[7] / redis["put"])
          if (f[2] ~ /(^|:)hash$/) { r = r " (<= 2)"; rmet = (f[7] / redis["put"] <= 2 ? "met" : "NOT met") }
        }
        printf "%-22s %-7s %14.2f %8s %9s %18s %9s\n", f[2], f[3], s, "<= " goal[f[3]], (s <= goal[f[3]] ? "met" : "NOT met"), r, rmet
      }
      if (script > 0 && redis["put"] > 0)
        printf "%-22s %-7s %14s %8s %9s %18.2f  (an empty script: the lowest any script-based PUT can reach)\n", "floor-script", "put", "-", "", "", script / redis["put"]
    }' "$out"
} | tee -a "$out"
