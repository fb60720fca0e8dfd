"""Fixtures for the browser tests of the offline static site.

The fixture project (tests/browser/fixtures/mini) is copied to a temporary
folder, built with scripts/build-site.sh (mystmd + site/template), served on
127.0.0.1 from a thread, and opened in Debian's Chromium through Playwright.
Chromium is never downloaded: without /usr/bin/chromium the tests skip.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "mini"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]

# JavaScript shared by the layout checks (prepended to a page function's body):
# textBoxes(plot, selectors, keep) lists the visible texts of one Plotly div as
# {text, r (client rectangle), el}; overlapping(boxes, same) the text pairs whose
# rectangles overlap by more than 2 px both ways (``same(a, b)``: pairs to compare).
TEXT_BOXES_JS = """
  const textBoxes = (plot, selectors, keep) => [...plot.querySelectorAll(selectors)]
    .map(el => ({text: el.textContent.trim(), r: el.getBoundingClientRect(), el}))
    .filter(b => b.r.width > 0 && b.r.height > 0 && keep(b));
  const overlapping = (boxes, same) => {
    const bad = [];
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i].r, b = boxes[j].r;
      const dx = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const dy = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (dx > 2 && dy > 2 && same(boxes[i], boxes[j])) bad.push([boxes[i].text, boxes[j].text]);
    }
    return bad;
  };
"""


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> Path:
    """Build the fixture project; return its _build/html folder."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: cannot build the MyST site")
    project = tmp_path_factory.mktemp("site-fixture") / "mini"
    shutil.copytree(FIXTURE, project, ignore=shutil.ignore_patterns("_build", "*.py", "__pycache__"))
    config = project / "myst.yml"
    text = re.sub(
        r"(?m)^(\s*template:).*$",
        lambda m: f"{m.group(1)} {ROOT / 'site' / 'template'}",
        config.read_text(),
    )
    config.write_text(text)
    result = subprocess.run(
        [str(ROOT / "scripts" / "build-site.sh"), str(project)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"site build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return project / "_build" / "html"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


@pytest.fixture(scope="session")
def site_url(built_site):
    """Serve the built site on 127.0.0.1 on a free port."""
    handler = functools.partial(_QuietHandler, directory=str(built_site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def site_browser():
    # Module scope: the sync Playwright driver must be closed before another
    # test module starts its own one in the same thread.
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (/usr/bin/chromium): apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class PageRecorder:
    """A Playwright page plus every request, console error and page error it saw."""

    def __init__(self, context):
        self.context = context
        self.page = context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on(
            "console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None
        )

    def external_requests(self) -> list[str]:
        from urllib.parse import urlparse

        return [
            u
            for u in self.requests
            if urlparse(u).scheme not in ("data", "blob", "about") and urlparse(u).hostname != "127.0.0.1"
        ]


@pytest.fixture
def open_page(site_browser, site_url):
    """open_page(path, **context_options) -> PageRecorder, loaded and settled."""
    contexts = []

    def _open(path: str = "index.html", **options) -> PageRecorder:
        options.setdefault("viewport", {"width": 1280, "height": 900})
        context = site_browser.new_context(**options)
        contexts.append(context)
        rec = PageRecorder(context)
        rec.page.goto(f"{site_url}/{path}", wait_until="load")
        return rec

    yield _open
    for context in contexts:
        context.close()


@pytest.fixture(scope="module")
def loaded_pages(site_browser, site_url):
    """Every page of the fixture site, opened once (desktop, light scheme) and
    left open for read-only checks: {"index.html": PageRecorder, ...}."""
    context = site_browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
    pages = {}
    for name in ("index.html", "methods.html", "explorer.html", "appendix.html"):
        rec = PageRecorder(context)
        rec.page.goto(f"{site_url}/{name}", wait_until="networkidle")
        pages[name] = rec
    yield pages
    context.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
