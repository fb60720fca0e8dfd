"""The four defocus-data explorers in real Chromium, checked against pandas.

Two synthetic sources: "ours" (profile cpu, every metric) and "the original" (loss
only, three transfer-set sizes). Each test changes source, metric, filters and
reduction through the page's menus and compares what Plotly draws with a direct
pandas computation from the parquet files (not through hrtem_tl's own reductions).
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading

import numpy as np
import pandas as pd
import plotly
import pytest

from hrtem_testutils import synthetic_defocus
from test_explorers_static import ARTIFACTS, CHROMIUM, browser  # noqa: F401  (fixture)

from hrtem_tl import defocus_views as dv

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (scripts/setup.sh)")]
PAGES = {"hp": dv.hp_explorer, "domain": dv.domain_explorer, "gen": dv.gen_explorer, "baseline": dv.baseline_explorer}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("defocus-explorers")
    results = root / "results"
    synthetic_defocus(results)
    synthetic_defocus(results / "original", profile="original", metrics=("loss",), sizes=(16, 32, 64),
                      seeds=(0, 1, 2), device="NVIDIA A100")
    shutil.copy(plotly.__file__.replace("__init__.py", "package_data/plotly.min.js"), root / "plotly.min.js")
    for name, build in PAGES.items():
        (root / f"{name}.html").write_text(
            '<!doctype html><html><head><meta charset="utf-8"><script src="plotly.min.js"></script></head>'
            f"<body>{build(results, element_id=name)}</body></html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}", "results": results}
    server.shutdown()


def _tables(results, source, series):
    root = results / "original" if source == "original" else results
    runs = pd.read_parquet(root / series / "runs.parquet")
    evals = pd.read_parquet(root / series / "evaluations.parquet")
    return runs, evals


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector(".js-plotly-plot .main-svg")
    return page, errors


def _traces(page, name):
    return page.evaluate(f"() => document.querySelector('#{name} [data-role=figure]').data.map("
                         "t => ({z: t.z, median: t.median, x: t.x, name: t.name, visible: t.visible}))")


def _choose(page, name, **choices):
    for control, value in choices.items():
        page.select_option(f"#{name} [data-control={control}]", value)


def _array(rows):
    return np.array([[np.nan if v is None else v for v in r] for r in rows], float)


def _order(domains):
    return sorted(set(domains), key=lambda d: int(d[2:]))


def test_domain_matrices_follow_every_control(site, browser):
    page, errors = _open(browser, f"{site['url']}/domain.html")
    _choose(page, "domain", metric="dice", freezing="encoder", size="32", lr="1e-3 → 1e-4", reduction="mean")
    runs, evals = _tables(site["results"], "cpu", "defocus")
    runs = runs[(runs["freezing"] == "encoder") & (runs["transfer_images"] == 32) & (runs["lr_pretrain"] == 1e-3)]
    joined = evals.merge(runs[["run_id", "pretrain_id", "pretrain_domain", "target_domain"]], on="run_id")
    pre = joined[joined["stage"] == "pretrain"].drop_duplicates(["pretrain_id", "eval_domain"])
    rows, cols = _order(runs["pretrain_domain"]), _order(evals["eval_domain"])
    before = pre.pivot_table(index="pretrain_domain", columns="eval_domain", values="dice", aggfunc="mean")
    before = before.reindex(index=rows, columns=cols).to_numpy()
    post = joined[(joined["stage"] == "transfer") & (joined["eval_domain"] == joined["target_domain"])]
    after = post.pivot_table(index="pretrain_domain", columns="eval_domain", values="dice", aggfunc="mean")
    after = after.reindex(index=rows, columns=cols).to_numpy(copy=True)
    for i, d in enumerate(rows):
        after[i, cols.index(d)] = before[i, cols.index(d)]
    traces = _traces(page, "domain")
    np.testing.assert_allclose(_array(traces[0]["z"]), before, rtol=1e-3)
    np.testing.assert_allclose(_array(traces[1]["z"]), after, rtol=1e-3)
    # The original has no Dice: choosing it falls back to loss, and Dice is disabled there.
    _choose(page, "domain", source="original")
    assert page.input_value("#domain [data-control=metric]") == "loss"
    assert page.evaluate("() => document.querySelector('#domain [data-control=metric] option[value=dice]').disabled")
    _choose(page, "domain", size="64", reduction="median")
    runs, evals = _tables(site["results"], "original", "defocus")
    runs = runs[(runs["freezing"] == "encoder") & (runs["transfer_images"] == 64) & (runs["lr_pretrain"] == 1e-3)]
    post = evals.merge(runs[["run_id", "pretrain_domain", "target_domain"]], on="run_id")
    post = post[(post["stage"] == "transfer") & (post["eval_domain"] == post["target_domain"])]
    want = post.groupby(["pretrain_domain", "eval_domain"])["loss"].median().unstack().reindex(index=rows, columns=cols)
    got = _array(_traces(page, "domain")[1]["z"])
    off = ~np.eye(len(rows), len(cols), k=cols.index(rows[0]), dtype=bool)  # the diagonal holds pretraining
    np.testing.assert_allclose(got[off], want.to_numpy()[off], rtol=1e-3)
    assert not errors
    page.screenshot(path=str(ARTIFACTS / "explorer-domain.png"), full_page=True)
    page.close()


def test_hp_boxes_are_the_quartiles_of_the_target_metric(site, browser):
    page, errors = _open(browser, f"{site['url']}/hp.html")
    _choose(page, "hp", metric="iou", group="lr")
    runs, evals = _tables(site["results"], "cpu", "defocus")
    on_target = evals.merge(runs, on=["run_id", "profile"])
    on_target = on_target[(on_target["stage"] == "transfer") & (on_target["eval_domain"] == on_target["target_domain"])]
    traces = [t for t in _traces(page, "hp") if t["visible"] is not False]
    assert [t["name"] for t in traces] == ["1e-3 → 1e-4", "1e-4 → 1e-5"]
    for t in traces:
        lp = 1e-3 if t["name"].startswith("1e-3") else 1e-4
        want = on_target[on_target["lr_pretrain"] == lp].groupby("transfer_images")["iou"].median()
        np.testing.assert_allclose(t["median"], want.to_numpy(), rtol=1e-3)
        assert t["x"] == [str(n) for n in want.index]
    _choose(page, "hp", source="original", group="freezing")
    assert page.input_value("#hp [data-control=metric]") == "loss"
    runs, evals = _tables(site["results"], "original", "defocus")
    on_target = evals.merge(runs, on=["run_id", "profile"])
    on_target = on_target[(on_target["stage"] == "transfer") & (on_target["eval_domain"] == on_target["target_domain"])]
    decoder = next(t for t in _traces(page, "hp") if t["name"] == "decoder")
    want = on_target[on_target["freezing"] == "decoder"].groupby("transfer_images")["loss"].median()
    np.testing.assert_allclose(decoder["median"], want.to_numpy(), rtol=1e-3)
    assert not errors
    page.close()


def test_gen_spread_shift_matches_pandas(site, browser):
    page, errors = _open(browser, f"{site['url']}/gen.html")
    _choose(page, "gen", source="original", freezing="none", size="16")
    runs, evals = _tables(site["results"], "original", "defocus")
    runs = runs[(runs["freezing"] == "none") & (runs["transfer_images"] == 16)]
    ev = evals.merge(runs[["run_id", "pretrain_domain", "target_domain"]], on="run_id")
    ev = ev[ev["eval_domain"] != ev["target_domain"]]
    std = ev.groupby(["run_id", "pretrain_domain", "target_domain", "stage"])["loss"].std().unstack("stage")
    shift = (std["transfer"] - std["pretrain"]).groupby(["pretrain_domain", "target_domain"]).median().unstack()
    rows, cols = _order(runs["pretrain_domain"]), _order(evals["eval_domain"])
    got = _array(_traces(page, "gen")[2]["z"])
    np.testing.assert_allclose(got, shift.reindex(index=rows, columns=cols).to_numpy(), rtol=1e-3, atol=1e-6)
    assert not errors
    page.close()


def test_baseline_boxes_compare_mixture_and_transfer(site, browser):
    page, errors = _open(browser, f"{site['url']}/baseline.html")
    _choose(page, "baseline", metric="recall", pair="-5 → 10", lr="1e-4")
    runs, evals = _tables(site["results"], "cpu", "baseline")
    runs = runs[(runs["pretrain_domain"] == "df-5") & (runs["target_domain"] == "df10") & (runs["lr_pretrain"] == 1e-4)]
    ev = evals.merge(runs, on=["run_id", "profile"])
    want = ev[ev["eval_domain"] == "df10"].groupby("minor_images")["recall"].median()
    mixture_target = _traces(page, "baseline")[0]
    assert mixture_target["name"] == "mixture"
    np.testing.assert_allclose(mixture_target["median"], want.to_numpy(), rtol=1e-3)
    tl_runs, tl_evals = _tables(site["results"], "cpu", "defocus")
    tl_runs = tl_runs[(tl_runs["pretrain_domain"] == "df-5") & (tl_runs["target_domain"] == "df10")
                      & (tl_runs["lr_pretrain"] == 1e-4)]
    ev = tl_evals.merge(tl_runs, on=["run_id", "profile"])
    forgetting = ev[(ev["stage"] == "transfer") & (ev["eval_domain"] == "df-5")].groupby("transfer_images")["recall"]
    tl_source = _traces(page, "baseline")[3]
    assert tl_source["name"] == "transfer learning"
    np.testing.assert_allclose(tl_source["median"], forgetting.median().to_numpy(), rtol=1e-3)
    assert not errors
    page.close()


@pytest.mark.parametrize("width", [390, 1280])
def test_no_text_overlaps_at_phone_and_desktop_width(site, browser, width):
    from test_explorers_static import OVERLAPS_JS

    for name in PAGES:
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(f"{site['url']}/{name}.html")
        page.wait_for_selector(f"#{name} .js-plotly-plot .main-svg")
        found = page.evaluate(OVERLAPS_JS, f"#{name}")
        assert found["bad"] == [] and found["wide"] == 0, (name, found)
        if width == 390:
            page.screenshot(path=str(ARTIFACTS / f"explorer-{name}-390.png"), full_page=True)
        page.close()


def test_csv_download_holds_the_plotted_cells(site, browser):
    import io

    page, _ = _open(browser, f"{site['url']}/domain.html")
    _choose(page, "domain", metric="iou", reduction="mean")
    with page.expect_download() as info:
        page.click("#domain [data-role=csv]")
    frame = pd.read_csv(io.StringIO(open(info.value.path()).read()))
    traces = _traces(page, "domain")
    after = frame[frame["trace"] == "after transfer learning"].pivot(index="y", columns="x", values="value")
    rows, cols = [int(v) for v in after.index], [int(v) for v in after.columns]
    z = _array(traces[1]["z"])
    want = pd.DataFrame(z, index=[-5, 0, 5], columns=[-10, -5, 0, 5, 10]).loc[rows, cols]
    np.testing.assert_allclose(after.to_numpy(float), want.to_numpy(), rtol=1e-6)
    page.close()
