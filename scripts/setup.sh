#!/usr/bin/env bash
# Set up everything on a fresh machine: Debian packages (chromium for browser tests),
# a Python virtual environment with the package and its extras, and the site's npm
# packages. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

if ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing Debian chromium (browser tests)"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import hrtem_tl, abtem, torch, voila, playwright, mystmd" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.installed ]; then
  echo "setup: installing the package and its dependencies into .venv (torch is large: a few minutes)"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[site,test,cluster]"
  touch .venv/.installed
fi

if [ -f site/package-lock.json ] && [ ! -d site/node_modules ]; then
  echo "setup: installing the site's npm packages"
  (cd site && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "setup: ready"
