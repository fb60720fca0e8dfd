"""The paper's own pages, as committed, in Chromium at phone and desktop width.

The project (its notebooks with their committed outputs, the widgets and data/) is
copied and built as the main job builds it, without the PDF. On every page with
figures, each Plotly figure is drawn, no two of its texts (titles, tick labels,
annotations, buttons) overlap, no text is cut off at the figure's edge, and no figure
is wider than the page's column. Figures with a phone layout (``layout.meta.narrow``)
use it below 640 px (the explorers' breakpoint) and keep the desktop one above.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, ROOT, TEXT_BOXES_JS, _QuietHandler

# every notebook figure (a .plotly-target that site.js draws) and every explorer plot drawn
DRAWN = ("() => [...document.querySelectorAll('.plotly-target, .js-plotly-plot')]"
         ".every(p => p.querySelector('.main-svg'))")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (scripts/setup.sh)")]
PAGES = ["results.html", "methods.html", "defocus.html", "replication.html", "index.html"]

# Per figure: overlapping text pairs, texts cut off at the figure's edge, figure wider than the column.
LAYOUT_JS = """(plot) => {""" + TEXT_BOXES_JS + """
  const rects = textBoxes(plot, '.gtitle, .annotation-text, .g-xtitle text, .g-ytitle text, .g-x2title text, '
                          + '.g-y2title text, .xtick text, .x2tick text, .x3tick text, .ytick text, .y2tick text, '
                          + '.legendtext, .updatemenu-button',
                          b => b.text || b.el.classList.contains('updatemenu-button'))
    .map(b => ({text: b.text || 'button', r: b.r}));
  const bad = overlapping(rects, () => true);
  const svg = plot.querySelector('.main-svg').getBoundingClientRect();
  const cut = rects.filter(t => t.r.left < svg.left - 1 || t.r.right > svg.right + 1).map(t => t.text);
  const column = plot.closest('article, main, body').getBoundingClientRect();
  // a phone layout: how many of its attribute strings ("height", "annotations[3].y") hold now; axis
  // domains are left out, as Plotly narrows those of square image panels itself
  const narrow = (plot.layout.meta && plot.layout.meta.narrow) || null;
  const patch = narrow && Object.fromEntries(Object.entries(narrow).filter(([k]) => !k.endsWith('.domain')));
  const get = (path) => path.split('.').reduce((o, part) => {
    const m = part.match(/^(\w+)\[(\d+)\]$/);
    return o == null ? o : (m ? (o[m[1]] || [])[+m[2]] : o[part]);
  }, plot.layout);
  const held = patch ? Object.keys(patch).filter(k => JSON.stringify(get(k)) === JSON.stringify(patch[k])).length : 0;
  return {bad, cut, wide: svg.right > column.right + 1, patch: patch ? Object.keys(patch).length : 0, held};
}"""


@pytest.fixture(scope="module")
def paper_url(tmp_path_factory):
    """The paper built from a copy of the project (committed outputs; no PDF), served on 127.0.0.1."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: cannot build the MyST site")
    project = tmp_path_factory.mktemp("paper")
    for name in ("content", "widgets", "data"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    for name in ("CITATION.cff", "cite.bib"):
        shutil.copy(ROOT / name, project / name)
    config = (ROOT / "myst.yml").read_text()
    (project / "myst.yml").write_text(re.sub(r"(?m)^(\s*template:).*$",
                                             lambda m: f"{m.group(1)} {ROOT / 'site' / 'template'}", config))
    result = subprocess.run([str(ROOT / "scripts" / "build-site.sh"), str(project)], capture_output=True, text=True,
                            timeout=600, env={**os.environ, "SITE_PDF": ""})
    if result.returncode != 0:
        pytest.fail(f"site build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(project / "_build" /
                                                                                                   "html")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.mark.parametrize("width", [390, 1280])
def test_every_figure_of_the_paper_lays_out_without_overlap(paper_url, browser, width):
    problems, phone_layouts = {}, 0
    for name in PAGES:
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(f"{paper_url}/{name}", wait_until="networkidle")
        page.wait_for_function(DRAWN, timeout=60_000)
        page.wait_for_timeout(500)  # phone layouts are applied right after the first draw
        plots = page.locator(".js-plotly-plot")
        for i in range(plots.count()):
            got = plots.nth(i).evaluate(LAYOUT_JS)
            if got["bad"] or got["cut"] or got["wide"]:
                problems[f"{name} figure {i}"] = {k: got[k] for k in ("bad", "cut", "wide")}
            if got["patch"]:  # applied in full on a phone, not on a desktop
                phone_layouts += 1
                assert (got["held"] == got["patch"]) if width < 640 else (got["held"] < got["patch"]), (name, i, got["held"], got["patch"])
        if name == "results.html":
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"paper-results-{width}.png"), full_page=True)
        page.close()
    assert problems == {}, "\n".join(f"{k}: {v}" for k, v in problems.items())
    assert phone_layouts >= 3  # the transfer-set-size, freezing and prediction figures carry one


def test_every_figure_offers_its_plotted_values_as_csv(paper_url, browser):
    """A CSV link under each figure that is not a picture; the lattice figure's CSV holds,
    per lattice, the mean over source lattices of the transferred models' Dice on its test
    images, as an independent pandas computation from the stored tables finds it."""
    import io

    import pandas as pd

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{paper_url}/results.html", wait_until="networkidle")
    page.wait_for_function(DRAWN, timeout=60_000)
    figures = page.evaluate("""() => [...document.querySelectorAll('script[type="application/vnd.plotly.v1+json"]')]
      .map(s => { const t = document.getElementById(s.dataset.target);
                  const next = t && t.nextElementSibling;
                  return {id: s.dataset.target, pictures: JSON.parse(s.textContent).data.every(d => d.type === 'image'),
                          csv: !!(next && next.matches('a.hrtem-csv')),
                          text: t ? window.hrtemCsv([[t.id, t]]) : ''}; })""")
    assert len(figures) >= 6
    assert all(f["csv"] != f["pictures"] for f in figures), [(f["id"], f["pictures"], f["csv"]) for f in figures]
    lattice = [f for f in figures if "after transfer learning to it" in f["text"]]
    assert len(lattice) == 1
    got = pd.read_csv(io.StringIO(lattice[0]["text"]))
    got = got[got["trace"] == "after transfer learning to it"].set_index("y")
    assert (got["low"] < got["x"]).all() and (got["x"] < got["high"]).all()  # the 95 % intervals come along
    got = got["x"]
    runs = pd.read_parquet(ROOT / "data" / "results" / "structure" / "runs.parquet")
    evals = pd.read_parquet(ROOT / "data" / "results" / "structure" / "evaluations.parquet")
    tl = runs[(runs["kind"] == "transfer") & runs["target_domain"].str.endswith("_small")
              & runs["pretrain_domain"].str.endswith("_small")]
    ev = evals[evals["stage"] == "transfer"].merge(tl[["run_id", "pretrain_domain", "target_domain"]], on="run_id")
    ev = ev[ev["eval_domain"] == ev["target_domain"]]
    expected = ev.groupby(["target_domain", "pretrain_domain"])["dice"].mean().groupby(level=0).mean()
    assert len(got) == len(expected)
    for domain, value in expected.items():  # the CSV drops markup: Fe<sub>3</sub>O<sub>4</sub> -> Fe3O4
        assert abs(got[domain.split("_")[0]] - value) < 1e-9, (domain, got[domain.split("_")[0]], value)
    page.close()


CONTRAST_JS = """() => {
  // lowest WCAG contrast of a figure's titles, tick labels and legend against the page, per figure
  const rgb = c => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = c => { const v = rgb(c).map(x => { x /= 255; return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; });
                     return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  const page = lum(getComputedStyle(document.body).backgroundColor);
  return [...document.querySelectorAll('.plotly-target')].map(plot => {
    const texts = [...plot.querySelectorAll('.gtitle, .xtick text, .ytick text, .x2tick text, .y2tick text, '
                                            + '.g-xtitle text, .g-ytitle text, .legendtext')];
    const ratios = texts.map(t => { const a = lum(getComputedStyle(t).fill);
                                    return (Math.max(a, page) + 0.05) / (Math.min(a, page) + 0.05); });
    return [plot.id, texts.length, ratios.length ? Math.min(...ratios) : null];
  });
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_figure_text_is_readable_in_both_themes(paper_url, browser, scheme):
    page = browser.new_page(viewport={"width": 390, "height": 900}, color_scheme=scheme)
    page.goto(f"{paper_url}/results.html", wait_until="networkidle")
    page.wait_for_function(DRAWN, timeout=60_000)
    page.wait_for_timeout(500)
    found = page.evaluate(CONTRAST_JS)
    assert sum(n for _, n, _ in found) > 50
    low = [(i, r) for i, n, r in found if r is not None and r < 4.5]
    assert low == [], low
    page.close()
