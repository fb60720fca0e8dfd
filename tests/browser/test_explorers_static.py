"""The static explorers in real Chromium: controls compose and show the aggregation's values.

Results tables are synthetic (random metrics on the real grid), written in the test,
so the check is about the page logic, not about any trained model.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import plotly
import pytest

from conftest import ARTIFACTS, CHROMIUM, TEXT_BOXES_JS
from hrtem_testutils import synthetic_results

from hrtem_tl.explore import explorer_html, series_domains
from hrtem_tl.metrics import METRICS
from hrtem_tl.results import matrices, read_results
from hrtem_tl.series import FREEZING

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (scripts/setup.sh)")]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder with one page per explorer and plotly.js, served on 127.0.0.1."""
    root = tmp_path_factory.mktemp("explorers")
    results = root / "results"
    for series in ("noise", "structure"):
        synthetic_results(results, series)
        loss_only(results / "original", series)
    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    shutil.copy(plotly_js, root / "plotly.min.js")
    for series in ("noise", "structure"):
        fragment = explorer_html(results, series, element_id=f"{series}-explorer")
        (root / f"{series}.html").write_text(
            f'<!doctype html><html><head><meta charset="utf-8"><script src="plotly.min.js"></script></head>'
            f"<body>{fragment}</body></html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}", "results": results}
    server.shutdown()


def loss_only(root: Path, series: str) -> None:
    """An "original"-like source: profile original, one seed, every metric but the loss missing."""
    synthetic_results(root, series, seeds=(5,))
    for table in ("runs", "evaluations"):
        path = root / series / f"{table}.parquet"
        frame = pd.read_parquet(path).assign(profile="original")
        if table == "evaluations":
            frame[[m for m in METRICS if m != "loss"]] = np.nan
        frame.to_parquet(path)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"])
        yield b
        b.close()


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url)
    page.wait_for_selector(".js-plotly-plot .main-svg")
    return page, requests


def _z(page, series, stage_index):
    return page.evaluate(f"""() => document.querySelector('#{series}-explorer [data-role=matrices]')
                                    .data[{stage_index}].z""")


def _expected(results, series, freezing, metric, reduction, profile="cpu"):
    tables = read_results(results, series)
    tables = {k: v[v["profile"] == profile] for k, v in tables.items()}
    mats = matrices(tables["runs"], tables["evaluations"], freezing=set(freezing), metric=metric,
                    reduction=reduction, domains=series_domains(series))
    return {k: v["value"].to_numpy(dtype=float) for k, v in mats.items()}


@pytest.mark.parametrize("series", ["noise", "structure"])
def test_controls_compose_and_match_aggregation(site, browser, series):
    page, requests = _open(browser, f"{site['url']}/{series}.html")
    root = f"#{series}-explorer"
    # Initial state: all freezing modes, loss, median.
    exp = _expected(site["results"], series, FREEZING, "loss", "median")
    np.testing.assert_allclose(np.array(_z(page, series, 0), float), exp["pretrain"], rtol=1e-4)
    # Change one control at a time; earlier choices must persist.
    page.uncheck(f"{root} [data-control=freezing-none]")
    page.select_option(f"{root} [data-control=metric]", "dice")
    page.select_option(f"{root} [data-control=reduction]", "max")
    exp = _expected(site["results"], series, ("encoder", "decoder"), "dice", "max")
    np.testing.assert_allclose(np.array(_z(page, series, 0), float), exp["pretrain"], rtol=1e-4)
    np.testing.assert_allclose(np.array(_z(page, series, 1), float), exp["transfer"], rtol=1e-4)
    page.uncheck(f"{root} [data-control=freezing-encoder]")
    exp = _expected(site["results"], series, ("decoder",), "dice", "max")
    np.testing.assert_allclose(np.array(_z(page, series, 1), float), exp["transfer"], rtol=1e-4)
    # The last checked mode cannot be unchecked (at least one freezing mode).
    page.click(f"{root} [data-control=freezing-decoder]")
    assert page.is_checked(f"{root} [data-control=freezing-decoder]")
    # Colour bar follows the metric; loss reverses the scale so that better is always yellow.
    bar = page.evaluate(f"() => document.querySelector('{root} [data-role=matrices]').layout.coloraxis")
    assert "dice" in bar["colorbar"]["title"]["text"] and bar["reversescale"] is False
    page.select_option(f"{root} [data-control=metric]", "loss")
    bar = page.evaluate(f"() => document.querySelector('{root} [data-role=matrices]').layout.coloraxis")
    assert bar["reversescale"] is True
    if series == "structure":
        n_traces = page.evaluate(f"() => document.querySelector('{root} [data-role=sizes]').data.length")
        assert n_traces == 4
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"explorer-{series}.png"), full_page=True)
    assert all(u.startswith(site["url"]) for u in requests), [u for u in requests if not u.startswith(site["url"])]
    page.close()



@pytest.mark.parametrize("series", ["noise", "structure"])
def test_original_source_disables_metrics_and_ranks_agree(site, browser, series):
    page, _ = _open(browser, f"{site['url']}/{series}.html")
    root = f"#{series}-explorer"
    page.select_option(f"{root} [data-control=metric]", "iou")
    page.uncheck(f"{root} [data-control=freezing-encoder]")
    page.select_option(f"{root} [data-control=profile]", "original")
    # the original has losses only: IoU is disabled and the figure falls back to loss
    assert page.input_value(f"{root} [data-control=metric]") == "loss"
    assert page.evaluate(f"() => document.querySelector('{root} [data-control=metric] option[value=iou]').disabled")
    assert "no IoU" in page.text_content(f"{root} .hrtem-note")
    theirs = _expected(site["results"] / "original", series, ("none", "decoder"), "loss", "median", "original")
    np.testing.assert_allclose(np.array(_z(page, series, 1), float), theirs["transfer"], rtol=1e-4)
    # agreement: Spearman correlation of our and their transfer cells (diagonal left out), by pandas
    ours = _expected(site["results"], series, ("none", "decoder"), "loss", "median")["transfer"]
    off = ~np.eye(len(ours), dtype=bool)
    rho = pd.Series(ours[off]).corr(pd.Series(theirs["transfer"][off]), method="spearman")
    text = page.evaluate(f"() => document.querySelector('{root} [data-role=agreement]').layout.annotations[1].text")
    assert f"ρ = {rho:.2f}" in text, (text, rho)
    page.close()


OVERLAPS_JS = """(root) => {""" + TEXT_BOXES_JS + """
  // every visible text of the explorer's figures, and the pairs within one figure that overlap
  const rects = [...document.querySelectorAll(root + ' .js-plotly-plot')].flatMap((plot, f) =>
    textBoxes(plot, '.gtitle, .annotation-text, .xtitle, .x2title, .x3title, .ytitle, '
                    + '.xtick text, .x2tick text, .x3tick text', b => b.text).map(b => ({...b, f})));
  const bad = overlapping(rects, (a, b) => a.f === b.f);
  const box = document.querySelector(root).getBoundingClientRect();
  const wide = [...document.querySelectorAll(root + ' .js-plotly-plot .main-svg')]
    .filter(s => s.getBoundingClientRect().right > box.right + 1).length;
  return {bad, wide};
}"""


@pytest.mark.parametrize("width", [390, 1280])
@pytest.mark.parametrize("series", ["noise", "structure"])
def test_no_text_overlaps_at_phone_and_desktop_width(site, browser, series, width):
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(f"{site['url']}/{series}.html")
    page.wait_for_selector(f"#{series}-explorer [data-role=agreement] .main-svg")
    found = page.evaluate(OVERLAPS_JS, f"#{series}-explorer")
    assert found["bad"] == [] and found["wide"] == 0, found
    if width == 390:
        page.screenshot(path=str(ARTIFACTS / f"explorer-{series}-390.png"), full_page=True)
    page.close()


def test_controls_are_labelled_and_work_from_the_keyboard(site, browser):
    """Tab reaches every control, each has an accessible name, and keys alone change the figure."""
    page, _ = _open(browser, f"{site['url']}/noise.html")
    root = "#noise-explorer"
    controls = page.locator(f"{root} [data-control]")
    names = controls.evaluate_all("""els => els.map(e => e.getAttribute('aria-label')
        || [...(e.labels || [])].map(l => l.textContent.trim()).join(' ') || '')""")
    assert len(names) >= 5 and all(names), names
    reached = []
    for _ in range(3 * len(names)):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("() => document.activeElement.getAttribute('data-control')"))
    want = controls.evaluate_all("els => els.filter(e => !e.disabled).map(e => e.getAttribute('data-control'))")
    assert set(want) <= set(reached), (want, reached)
    page.focus(f"{root} [data-control=freezing-none]")
    page.keyboard.press("Space")  # untick "none"
    page.focus(f"{root} [data-control=metric]")
    page.keyboard.press("ArrowDown")  # loss -> the next metric
    metric = page.eval_on_selector(f"{root} [data-control=metric]", "e => e.value")
    assert metric != "loss"
    exp = _expected(site["results"], "noise", ("encoder", "decoder"), metric, "median")
    np.testing.assert_allclose(np.array(_z(page, "noise", 1), float), exp["transfer"], rtol=1e-4)
    page.close()
