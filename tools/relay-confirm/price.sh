#!/usr/bin/env bash
# What confirming the relay's batches costs, side by side on one deployment: a primary and one
# replica (FLYRTECH_REDIS_SERVER, default redis-server), `flyrtech-lab backlog` draining ENTRIES
# outbox entries (default 200,000) with one relay, ROUNDS times (default 3) without and with
# `--wait-replicas 1`, alternating, against the same servers. Prints each run's drain rate and
# the ratio of the medians; writes docs/results/relay-confirm.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/http-bench/lib.sh
server=${FLYRTECH_REDIS_SERVER:-redis-server}
entries=${ENTRIES:-200000}
rounds=${ROUNDS:-3}
dir=$(mktemp -d)
p1=$(free_port)
p2=$(free_port)
stop() {
  redis-cli -p "$p1" shutdown nosave >/dev/null 2>&1 || true
  redis-cli -p "$p2" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop EXIT
mkdir -p "$dir/primary" "$dir/replica"
common=(--save "" --appendonly no --daemonize yes --repl-diskless-sync-delay 0)
"$server" --port "$p1" "${common[@]}" --dir "$dir/primary" --logfile "$dir/primary/log"
"$server" --port "$p2" "${common[@]}" --dir "$dir/replica" --logfile "$dir/replica/log" \
  --replicaof 127.0.0.1 "$p1"
for _ in $(seq 1 200); do
  redis-cli -p "$p1" info replication | grep -q 'state=online' && break
  sleep 0.05
done
cargo build --release -q -p flyrtech-lab -p flyrtech-api
rate() {
  # shellcheck disable=SC2086
  target/release/flyrtech-lab --redis-url "redis://127.0.0.1:$p1" $1 backlog --entries "$entries" \
    --journeys 10000 2>/dev/null | grep '"drain_rate_per_second"' | tr -dc '0-9.\n' | cut -d. -f1
}
mkdir -p docs/results
{
  echo "# $("$server" --version | cut -d' ' -f1-3); primary + 1 replica on loopback; one relay draining $entries entries (10,000 journeys), batch 256, 8 shards at once"
  echo "# tools/relay-confirm/price.sh; $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores; entries per second"
  without=()
  with=()
  for round in $(seq 1 "$rounds"); do
    redis-cli -p "$p1" flushall >/dev/null
    a=$(rate "")
    redis-cli -p "$p1" flushall >/dev/null
    b=$(rate "--wait-replicas 1")
    without+=("$a")
    with+=("$b")
    echo "round $round: without confirmation $a, with --wait-replicas 1 $b"
  done
  median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  ma=$(median "${without[@]}")
  mb=$(median "${with[@]}")
  echo "median: without $ma, with $mb; ratio $(awk -v a="$ma" -v b="$mb" 'BEGIN {printf "%.2f", b / a}') (goal: at least 0.80)"
} | tee docs/results/relay-confirm.txt
