#!/usr/bin/env bash
# Run (or resume) the shipped cpu-profile studies in the background, niced and logged.
# Usage: scripts/run-cpu-studies.sh [series ...]   (default: noise structure tlsize)
# Safe to stop at any time (even kill -9) and start again: finished runs are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p logs
for series in "${@:-noise structure tlsize}"; do
  for s in $series; do
    echo "$(date -Is) start $s" >> logs/study-cpu.log
    # Print the projection, simulate what is missing (two scenes at a time), then run the
    # grid with two one-thread workers: a pretrained model's runs start as soon as it is
    # trained, while the other worker trains the next model.
    .venv/bin/hrtem-tl study "$s" --profile cpu --workers 2 --plan >> logs/study-cpu.log 2>&1 || true
    nice -n 10 .venv/bin/hrtem-tl study "$s" --profile cpu --workers 2 >> "logs/study-$s-cpu.log" 2>&1
    echo "$(date -Is) done $s" >> logs/study-cpu.log
  done
done
