"""Print the built site as one PDF: every page of the toc, in order, with a bookmark per page.

    python scripts/site_pdf.py SITE_DIR [--out paper.pdf]

SITE_DIR is a built site (``_build/html``, with the ``pages.json`` reading order the
template writes). Each page is opened from a local server in Debian's Chromium
(Playwright, nothing downloaded) at A4 width in light mode, so the explorers draw
their default view for the printed column, and printed with the site's print style
(no navigation); pypdf joins the pages and adds one bookmark per page. Links between
printed pages become jumps inside the PDF; links to the site's other files (data,
downloads) become relative, so they work beside the built site instead of pointing at
the temporary server.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM = Path("/usr/bin/chromium")
A4_WIDTH_PX = 794  # 210 mm at 96 CSS px per inch
MARGIN = {"top": "14mm", "bottom": "14mm", "left": "12mm", "right": "12mm"}
# every Plotly figure drawn: notebook figures (.plotly-target, drawn by site.js once the
# page is parsed) and explorers (drawn after load)
DRAWN = ("() => [...document.querySelectorAll('.plotly-target, .js-plotly-plot')]"
         ".every(p => p.querySelector('.main-svg'))")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


def print_site(site: Path, out: Path) -> int:
    """Write ``out`` from the pages of ``site``; return its number of PDF pages."""
    from playwright.sync_api import sync_playwright
    from pypdf import PdfReader, PdfWriter

    order = site / "pages.json"
    if not order.exists():
        raise SystemExit(f"site_pdf: error: {order} is missing: build the site with scripts/build-site.sh first")
    if not CHROMIUM.exists():
        raise SystemExit("site_pdf: error: Debian chromium is not installed (scripts/setup.sh), "
                         "or build without the PDF: SITE_PDF= scripts/build-site.sh")
    pages = json.loads(order.read_text())
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    writer = PdfWriter()
    starts: dict[str, int] = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            tab = browser.new_page(viewport={"width": A4_WIDTH_PX, "height": 1123}, color_scheme="light")
            for entry in pages:
                tab.goto(f"http://127.0.0.1:{server.server_address[1]}/{entry['href']}", wait_until="networkidle")
                tab.wait_for_function(DRAWN, timeout=60_000)
                pdf = PdfReader(io.BytesIO(tab.pdf(format="A4", print_background=True, margin=MARGIN)))
                first = len(writer.pages)
                for p in pdf.pages:
                    writer.add_page(p)
                writer.add_outline_item(title=entry["title"], page_number=first)
                starts[entry["href"]] = first
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    _localise_links(writer, f"http://127.0.0.1:{server.server_address[1]}/", starts)
    writer.add_metadata({"/Title": pages[0]["title"] if pages else "site"})
    tmp = out.with_suffix(".pdf.tmp")
    with open(tmp, "wb") as f:
        writer.write(f)
    tmp.replace(out)
    return len(writer.pages)


def _localise_links(writer, server: str, starts: dict[str, int]) -> None:
    """Point the links Chromium printed as ``server`` URLs at the PDF's own pages (for a
    printed page, its first PDF page: a ``#fragment`` inside it is not followed) or, for
    any other file of the site, at a relative URI."""
    from pypdf.generic import ArrayObject, NameObject, TextStringObject

    for page in writer.pages:
        for ref in page.get("/Annots") or []:
            link = ref.get_object()
            action = link.get("/A")
            uri = action.get_object().get("/URI") if action is not None else None
            if link.get("/Subtype") != "/Link" or not uri or not str(uri).startswith(server):
                continue
            path = urlsplit(str(uri)[len(server):]).path or "index.html"
            if path in starts:
                del link["/A"]
                link[NameObject("/Dest")] = ArrayObject([writer.pages[starts[path]].indirect_reference,
                                                         NameObject("/Fit")])
            else:
                action.get_object()[NameObject("/URI")] = TextStringObject(str(uri)[len(server):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("site", type=Path, help="built site folder (_build/html)")
    ap.add_argument("--out", default="paper.pdf", help="file name inside SITE (default: paper.pdf)")
    args = ap.parse_args()
    out = args.site / args.out
    n = print_site(args.site, out)
    print(f"Printed {len(json.loads((args.site / 'pages.json').read_text()))} pages into {out} ({n} PDF pages, "
          f"{out.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()
