#!/usr/bin/env bash
# The main job on a fresh machine: set everything up, build the paper site from the
# committed results (notebooks are not re-executed) and serve it on 127.0.0.1.
# Usage: scripts/site.sh [PORT]   (default 8000)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec bash scripts/serve-site.sh "${1:-8000}"
