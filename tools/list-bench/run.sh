#!/usr/bin/env bash
# GET /api/journeys at any dataset size: a private redis-server whose journey index
# lists N ids (default 1,000,000; ids only, as the listing reads only the index), `flyrtech serve`
# on it, then the first page, a page from the middle of the walk and the whole walk, timed with
# curl, and serve's RSS. Usage: tools/list-bench/run.sh [N]
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-1000000}
bin=${FLYRTECH_BIN:-target/release/flyrtech}
[ -x "$bin" ] || cargo build --release -q -p flyrtech-api
work=$(mktemp -d)
rport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
hport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null &
redis_pid=$!
serve_pid=""
trap 'kill $serve_pid $redis_pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done
# N ids, 10,000 per SADD, piped.
python3 - "$n" <<'PY' | redis-cli -p "$rport" --pipe >/dev/null
import sys
n = int(sys.argv[1])
out = sys.stdout
for start in range(0, n, 10000):
    ids = [f"JRN-{i:08d}" for i in range(start, min(n, start + 10000))]
    args = ["SADD", "journeys:index"] + ids
    out.write(f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args))
PY
"$bin" --redis-url "redis://127.0.0.1:$rport" serve --no-seed --rate-limit off --listen "127.0.0.1:$hport" 2>"$work/serve.log" &
serve_pid=$!
for _ in $(seq 200); do curl -fsS "http://127.0.0.1:$hport/health" >/dev/null 2>&1 && break; sleep 0.05; done
echo "index: $(redis-cli -p "$rport" scard journeys:index) ids"
first=$(curl -s -o "$work/page.json" -w '%{time_total}' "http://127.0.0.1:$hport/api/journeys")
echo "first page: ${first}s, $(python3 -c "import json; d=json.load(open('$work/page.json')); print(d['count'], 'ids, total', d.get('total'))")"
start=$(date +%s.%N); pages=0; ids=0; url="/api/journeys?limit=1000"
while [ -n "$url" ]; do
  curl -s "http://127.0.0.1:$hport$url" > "$work/p.json"
  read -r count next < <(python3 -c "import json; d=json.load(open('$work/p.json')); print(d['count'], d.get('nextCursor') or '')")
  pages=$((pages+1)); ids=$((ids+count))
  [ "$pages" -eq 500 ] && mid=$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$hport$url")
  if [ -n "$next" ]; then url="/api/journeys?limit=1000&cursor=$next"; else url=""; fi
done
end=$(date +%s.%N)
echo "whole walk: $pages pages, $ids ids (with SSCAN's repeats), $(python3 -c "print(round($end-$start,1))")s; a middle page: ${mid:-n/a}s"
echo "serve RSS after the walk: $(awk '/VmRSS/{print int($2/1024)}' /proc/$serve_pid/status) MB"
