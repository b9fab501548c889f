#!/usr/bin/env bash
# What the hash update script costs Redis, part by part, against the floor's one HINCRBY: each
# command 200,000 times through `redis-cli --pipe` on a private redis-server, Redis' CPU
# (INFO cpu) per command. Pipelined, so the network's share (about the same for every command
# when a server sends one at a time) is left out and what remains is the command's own work:
# HINCRBY; EVALSHA of an empty script with the update's keys and arguments (the price of a
# script call); scripts doing only the update's HMGET, HSET or XADD; the whole update script;
# the same script as a function (FUNCTION LOAD, FCALL: no SHA lookup, the function's name).
#
#   tools/http-bench/script-cost.sh        (writes docs/results/script-cost.txt; OUT overrides)
#
# REDIS_SERVER names another server binary (e.g. valkey-server) to price the same on it.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-docs/results/script-cost.txt}
work=$(mktemp -d)
# shellcheck source=tools/http-bench/lib.sh
source tools/http-bench/lib.sh
port=$(free_port)
server=${REDIS_SERVER:-redis-server}
"$server" --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  --logfile "$work/redis.log" &
rpid=$!
trap 'kill $rpid 2>/dev/null || true; wait $rpid 2>/dev/null || true; rm -rf "$work"' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
cli() { redis-cli -p "$port" "$@"; }
hash='journey:{7}:JRN-001:hash'
cli HSET "$hash" version 0 status Confirmed 'segment:SEG-1:status' Scheduled journey '{}' >/dev/null
load() { cli SCRIPT LOAD "$1"; }
script=crates/infrastructure/src/store/scripts/hash_update.lua
update=$(load "$(cat "$script")")
# The same body as a Redis 7 function: KEYS and ARGV become the function's parameters.
cli FUNCTION LOAD "#!lua name=flyrtech_cost
redis.register_function('hash_update', function(KEYS, ARGV)
$(cat "$script")
end)" >/dev/null
n=200000
# The update's call: keys, then segment, target, expected version, the entry's tail, completion
# id, predecessors; the targets alternate so that every call is a change.
commands() { # name sha
  python3 - "$1" "$2" "$n" "$hash" >"$work/commands" <<'EOF'
import sys
name, sha, n, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def resp(*args):
    out = [f"*{len(args)}\r\n"]
    for a in args:
        out.append(f"${len(a.encode())}\r\n{a}\r\n")
    return "".join(out)
tail = "JRN-001 SEG-1 {} 2026-12-05T16:30:00.123456789Z 0193a5b2-7c1d-7e3f-8a9b-0c1d2e3f4a5b"
with sys.stdout as w:
    for i in range(n):
        if name == "HINCRBY":
            w.write(resp("HINCRBY", "floor:hash", "version", "1"))
            continue
        to, before = ("Delayed", "Scheduled") if i % 2 == 0 else ("Scheduled", "Delayed")
        call = ("FCALL", "hash_update") if name.startswith("FCALL") else ("EVALSHA", sha)
        w.write(resp(*call, "3", key, "outbox:{7}", "journey:{7}:JRN-001",
                     "SEG-1", to, "", tail.format(to), "", before))
EOF
}
cpu() { cli info cpu | awk -F: '/used_cpu_(user|sys):/ {t += $2} END {printf "%.6f", t}'; }
measure() { # name sha
  commands "$1" "${2:-}"
  cli DEL 'outbox:{7}' >/dev/null
  local c0 c1
  c0=$(cpu); cli --pipe <"$work/commands" >/dev/null; c1=$(cpu)
  awk -v a="$c0" -v b="$c1" -v n="$n" -v name="$1" 'BEGIN {printf "%-44s %8.2f\n", name, (b - a) * 1e6 / n}'
}
{
  echo "# tools/http-bench/script-cost.sh  ($(date -u +%Y-%m-%dT%H:%M:%SZ)); $(basename "$server") $("$server" --version | awk '{print $3}' | cut -d= -f2)"
  echo "# $n commands pipelined (redis-cli --pipe); Redis CPU (INFO cpu) per command, microseconds"
  measure HINCRBY
  measure "EVALSHA, empty script (return 1)" "$(load 'return 1')"
  measure "EVALSHA, the update's HMGET only" "$(load "redis.call('HMGET', KEYS[1], 'version', 'segment:' .. ARGV[1] .. ':status') return 1")"
  measure "EVALSHA, the update's HSET only" "$(load "redis.call('HSET', KEYS[1], 'segment:' .. ARGV[1] .. ':status', ARGV[2], 'version', '1') return 1")"
  measure "EVALSHA, the update's XADD only" "$(load "redis.call('XADD', KEYS[2], '*', 'change', '1 Scheduled ' .. ARGV[4]) return 1")"
  measure "EVALSHA, the hash update script" "$update"
  measure "FCALL, the hash update script as a function"
} | tee "$out"
