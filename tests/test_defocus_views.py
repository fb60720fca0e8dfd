"""The defocus explorers' tables and the defocus measures, on synthetic results."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from hrtem_testutils import synthetic_defocus

from hrtem_tl import defocus_measures as D
from hrtem_tl import defocus_views as V
from hrtem_tl.results import read_results
from hrtem_tl.variants import Control, compact, variant_html, variant_payload


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("defocus")
    synthetic_defocus(root)
    synthetic_defocus(root / "original", profile="original", metrics=("loss",), sizes=(16, 32, 64), device="A100")
    return root


def _set_losses(tables: dict, fn) -> dict:
    """Tables whose losses are ``fn(evaluations merged with runs)``."""
    ev = tables["evaluations"].merge(tables["runs"].drop(columns="profile"), on="run_id", how="left")
    return {**tables, "evaluations": tables["evaluations"].assign(loss=fn(ev).to_numpy())}


def test_variant_payload_refuses_what_the_page_could_not_show():
    fig = go.Figure([go.Scatter()])
    c = Control("a", "a", (("x", "x"), ("y", "y")), "x")
    with pytest.raises(ValueError, match="default"):
        Control("b", "b", (("x", "x"),), "z")
    with pytest.raises(ValueError, match="one value per control"):
        variant_payload(fig, [c], {("x", "extra"): {"traces": []}})
    with pytest.raises(ValueError, match="default choice"):
        variant_payload(fig, [c], {("y",): {"traces": []}})
    payload = variant_payload(fig, [c], {("x",): {"traces": [{"y": [1.234567, np.nan, np.inf]}]}})
    assert payload["variants"]["x"]["traces"][0]["y"] == [1.235, None, None]
    text = variant_html("e", payload)
    data = re.search(r'id="e-data">(.*?)</script>', text, re.S).group(1)
    assert json.loads(data)["controls"][0]["default"] == "x"
    assert compact({"a": (np.float32(2.5), np.int64(3))}) == {"a": [2.5, 3]}


def test_sources_come_ours_first_with_their_metrics(root):
    sources = V.load_sources(root, "defocus")
    assert list(sources) == ["cpu", "original"]
    assert [v for v, _ in V.metric_control(sources).options] == ["loss", "dice", "iou", "precision", "recall",
                                                                  "accuracy"]
    assert not V.available(sources["original"]["evaluations"], "dice")
    assert "A100" in V.source_title("original", sources["original"]["runs"])


def test_domain_matrices_count_each_pretrained_model_once(root):
    tables = read_results(root, "defocus")
    frame = V.long_table(tables)
    rows, cols = ["df-5", "df0", "df5"], ["df-10", "df-5", "df0", "df5", "df10"]
    counts = V.domain_matrices(frame.assign(one=1.0), rows, cols, "one", "sum")
    models = tables["runs"].groupby("pretrain_domain")["pretrain_id"].nunique()
    assert (counts["pretrain"] == models.reindex(rows).to_numpy()[:, None]).all()
    mats = V.domain_matrices(frame, rows, cols, "dice", "median")
    for i, d in enumerate(rows):  # no transfer on the diagonal: the pretraining value
        assert mats["transfer"][i, cols.index(d)] == mats["pretrain"][i, cols.index(d)]


def test_ood_spread_is_the_std_over_the_other_domains(root):
    frame = V.long_table(read_results(root, "defocus"))
    spread = V.ood_spread(frame, "iou").set_index("run_id")
    run = frame["run_id"].iloc[0]
    one = frame[(frame["run_id"] == run) & (frame["eval_domain"] != frame["target_domain"])]
    for stage, col in (("pretrain", "before"), ("transfer", "after")):
        assert spread.loc[run, col] == pytest.approx(one.loc[one["stage"] == stage, "iou"].std())
    assert spread.loc[run, "shift"] == pytest.approx(spread.loc[run, "after"] - spread.loc[run, "before"])


def test_measures_recover_planted_ratios(root):
    tables = read_results(root, "defocus")
    base = read_results(root, "baseline")

    def planted(ev):  # target loss halves from 16 to 32 images; frozen encoder x1.2, decoder x1.05
        factor = np.where(ev["transfer_images"] == 32, 0.5, 1.0)
        factor = factor * ev["freezing"].map({"none": 1.0, "encoder": 1.2, "decoder": 1.05}).to_numpy()
        return pd.Series(np.where(ev["stage"] == "transfer", 0.1 * factor, 0.2))

    t = _set_losses(tables, planted)
    target = D.on_target(t)
    assert D.size_effect(target)["level"]["estimate"] == pytest.approx(-50.0)
    assert D.freezing_effect(target, "encoder")["estimate"] == pytest.approx(20.0)
    assert D.freezing_effect(target, "decoder")["estimate"] == pytest.approx(5.0)
    # one value per pretraining group (defocus and seed), whose transfers share a pretrained model
    groups = target.drop_duplicates(["pretrain_domain", "seed"])
    assert D.freezing_effect(target, "encoder")["n"] == len(groups) < target["pair"].nunique() * 2
    assert D.ood_change(tables).loc["all", "n"] == len(groups)
    assert D.seed_spread(target) == pytest.approx(0.0)
    # the mixture's target loss is 0.08, transfer learning's (32 images, all freezing) 0.05 x mode factor
    b = _set_losses(base, lambda ev: pd.Series(np.full(len(ev), 0.08)))
    result = D.mixture_against_transfer({"cpu": b}, {"cpu": t}, 32, "target")
    assert result["estimate"] == pytest.approx((0.05 * 1.05 / 0.08 - 1) * 100)  # median over the three modes
    assert D.mixture_against_transfer({"cpu": b}, {"cpu": t}, 48, "target")["n"] == 0  # no TL with 48 images


def test_mixture_and_transfer_compares_seeds_on_the_pairs_both_approaches_share(root):
    tables, base = read_results(root, "defocus"), read_results(root, "baseline")
    assert D.shared_sizes({"cpu": base}, {"cpu": tables}) == [16, 32]  # the mixtures' 48 has no transfer
    no_tl = {"cpu": {**tables, "runs": tables["runs"].iloc[:0]}}
    assert D.shared_sizes({"cpu": base}, no_tl) == [] and D.shared_pairs({"cpu": base}, no_tl, 32) == []
    # mixtures of one pair only: the comparison keeps that pair of the transfers
    one = base["runs"][(base["runs"]["pretrain_domain"] == "df-5") & (base["runs"]["target_domain"] == "df5")]
    b = {**base, "runs": one}
    assert D.shared_pairs({"cpu": b}, {"cpu": tables}, 32) == ["-5 → 5"]

    def mixture(ev):  # seed 0: 0.08 on the target, seed 1: 0.10; 0.3 on the source
        return pd.Series(np.where(ev["eval_domain"] == ev["target_domain"], 0.08 + 0.02 * ev["seed"], 0.3))

    def transfer(ev):  # full fine-tuning 0.04 (seed 0) or 0.06 (seed 1); frozen options far off; others 0.5
        on_pair = (ev["pretrain_domain"] == "df-5") & (ev["target_domain"] == "df5")
        full = np.where(ev["freezing"] == "none", 0.04 + 0.02 * ev["seed"], 9.0)
        return pd.Series(np.where(on_pair, np.where(ev["eval_domain"] == "df-5", 0.2 + full, full), 0.5))

    table = D.mixture_and_transfer({"cpu": _set_losses(b, mixture)}, {"cpu": _set_losses(tables, transfer)}, 32)
    assert list(table.index) == [("mixture", 0), ("mixture", 1), ("transfer learning", 0), ("transfer learning", 1)]
    np.testing.assert_allclose(table["target"], [0.08, 0.10, 0.04, 0.06])
    np.testing.assert_allclose(table["source"], [0.3, 0.3, 0.24, 0.26])
    assert (table["pairs"] == 1).all()


def test_in_focus_penalty_and_lr_table(root):
    tables = read_results(root, "defocus")
    t = _set_losses(tables, lambda ev: pd.Series(np.where(ev["eval_domain"] == "df0", 0.3, 0.1)))
    assert D.in_focus_penalty(t)["estimate"] == pytest.approx(200.0)
    # a model's own domain does not count among the others, and models pretrained at 0 nm are left out
    own = _set_losses(tables, lambda ev: pd.Series(np.where(ev["eval_domain"] == "df0", 0.3, np.where(
        ev["eval_domain"] == ev["pretrain_domain"], 0.01, 0.1))))
    pen = D.in_focus_penalty(own)
    assert pen["estimate"] == pytest.approx(200.0) and "df0" not in pen["by_domain"].index
    assert pen["n"] == tables["runs"].query("pretrain_domain != 'df0'")["pretrain_id"].nunique()
    lrs = D.lr_table(D.on_target(tables))
    assert set(lrs.index) == {"1e-3 → 1e-4", "1e-4 → 1e-5"} and lrs["best_share"].sum() == pytest.approx(1.0)


def test_every_explorer_builds_and_offers_both_sources(root):
    for build in (V.hp_explorer, V.domain_explorer, V.gen_explorer, V.baseline_explorer):
        text = build(root, element_id="x")
        payload = json.loads(re.search(r'id="x-data">(.*?)</script>', text, re.S).group(1).replace("<\\/", "</"))
        sources = {k.split("|")[0] for k in payload["variants"]}
        assert sources == {"cpu", "original"}, build.__name__
        metrics = {k.split("|")[1] for k in payload["variants"] if k.startswith("original|")}
        assert metrics == {"loss"}, build.__name__
    assert "No defocus results" in V.explorer_or_note(V.hp_explorer, root / "nowhere", "defocus")
