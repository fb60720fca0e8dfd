#!/usr/bin/env bash
# Serve the live explorer (widgets/app.ipynb) with Voila on 127.0.0.1.
# Usage: scripts/serve-voila.sh [PORT]   (default 8866)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
port="${1:-8866}"
echo "Voila app: http://127.0.0.1:${port}/"
export JUPYTER_PATH="$PWD/widgets${JUPYTER_PATH:+:$JUPYTER_PATH}"  # the offline template
# widgets/voila.json: uploads of the segment view travel over the kernel's websocket, so
# it allows 256 MiB messages (tornado's default is 10 MiB)
exec .venv/bin/voila widgets/app.ipynb --template=offline --no-browser --port="$port" --Voila.ip=127.0.0.1 \
  --ServerApp.root_dir="$PWD/widgets" --Voila.config_file_paths="$PWD/widgets"
