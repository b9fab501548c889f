#!/usr/bin/env bash
# What the service adds to each request, against the stack's floor: route by route,
# the server's and Redis' CPU per answered request (cpu-split.sh: wrk 2 threads 50 connections,
# best of two 5 s rounds, the ratios and the goals at the end), then the server's instructions
# per request under callgrind with a profile per route, floor beside service (instructions.sh).
#
#   tools/http-bench/bench.sh [STRATEGY ...]      (default: hash)
#
# Writes docs/results/http-cpu.txt, docs/results/http-instructions.txt and
# docs/results/profiles/ (one file per server and route: its functions by own instructions and
# including their callees).
set -euo pipefail
cd "$(dirname "$0")/../.."
strategies=("$@")
[ ${#strategies[@]} -gt 0 ] || strategies=(hash)
servers=(floor)
for strategy in "${strategies[@]}"; do servers+=("serve:$strategy"); done
OUT=docs/results/http-cpu.txt tools/http-bench/cpu-split.sh "${strategies[@]}"
OUT=docs/results/http-instructions.txt PROFILES=docs/results/profiles \
  tools/http-bench/instructions.sh "${servers[@]}"
