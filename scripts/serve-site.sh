#!/usr/bin/env bash
# Serve the static site on the loopback interface.
#
#   scripts/serve-site.sh [PORT]          (default 8000)
#
# Builds first when _build/html/index.html is missing (or when REBUILD=1),
# then runs `python -m http.server` on 127.0.0.1 until interrupted.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${1:-8000}"
OUT="$ROOT/_build/html"

if [[ "${REBUILD:-0}" == 1 || ! -f "$OUT/index.html" ]]; then
  "$ROOT/scripts/build-site.sh"
fi
PY=python3
[[ -x "$ROOT/.venv/bin/python" ]] && PY="$ROOT/.venv/bin/python"

echo "Serving $OUT"
echo "Open http://127.0.0.1:$PORT/  (Ctrl-C to stop)"
exec "$PY" -m http.server "$PORT" --bind 127.0.0.1 --directory "$OUT"
