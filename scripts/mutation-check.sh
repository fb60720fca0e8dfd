#!/usr/bin/env bash
# Mutation check (issue 17): apply each curated mutant of tests/mutants.toml to a
# temporary copy of the repository, run the tests it names, print one line per mutant
# and "N of M mutants killed"; exit 0 only when every mutant is killed. The working
# tree is never modified. Not part of the default test run: it takes minutes. Run it
# before closing an issue that changes a stage, e.g. on a busy machine:
#   nice -n 10 bash scripts/mutation-check.sh
# Options go to scripts/mutation_check.py: --only a,b  --limit N  --list  --no-baseline  -v
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
exec "$PYTHON" scripts/mutation_check.py "$@"
