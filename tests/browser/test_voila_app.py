"""The live Voila app in Chromium: the explorer recomputes its figure when a control changes,
and "Segment your micrograph" segments an uploaded TIFF with a tiny model.

The model is :func:`hrtem_testutils.train_disk_model` (30 steps on disks at 2 Å/px),
found by the app through ``$HRTEM_TL_MODELS``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from hrtem_testutils import disk_scene, synthetic_results, train_disk_model, write_tiff
from test_explorers_static import ARTIFACTS, CHROMIUM

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (scripts/setup.sh)")]


@dataclass
class Voila:
    url: str
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def voila(tmp_path_factory):
    results = tmp_path_factory.mktemp("voila") / "results"
    synthetic_results(results, "noise", seeds=(0,))
    train_disk_model(results.parent / "models" / "disks")
    port = _free_port()
    log = open(results.parent / "voila.log", "w")
    env = {**os.environ, "HRTEM_TL_RESULTS": str(results), "JUPYTER_PATH": str(REPO / "widgets"),
           "HRTEM_TL_MODELS": str(results.parent / "models")}  # first on the search path: the default model
    proc = subprocess.Popen(
        [sys.executable, "-m", "voila", str(REPO / "widgets" / "app.ipynb"), "--template=offline", "--no-browser", f"--port={port}",
         "--Voila.ip=127.0.0.1", f"--ServerApp.root_dir={REPO / 'widgets'}",
         f"--Voila.config_file_paths={REPO / 'widgets'}"],  # as scripts/serve-voila.sh
        env=env, stdout=log, stderr=subprocess.STDOUT)  # a file: a full pipe would block Voila
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail((results.parent / "voila.log").read_text())
            time.sleep(0.5)
    yield Voila(url, results.parent / "voila.log")
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


def _launch(p):
    return p.chromium.launch(executable_path=str(CHROMIUM), args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"])


def _open(page, voila: Voila, selector: str) -> None:
    """Load the app and wait for ``selector``; a failure shows the page's errors and Voila's log."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.goto(voila.url, timeout=120_000, wait_until="commit")  # Voila streams cells as they run
    try:
        page.wait_for_selector(selector, timeout=150_000)
    except PlaywrightTimeout:  # a kernel that never came up: one fresh page (and kernel) more
        page.reload(wait_until="commit")
        try:
            page.wait_for_selector(selector, timeout=150_000)
        except PlaywrightTimeout:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "voila-timeout.png"), full_page=True)
            pytest.fail(f"{selector} did not appear; page errors:\n" + "\n".join(errors[-20:])
                        + "\nVoila log (end):\n" + voila.log.read_text()[-4000:])


def _outside(requests: list[str]) -> list[str]:
    return [u for u in requests if urlparse(u).scheme in ("http", "https", "ws", "wss")
            and urlparse(u).hostname != "127.0.0.1"]  # blob: and data: URLs stay in the page


def test_voila_app_loads_and_responds(voila):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = _launch(p)
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        _open(page, voila, ".js-plotly-plot .main-svg")
        title = page.locator(".js-plotly-plot .gtitle").first.text_content()
        assert "cross-entropy" in title
        # Choose the Dice metric in the ipywidgets dropdown; the kernel redraws the figure.
        page.locator("select").nth(1).select_option(label="Dice / F1")
        page.wait_for_function(
            "() => [...document.querySelectorAll('.js-plotly-plot .gtitle')].some(t => t.textContent.includes('Dice'))",
            timeout=120_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "voila-app.png"), full_page=True)
        browser.close()
    assert not _outside(requests), _outside(requests)


def test_voila_segments_an_uploaded_micrograph(voila, tmp_path):
    from playwright.sync_api import sync_playwright

    image, _, _ = disk_scene(256, 7, 12, 24, gap=16)  # disks of radius 1.2-2.4 nm at 1 Å/px
    tif = write_tiff(tmp_path / "scene.tif", image)
    with sync_playwright() as p:
        browser = _launch(p)
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        _open(page, voila, ".hrtem-segment-app button.widget-upload")
        app = page.locator(".hrtem-segment-app")
        # ipywidgets' FileUpload keeps its <input type=file> out of the DOM: its chooser sets the file
        with page.expect_file_chooser() as chooser:
            app.locator("button.widget-upload").click()
        chooser.value.set_files(str(tif))
        app.locator("button.widget-upload", has_text="(1)").wait_for(timeout=60_000)  # the bytes reached the model
        app.get_by_role("button", name="Segment", exact=True).click()
        app.locator("table.hrtem-particles tbody tr").first.wait_for(timeout=120_000)
        assert app.locator("img").first.evaluate("i => i.complete && i.naturalWidth") == image.shape[1]
        assert app.locator("table.hrtem-particles tbody tr").count() >= 1
        assert "scene.tif: " in app.inner_text() and " particles, " in app.inner_text()
        hrefs = [app.locator(f"a[download='scene_{n}']").get_attribute("href") for n in ("mask.tif", "particles.csv")]
        assert hrefs[0].startswith("data:image/tiff;base64,") and hrefs[1].startswith("data:text/csv;base64,")
        ARTIFACTS.mkdir(exist_ok=True)
        app.screenshot(path=str(ARTIFACTS / "voila-segment.png"))
        browser.close()
    assert not _outside(requests), _outside(requests)
