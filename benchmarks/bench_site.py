"""Site benchmark: build time, page weight, and explorer redraw time in Chromium.

Usage: python benchmarks/bench_site.py [--no-build] [--repeats N]

Page weight is measured twice in one run: with the full plotly.js of the Python package
(``PLOTLY_BUNDLE=full``, as the site was built before) and with the cartesian bundle it
uses now; "assets" is what a page loads beside its own HTML (scripts, styles, images),
the page's own HTML holds its text and its figures' data.

Redraw time is measured in the page, from a control's change event to Plotly's
``plotly_afterplot`` event, for each kind of control; the target is under 100 ms.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import statistics
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SITE = REPO / "_build" / "html"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]

REDRAW_JS = """async ([root, control, value]) => {
  const plot = document.querySelector(root + ' [data-role=matrices]');
  const el = document.querySelector(root + ' [data-control=' + control + ']');
  const done = new Promise(r => plot.once ? plot.once('plotly_afterplot', r) : plot.on('plotly_afterplot', r));
  const t = performance.now();
  if (el.type === 'checkbox') { el.checked = !el.checked; } else { el.value = value; }
  el.dispatchEvent(new Event('change'));
  await done;
  return performance.now() - t;
}"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def page_weight(html: Path) -> tuple[int, int]:
    """Bytes of a page's own HTML, and of the local scripts, styles and images it references."""
    import re

    text = html.read_text()
    assets = 0
    for ref in set(re.findall(r'(?:src|href)="([^"#?]+)"', text)):
        path = (html.parent / ref).resolve()
        if path.is_file() and path.suffix in (".js", ".css", ".png", ".svg", ".woff2", ".woff"):
            assets += path.stat().st_size
    return html.stat().st_size, assets


def build(bundle: str) -> dict[str, tuple[int, int]]:
    """Build the site with ``PLOTLY_BUNDLE=bundle``; page weights by page name."""
    import os

    start = time.perf_counter()
    subprocess.run(["bash", str(REPO / "scripts" / "build-site.sh")], check=True, capture_output=True,
                   env={**os.environ, "PLOTLY_BUNDLE": bundle})
    print(f"site build ({bundle} plotly.js): {time.perf_counter() - start:.1f} s")
    return {page.name: page_weight(page) for page in sorted(SITE.glob("*.html"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-build", action="store_true", help="measure the existing _build/html")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    if args.no_build:
        after = {page.name: page_weight(page) for page in sorted(SITE.glob("*.html"))}
        print(f"{'page':22s} {'own HTML (MB)':>14s} {'assets (MB)':>12s} {'total (MB)':>11s}")
        for name, (own, assets) in after.items():
            print(f"{name:22s} {own / 1e6:14.2f} {assets / 1e6:12.2f} {(own + assets) / 1e6:11.2f}")
    else:
        before, after = build("full"), build("cartesian")  # the cartesian build stays in _build/html
        print(f"{'page':22s} {'own HTML (MB)':>14s} {'assets, full (MB)':>18s} {'assets, now (MB)':>17s} "
              f"{'total, full':>12s} {'total, now':>11s} {'now / full':>11s}")
        for name, (own, assets) in after.items():
            full = before[name][0] + before[name][1]
            print(f"{name:22s} {own / 1e6:14.2f} {before[name][1] / 1e6:18.2f} {assets / 1e6:17.2f} "
                  f"{full / 1e6:12.2f} {(own + assets) / 1e6:11.2f} {(own + assets) / full:11.2f}")
        worst = max(after, key=lambda n: after[n][1])
        print(f"largest assets now: {worst} {after[worst][1] / 1e6:.2f} MB (target: under 2 MB before the page's "
              "own figure data)")
    pages = sorted(SITE.glob("*.html"))
    explorer_pages = {s: p for s in ("noise", "structure") for p in pages if f'id="{s}-explorer"' in p.read_text()}
    if not explorer_pages:
        print("no explorer found in the built pages")
        return
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for series, page_file in explorer_pages.items():
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/{page_file.name}")
            page.wait_for_selector(f"#{series}-explorer .js-plotly-plot .main-svg")
            root = f"#{series}-explorer"
            for control, values in (("metric", ["dice", "iou", "loss"]), ("reduction", ["mean", "max", "median"]),
                                    ("freezing-none", [None])):
                times = [page.evaluate(REDRAW_JS, [root, control, values[i % len(values)]])
                         for i in range(args.repeats)]
                print(f"{series:10s} redraw on {control:14s}: median {statistics.median(times):6.1f} ms, "
                      f"max {max(times):6.1f} ms  (target < 100 ms: {statistics.median(times) / 100:.2f}x of budget)")
            page.close()
        browser.close()
    server.shutdown()


if __name__ == "__main__":
    main()
