"""The live Voila app loads in Chromium and recomputes its figure when a control changes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlparse
from pathlib import Path

import pytest

from hrtem_testutils import synthetic_results
from test_explorers_static import ARTIFACTS, CHROMIUM

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (scripts/setup.sh)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def voila(tmp_path_factory):
    results = tmp_path_factory.mktemp("voila") / "results"
    synthetic_results(results, "noise", seeds=(0,))
    port = _free_port()
    log = open(results.parent / "voila.log", "w")
    env = {**os.environ, "HRTEM_TL_RESULTS": str(results), "JUPYTER_PATH": str(REPO / "widgets")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "voila", str(REPO / "widgets" / "app.ipynb"), "--template=offline", "--no-browser", f"--port={port}",
         "--Voila.ip=127.0.0.1", f"--ServerApp.root_dir={REPO / 'widgets'}"],
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
    yield url
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


def test_voila_app_loads_and_responds(voila):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(voila, timeout=120_000, wait_until="commit")  # Voila streams cells as they run
        try:
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=150_000)
        except PlaywrightTimeout:  # a kernel that never came up: one fresh page (and kernel) more
            page.reload(wait_until="commit")
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=150_000)
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
    outside = [u for u in requests if urlparse(u).scheme in ("http", "https", "ws", "wss")
               and urlparse(u).hostname != "127.0.0.1"]  # blob: and data: URLs stay in the page
    assert not outside, outside
