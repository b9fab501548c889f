#!/usr/bin/env bash
# The hash layout's compact form through a rolling deploy (docs/hash-layout.md, "expand, then
# contract"), checked against a real earlier build: an instance of OLD_BIN (a build that reads
# only the split form) and one of this build serve one private redis-server.
#   1. the dataset was recorded by the old build: a journey POSTed to the new instance is written
#      split, and the old instance reads it (200);
#   2. `migrate --to hash` (this build) records the compact form and compacts every hash;
#   3. the new instance reads it (200) and writes compact from then on; the old one no longer
#      can (500): the reason the runbook runs the migration only once the fleet is upgraded.
#
#   tools/compat/hash-form-rollout.sh OLD_BIN
#
# OLD_BIN: e.g. a build of 6cdc8a2 (`git worktree add /tmp/old 6cdc8a2`, then
# `CARGO_TARGET_DIR=/tmp/oldtarget cargo build --release -p flyrtech-api` there). Exit 0 when every
# step answers as above.
set -euo pipefail
cd "$(dirname "$0")/../.."
old_bin=${1:?usage: tools/compat/hash-form-rollout.sh OLD_BIN}
cargo build --release -q -p flyrtech-api --bin flyrtech
new_bin=target/release/flyrtech
# shellcheck source=tools/http-bench/lib.sh
source tools/http-bench/lib.sh
scratch

rport=$(free_port); old_port=$(free_port); new_port=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  --logfile "$work/redis.log" &
pids+=("$!")
until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.05; done
url="redis://127.0.0.1:$rport"
serve() { "$1" --redis-url "$url" serve --strategy hash --rate-limit off --listen "127.0.0.1:$2" \
  >"$work/serve-$2.log" 2>&1 & pids+=("$!"); wait_for "http://127.0.0.1:$2/health" 30; }
serve "$old_bin" "$old_port"
serve "$new_bin" "$new_port"

failed=0
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
fields() { redis-cli -p "$rport" hkeys "$(redis-cli -p "$rport" --scan --pattern "journey:*:$1:hash" | head -1)" | tr '\n' ' '; }
expect() { # what, got, wanted
  if [ "$2" = "$3" ]; then echo "ok    $1: $2"; else echo "FAIL  $1: $2, expected $3"; failed=1; fi
}
form() { case " $(fields "$1")" in *" journey "*) echo compact ;; *" header "*) echo split ;; *) echo none ;; esac; }
post() { # port id
  local body
  body=$(curl -s "http://127.0.0.1:$1/api/journeys/JRN-001" |
    python3 -c "import json,sys; j=json.load(sys.stdin); j['id']='$2'; print(json.dumps(j))")
  status -H 'content-type: application/json' -d "$body" "http://127.0.0.1:$1/api/journeys"
}

echo "record: $(redis-cli -p "$rport" hgetall journeys:dataset | tr '\n' ' ')"
expect "POST JRN-901 to the new build" "$(post "$new_port" JRN-901)" 201
expect "JRN-901's form before the migration" "$(form JRN-901)" split
expect "GET JRN-901 from the old build" "$(status "http://127.0.0.1:$old_port/api/journeys/JRN-901")" 200
"$new_bin" --redis-url "$url" migrate --to hash | head -1
echo "record: $(redis-cli -p "$rport" hgetall journeys:dataset | tr '\n' ' ')"
expect "JRN-901's form after the migration" "$(form JRN-901)" compact
expect "GET JRN-901 from the new build" "$(status "http://127.0.0.1:$new_port/api/journeys/JRN-901")" 200
expect "POST JRN-902 to the new build" "$(post "$new_port" JRN-902)" 201
expect "JRN-902's form" "$(form JRN-902)" compact
expect "GET JRN-901 from the old build (cannot read compact)" \
  "$(status "http://127.0.0.1:$old_port/api/journeys/JRN-901")" 500
exit "$failed"
