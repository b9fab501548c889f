#!/usr/bin/env bash
# Every nemesis of the fault suite ROUNDS times (default 10), each run's history checked for
# linearizability (crates/tests/tests/it/nemesis.rs); a line per run in target/faults/nemesis.log
# and the summary, per nemesis and strategy, in docs/results/nemesis.txt.
set -euo pipefail
rounds=${1:-10}
cd "$(dirname "$0")/../.."
mkdir -p target/faults docs/results
log=target/faults/nemesis.log
out=docs/results/nemesis.txt
: > "$log"
failed=0
for round in $(seq 1 "$rounds"); do
  echo "faults: round $round of $rounds" >&2
  if ! cargo test --release -p flyrtech-tests --test it nemesis:: -- --nocapture --test-threads 2 \
      > target/faults/round.txt 2>&1; then
    failed=$((failed + 1))
    grep -E '^test .* FAILED|panicked' target/faults/round.txt >&2 || true
  fi
  grep '^nemesis ' target/faults/round.txt >> "$log" || true
done
{
  echo "# every nemesis, $rounds rounds: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(redis-server --version | cut -d' ' -f1-3)"
  echo "# tools/faults/run.sh $rounds (just faults $rounds); rounds with a failed test: $failed"
  awk '
    {
      name = $2; strategy = $3; sub(":", "", strategy); key = name " " strategy
      ops = $4; unknown = $6; sub(/\(/, "", unknown); verdict = $8; sub(",", "", verdict)
      decided = $9; total = $13
      runs[key]++; sum_ops[key] += ops; sum_unknown[key] += unknown
      verdicts[key, verdict]++; sum_decided[key] += decided; sum_total[key] += total
    }
    END {
      printf "%-26s %-11s %5s %12s %10s %12s %5s %9s %10s\n", "nemesis", "strategy", "runs", "operations", "unknown", "linearizable", "not", "undecided", "decided"
      n = asorti(runs, keys)
      for (i = 1; i <= n; i++) {
        k = keys[i]; split(k, part, " ")
        printf "%-26s %-11s %5d %12d %10d %12d %5d %9d %9.1f%%\n", part[1], part[2], runs[k], sum_ops[k], sum_unknown[k], verdicts[k, "Linearizable"], verdicts[k, "NotLinearizable"], verdicts[k, "Undecided"], 100 * sum_decided[k] / sum_total[k]
      }
    }' "$log"
} | tee "$out"
[ "$failed" -eq 0 ]
