#!/usr/bin/env bash
# Build the static, offline MyST site.
#
#   scripts/build-site.sh [PROJECT_DIR]
#   SITE_ENGINE=jupyter-book scripts/build-site.sh [PROJECT_DIR]
#
# The engine is mystmd's `myst build --html` (default) or Jupyter Book 2's
# `jupyter-book build --html` (SITE_ENGINE=jupyter-book); both run the same
# template and give the same pages (tests/browser/test_site_engines.py).
#
# PROJECT_DIR (default: the repository root) holds the myst.yml whose
# `site: template:` points at site/template. The site lands in
# PROJECT_DIR/_build/html (printed at the end); open index.html through any
# static server, e.g. scripts/serve-site.sh.
#
# Offline by design: npm packages come from site/package-lock.json (`npm ci`,
# only when site/node_modules is missing or stale), KaTeX and plotly.js are
# copied from local packages, and nothing is fetched at build time.
# Notebooks are NOT executed: their committed outputs are rendered.
# The whole paper is also printed to _build/html/paper.pdf (scripts/site_pdf.py, Chromium),
# linked from every page; SITE_PDF= (empty) builds without it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROJECT="$(cd "${1:-$ROOT}" && pwd)"
SITE="$ROOT/site"

# Prefer the project's virtual environment (mystmd and plotly live there).
if [[ -x "$ROOT/.venv/bin/myst" ]]; then
  export PATH="$ROOT/.venv/bin:$PATH"
fi
case "${SITE_ENGINE:-mystmd}" in
  mystmd) BUILD=(myst build --html) ;;
  jupyter-book) BUILD=(jupyter-book build --html) ;;
  *) echo "error: SITE_ENGINE must be mystmd or jupyter-book, not '${SITE_ENGINE}'" >&2; exit 2 ;;
esac
command -v "${BUILD[0]}" >/dev/null || { echo "error: ${BUILD[0]} not found (pip install -e '.[site]')" >&2; exit 1; }
command -v node >/dev/null || { echo "error: node not found" >&2; exit 1; }

start=$(date +%s.%N)

# 1. npm dependencies of the renderer, from the committed lock file.
stamp="$SITE/node_modules/.package-lock.json"
if [[ ! -f "$stamp" || "$SITE/package-lock.json" -nt "$stamp" ]]; then
  echo "Installing site/ npm dependencies (npm ci)..."
  npm ci --prefix "$SITE" --no-audit --no-fund --prefer-offline --loglevel=error
fi

# 2. plotly.js: the cartesian bundle of site/node_modules (npm plotly.js-cartesian-dist-min,
#    pinned to the plotly.js version of the Python package; 1.5 MB instead of 4.8 MB, with
#    every trace type the site draws), or with PLOTLY_BUNDLE=full the Python package's build.
CARTESIAN="$SITE/node_modules/plotly.js-cartesian-dist-min/plotly-cartesian.min.js"
if [[ -z "${PLOTLY_JS:-}" && "${PLOTLY_BUNDLE:-cartesian}" != full && -f "$CARTESIAN" ]]; then
  PLOTLY_JS="$CARTESIAN"
fi
if [[ -z "${PLOTLY_JS:-}" ]]; then
  PLOTLY_JS="$(python -c 'import os, plotly; print(os.path.join(os.path.dirname(plotly.__file__), "package_data", "plotly.min.js"))')"
fi
[[ -f "$PLOTLY_JS" ]] || { echo "error: plotly.min.js not found at $PLOTLY_JS" >&2; exit 1; }
export PLOTLY_JS

# 3. mystmd builds the page JSON and runs site/template/render.mjs.
#    mystmd serves content on "localhost" and hands the renderer a
#    localhost URL; an inherited HOST would make it listen elsewhere.
cd "$PROJECT"
OUT="$PROJECT/_build/html"
# Start clean: mystmd keeps every earlier version of a page's source (hashed names)
# in _build/site/public, and the renderer would offer each of them for download.
rm -rf "$PROJECT/_build/site" "$OUT"
export SITE_PDF="${SITE_PDF-paper.pdf}"  # the renderer links it from every page
# figure helpers every page with figures loads (a CSV of each figure's plotted values)
export SITE_SCRIPTS="${SITE_SCRIPTS-$ROOT/src/hrtem_tl/figure_tools.js}"
echo "Building with ${BUILD[*]} ($("${BUILD[0]}" --version))"
SITE_PROJECT="$PROJECT" env -u HOST "${BUILD[@]}"

if [[ ! -f "$OUT/index.html" || ! -f "$OUT/.render.log" ]]; then
  echo "error: the site renderer did not finish (no $OUT/index.html)" >&2
  exit 1
fi
grep -E '^warning:' "$OUT/.render.log" || true
for asset in assets/site.css assets/site.js assets/katex/katex.min.css assets/plotly.min.js; do
  [[ -f "$OUT/$asset" ]] || { echo "error: missing $OUT/$asset" >&2; exit 1; }
done

# 4. The result tables the pages are computed from, for readers to take (parquet + schema).
if [[ -d "$PROJECT/data/results" ]]; then
  (cd "$PROJECT" && find data/results -type f \( -name '*.parquet' -o -name '*.md' \) -exec cp --parents {} "$OUT/" \;)
fi

# 5. The whole paper as one PDF, printed from the built pages.
if [[ -n "$SITE_PDF" ]]; then
  python "$ROOT/scripts/site_pdf.py" "$OUT" --out "$SITE_PDF"
fi

end=$(date +%s.%N)
pages=$(find "$OUT" -maxdepth 1 -name '*.html' | wc -l)
awk -v s="$start" -v e="$end" -v n="$pages" -v o="$OUT" \
  'BEGIN { printf "Built %d pages into %s in %.1f s\n", n, o, e - s }'
