#!/usr/bin/env bash
# Run (or resume) the shipped cpu-profile studies in the background, niced and logged.
# Usage: scripts/run-cpu-studies.sh [series ...]   (default: noise structure tlsize)
# Safe to stop at any time (even kill -9) and start again: finished runs are skipped.
#
# A series whose committed runs in data/results were made with other settings (a
# changed profile or protocol: `hrtem-tl study --plan` says "stale") is re-run whole in
# data/results-next, which is committed as it grows, so a later session resumes it;
# the pages keep showing data/results until the new sweep is complete, and then the
# new series replaces the old one (old and new runs never mix in one table). Runs that
# failed (failures.parquet) count as settled, as the sweep does not retry them.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p logs
for series in "${@:-noise structure tlsize}"; do
  for s in $series; do
    echo "$(date -Is) start $s" >> logs/study-cpu.log
    root=data/results
    plan=$(.venv/bin/hrtem-tl study "$s" --profile cpu --workers 2 --plan 2>>logs/study-cpu.log) \
      || { echo "$(date -Is) plan failed for $s (see above)" >> logs/study-cpu.log; continue; }
    if [[ -d "data/results-next/$s" || "$plan" == *$'\n'"stale: "* ]]; then
      root=data/results-next
    fi
    # Print the projection, simulate what is missing (two scenes at a time), then run the
    # grid with two one-thread workers: a pretrained model's runs start as soon as it is
    # trained, while the other worker trains the next model.
    .venv/bin/hrtem-tl study "$s" --profile cpu --workers 2 --results "$root" --plan >> logs/study-cpu.log 2>&1 || true
    nice -n 10 .venv/bin/hrtem-tl study "$s" --profile cpu --workers 2 --results "$root" >> "logs/study-$s-cpu.log" 2>&1
    plan=$(.venv/bin/hrtem-tl study "$s" --profile cpu --results "$root" --plan 2>>logs/study-cpu.log) || plan=""
    if [[ "$root" == data/results-next && "$plan" == *": 0 of "* ]]; then
      rm -rf "data/results/$s" && mv "data/results-next/$s" "data/results/$s"
      rmdir data/results-next 2>/dev/null || true
      echo "$(date -Is) $s complete: data/results-next/$s replaced data/results/$s" >> logs/study-cpu.log
    fi
    echo "$(date -Is) done $s" >> logs/study-cpu.log
  done
done
