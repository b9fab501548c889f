#!/usr/bin/env bash
# The price of confirmation, side by side on one deployment: a primary and one replica with AOF
# on both (`appendfsync always`), on an engine with WAITAOF (FLYRTECH_REDIS_SERVER, default
# valkey-server); `compare --scenario spread` for lua and hash under `--wait-replicas 1` (the
# replica's memory) and `--wait-aof 1` (both disks), one after the other against the same
# servers: each run also measures the strategy without confirmation first, so every row of the
# summary is from the same minutes. Writes docs/results/wait-aof.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/http-bench/lib.sh
server=${FLYRTECH_REDIS_SERVER:-valkey-server}
seconds=${SECONDS_PER_RUN:-5}
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
common=(--save "" --appendonly yes --appendfsync always --daemonize yes)
"$server" --port "$p1" "${common[@]}" --dir "$dir/primary" --logfile "$dir/primary/log"
"$server" --port "$p2" "${common[@]}" --dir "$dir/replica" --logfile "$dir/replica/log" \
  --replicaof 127.0.0.1 "$p1"
for _ in $(seq 1 200); do
  redis-cli -p "$p1" info replication | grep -q 'state=online' && break
  sleep 0.05
done
# A replica just synced rebuilds its AOF before its disk can confirm a write.
for _ in $(seq 1 100); do
  [ "$(redis-cli -p "$p1" waitaof 1 1 200 | tail -n 1)" = "1" ] && break
  redis-cli -p "$p1" incr price-probe >/dev/null
done
cargo build --release -q -p flyrtech-lab
mkdir -p docs/results
{
  echo "# $("$server" --version | cut -d' ' -f1-3); primary + 1 replica, appendfsync always on both; spread, ${seconds} s per run"
  echo "# tools/wait-aof/price.sh; $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
  for mode in "--wait-replicas 1" "--wait-aof 1"; do
    redis-cli -p "$p1" flushall >/dev/null
    echo
    echo "## $mode (each strategy without, then with it)"
    # shellcheck disable=SC2086
    target/release/flyrtech-lab --redis-url "redis://127.0.0.1:$p1" $mode compare \
      --strategies lua,hash --scenario spread --duration-secs "$seconds"
  done
} | tee docs/results/wait-aof.txt
