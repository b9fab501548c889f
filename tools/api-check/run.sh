#!/usr/bin/env bash
# The OpenAPI document is the contract: an independent fuzzer (schemathesis, pinned) runs every
# check in every phase (examples, coverage, fuzzing, stateful) against `flyrtech serve` for each
# strategy named (default: all six), each on a free port with its own private redis-server.
# Each strategy runs in two modes (API_CHECK_MODES, default "keys open"): with API keys, the
# fuzzer holding a write key; and without keys, where the document must ask for none.
# Exits non-zero on the first strategy with any failure. Usage: tools/api-check/run.sh [STRATEGY...]
# (API_CHECK_BINARY: the flyrtech binary to check, instead of a debug build of this tree.)
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${API_CHECK_MAX_EXAMPLES:-60}
# A fixed seed makes a run repeatable (CI sets one); without it every run explores anew.
seed_args=()
[ -z "${API_CHECK_SEED:-}" ] || seed_args=(--seed "$API_CHECK_SEED")
work=target/api-check
venv=$work/venv
mkdir -p "$work"

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "api-check: installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

# API_CHECK_BINARY: a binary already built (CI passes the one its suite tested); else a debug build.
binary=${API_CHECK_BINARY:-}
if [ -z "$binary" ]; then
  cargo build --quiet -p flyrtech-api
  binary=target/debug/flyrtech
fi

# The service runs as it would exposed: with API keys. Schemathesis holds a write key, so it may
# change journeys and the cache; /metrics (admin) answers it 403, as the document says.
rm -f "$work/keys"
write_key=$("$binary" api-key new schemathesis --scope write --file "$work/keys" 2>/dev/null)

strategies=("$@")
[ ${#strategies[@]} -gt 0 ] || strategies=(naive local-lock optimistic redlock lua hash)

server=""
stop_server() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server"       # graceful: serve stops its private redis-server too
    wait "$server" 2>/dev/null || true
  fi
  server=""
}
trap stop_server EXIT

read -r -a modes <<<"${API_CHECK_MODES:-keys open}"

for strategy in "${strategies[@]}"; do
 for mode in "${modes[@]}"; do
  log="$work/serve-$strategy-$mode.log"
  case "$mode" in
    keys) serve_args=(--api-keys "$work/keys"); auth_args=(--header "Authorization: Bearer $write_key") ;;
    open) serve_args=(); auth_args=() ;;
    *) echo "api-check: unknown mode $mode (keys or open)" >&2; exit 2 ;;
  esac
  env -u FLYRTECH_REDIS_URL -u REDIS_URL -u FLYRTECH_API_KEYS RUST_LOG=info NO_COLOR=1 \
    "$binary" serve --strategy "$strategy" --listen 127.0.0.1:0 "${serve_args[@]}" >"$log" 2>&1 &
  server=$!
  # The bound port is in the start-up log; poll for it (bounded), never sleep blindly.
  addr=""
  for _ in $(seq 300); do
    addr=$(grep -o 'addr=127\.0\.0\.1:[0-9]*' "$log" | head -n 1 | cut -d= -f2 || true)
    [ -n "$addr" ] && curl -fsS "http://$addr/health" >/dev/null 2>&1 && break
    addr=""
    kill -0 "$server" 2>/dev/null || { cat "$log"; echo "api-check: serve exited" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$addr" ] || { cat "$log"; echo "api-check: serve did not start" >&2; exit 1; }
  echo "api-check: $strategy ($mode) on $addr"
  (cd "$work" && "$OLDPWD/$venv/bin/schemathesis" \
      --config-file "$OLDPWD/tools/api-check/schemathesis.toml" \
      run "http://$addr/api-docs/openapi.json" \
      --checks all --phases examples,coverage,fuzzing,stateful \
      "${auth_args[@]}" \
      --max-examples "$MAX_EXAMPLES" "${seed_args[@]}" --no-color)
  stop_server
 done
done
echo "api-check: 0 failures for: ${strategies[*]} (modes: ${modes[*]})"
