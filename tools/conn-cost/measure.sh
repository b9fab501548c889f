#!/usr/bin/env bash
# What a held connection costs `serve`: its resident memory before and after CONNECTIONS
# (default 2,000) silent connections, spread over as many loopback addresses as its
# per-client share requires. Prints KB per connection; writes docs/results/conn-cost.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/http-bench/lib.sh
n=${CONNECTIONS:-2000}
cargo build --release -q -p flyrtech-api
scratch
port=$(free_port)
target/release/flyrtech serve --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --max-connections $((n + 100)) --max-connections-per-client 100 \
  --header-timeout-ms 600000 --idle-timeout-ms 600000 >"$work/serve.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$port/health" 30
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
before=$(rss "${pids[0]}")
python3 - "$port" "$n" "$work/held" <<'PY' &
import socket, sys, time
port, n, flag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
held = []
for i in range(n):
    s = socket.socket()
    s.bind((f"127.0.{2 + i // 100 // 250}.{2 + (i // 100) % 250}", 0))
    s.connect(("127.0.0.1", port))
    held.append(s)
open(flag, "w").close()
time.sleep(600)
PY
pids+=($!)
for _ in $(seq 1 600); do [ -f "$work/held" ] && break; sleep 0.1; done
sleep 2
after=$(rss "${pids[0]}")
mkdir -p docs/results
{
  echo "# tools/conn-cost/measure.sh; $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores; serve's resident memory with $n silent connections held"
  echo "before: ${before} KB; after: ${after} KB; per connection: $(( (after - before) / n )) KB"
} | tee docs/results/conn-cost.txt
