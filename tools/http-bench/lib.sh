# Shared by tools/http-bench/run.sh and cpu-split.sh (sourced, not run).

# A free loopback port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Polls URL (bounded: SECONDS, default 10) until it answers 2xx.
wait_for() { for _ in $(seq 1 $((${2:-10} * 20))); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "no answer from $1" >&2; return 1; }

# A scratch directory ($work) and the processes started into $pids, all stopped and removed when
# the script exits.
scratch() {
  work=$(mktemp -d)
  pids=()
  trap 'for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
        for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
        rm -rf "$work"' EXIT
}
