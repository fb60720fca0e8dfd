#!/usr/bin/env bash
# Run (or resume) the shipped cpu-profile studies in the background, niced and logged.
# Usage: scripts/run-cpu-studies.sh [series ...]   (default: noise tlsize defocus baseline structure)
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
for series in "${@:-noise tlsize defocus baseline structure}"; do
  for s in $series; do
    echo "$(date -Is) start $s" >> logs/study-cpu.log
    root=data/results
    plan=$(.venv/bin/hrtem-tl study "$s" --profile cpu --workers 2 --plan 2>>logs/study-cpu.log) \
      || { echo "$(date -Is) plan failed for $s (see above)" >> logs/study-cpu.log; continue; }
    if [[ -d "data/results-next/$s" || "$plan" == *$'\n'"stale: "* ]]; then
      root=data/results-next
    fi
    # Print the projection (its precision is that of the stored runs when they match the
    # settings, so a sweep begun on another machine goes on as it began), simulate what is
    # missing (two scenes at a time), then run the grid with two one-thread workers: a
    # pretrained model's runs start as soon as it is trained, while the other worker trains
    # the next model. A sweep that cannot run here (bf16 runs on a CPU without native bf16)
    # says why in the log and the next series goes on.
    plan=$(.venv/bin/hrtem-tl study "$s" --profile cpu --workers 2 --results "$root" --plan 2>>logs/study-cpu.log) || plan=""
    echo "$plan" >> logs/study-cpu.log
    if [[ "$plan" != *": 0 of "* ]]; then
      nice -n 10 .venv/bin/hrtem-tl study "$s" --profile cpu --workers 2 --results "$root" >> "logs/study-$s-cpu.log" 2>&1 \
        || echo "$(date -Is) study $s stopped with an error (see logs/study-$s-cpu.log)" >> logs/study-cpu.log
      plan=$(.venv/bin/hrtem-tl study "$s" --profile cpu --results "$root" --plan 2>>logs/study-cpu.log) || plan=""
    fi
    if [[ "$root" == data/results-next && "$plan" == *": 0 of "* ]]; then
      rm -rf "data/results/$s" && mv "data/results-next/$s" "data/results/$s"
      rmdir data/results-next 2>/dev/null || true
      echo "$(date -Is) $s complete: data/results-next/$s replaced data/results/$s" >> logs/study-cpu.log
    fi
    echo "$(date -Is) done $s" >> logs/study-cpu.log
  done
done
