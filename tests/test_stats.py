"""Tests of hrtem_tl.stats: interval methods are calibrated, paired tests see paired effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from hrtem_tl import stats as S

TRIALS = 1000  # the false-rejection rate of a calibrated 95 % interval is then 5 % ± 0.7 % (one s.e.)


def _mean_of_stratum_means(f: pd.DataFrame) -> float:
    h = f["stratum"].to_numpy()
    return float(np.mean(np.bincount(h, f["v"].to_numpy())[np.unique(h)] / np.bincount(h)[np.unique(h)]))


def _strata_table(rng, strata=5, per=2, shift=None):
    """Units inside strata, one value each: stratum mean (fixed design) plus unit noise."""
    means = np.linspace(0, 1, strata) if shift is None else shift
    rows = [{"unit": f"s{h}u{i}", "stratum": h, "seed": i, "v": means[h] + rng.normal()}
            for h in range(strata) for i in range(per)]
    return pd.DataFrame(rows), float(np.mean(means))


def test_stratified_jackknife_of_a_mean_of_stratum_means_is_the_textbook_interval():
    rng = np.random.default_rng(0)
    cells, _ = _strata_table(rng)
    est = S.stratified_jackknife(cells, lambda f: float(f.groupby("stratum")["v"].mean().mean()),
                                 unit="unit", strata=["stratum"])["value"]
    by = cells.groupby("stratum")["v"]
    var = float((by.var(ddof=1) / by.count()).sum()) / by.ngroups**2
    half = scipy_stats.t.ppf(0.975, len(cells) - by.ngroups) * np.sqrt(var)
    mean = float(by.mean().mean())
    assert est["df"] == 5
    assert (est["estimate"], est["lo"], est["hi"]) == pytest.approx((mean, mean - half, mean + half))


@pytest.mark.parametrize("per", [2, 3])
def test_stratified_jackknife_is_calibrated(per):
    """On synthetic nulls the interval misses the true value 5 % of the time (within 2 points)."""
    rng = np.random.default_rng(per)
    misses = 0
    for _ in range(TRIALS):
        cells, truth = _strata_table(rng, per=per)
        est = S.stratified_jackknife(cells, _mean_of_stratum_means, unit="unit", strata=["stratum"])["value"]
        misses += not (est["lo"] <= truth <= est["hi"])
    assert abs(misses / TRIALS - 0.05) < 0.02


def test_group_jackknife_is_calibrated_and_is_the_t_interval_of_a_mean():
    rng = np.random.default_rng(1)
    misses = 0
    for _ in range(TRIALS):
        cells = pd.DataFrame({"lattice": list("abcdefgh"), "seed": 0, "v": rng.normal(size=8)})
        est = S.group_jackknife(cells, lambda f: float(f["v"].mean()), group="lattice")["value"]
        misses += not (est["lo"] <= 0 <= est["hi"])
    assert abs(misses / TRIALS - 0.05) < 0.02
    x = cells["v"].to_numpy()
    half = scipy_stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    assert (est["lo"], est["hi"]) == pytest.approx((x.mean() - half, x.mean() + half))
    one = S.group_jackknife(cells.iloc[:1], lambda f: float(f["v"].mean()), group="lattice")["value"]
    assert np.isnan(one["lo"])  # one group: no interval


def test_a_share_keeps_its_raw_interval_cut_at_0_and_1():
    """A share's interval is the raw-scale one with its ends cut at 0 and 1, and its
    ``half`` is the uncut half-width, in all three jackknives."""
    rng = np.random.default_rng(3)
    cells = pd.DataFrame({"lattice": list("abcdefgh"), "model": [0, 0, 1, 1, 2, 2, 3, 3], "target": [0, 1] * 4})
    cells["cell"] = cells["model"].astype(str) + "|" + cells["target"].astype(str)

    def share(f):
        return {"share": float(f["v"].mean()), "other": float(f["v"].mean())}

    ways = dict(first=("model", []), second=("target", []), both=("cell", []))
    runs = {"group": lambda f, **kw: S.group_jackknife(f, share, group="lattice", **kw),
            "stratified": lambda f, **kw: S.stratified_jackknife(f, share, unit="lattice", strata=[], **kw),
            "crossed": lambda f, **kw: S.crossed_jackknife(f, share, **ways, **kw)}
    for name, run in runs.items():
        while True:  # a share near 0 from few units, whose raw interval reaches below 0
            frame = cells.assign(v=rng.beta(1, 9, size=8))
            plain = run(frame)["share"]
            if plain["lo"] < 0:
                break
        cut = run(frame, shares=("share",))
        assert cut["share"]["estimate"] == pytest.approx(plain["estimate"]), name
        assert (cut["share"]["lo"], cut["share"]["hi"]) == (0.0, pytest.approx(plain["hi"])), name
        assert cut["share"]["half"] == pytest.approx((plain["hi"] - plain["lo"]) / 2), name
        assert cut["other"]["lo"] == pytest.approx(plain["lo"]), name  # outputs not named stay as they are
    near_one = cells.assign(v=[1.0, 0.7] + [0.99] * 6)
    assert runs["group"](near_one)["share"]["hi"] > 1
    assert runs["group"](near_one, shares=("share",))["share"]["hi"] == 1.0


def test_paired_is_calibrated():
    rng = np.random.default_rng(2)
    misses = sum(not (p["lo"] <= 0 <= p["hi"]) for p in (S.paired(rng.normal(size=12)) for _ in range(TRIALS)))
    assert abs(misses / TRIALS - 0.05) < 0.02


def test_paired_test_detects_a_planted_paired_effect_that_an_unpaired_test_misses():
    """Pairs differ a lot from each other; inside each pair the treatment adds a small, steady 0.05."""
    rng = np.random.default_rng(3)
    level = rng.normal(0, 1.0, size=20)  # pair-to-pair differences dwarf the effect
    reference = level + rng.normal(0, 0.01, size=20)
    treated = level + 0.05 + rng.normal(0, 0.01, size=20)
    p = S.paired(treated - reference)
    assert p["lo"] > 0 and p["positive"] == 20 and p["sign_p"] < 1e-5
    welch = scipy_stats.ttest_ind(treated, reference, equal_var=False)
    assert welch.pvalue > 0.5  # unpaired, the same data show nothing


def test_additive_residuals_remove_row_and_column_effects():
    rows, cols = np.array([0.0, 1.0, 3.0]), np.array([0.5, -0.5, 2.0])
    m = pd.DataFrame(rows[:, None] + cols[None, :], index=list("abc"), columns=list("abc"))
    m.loc["a", "b"] += 0.3  # one interaction
    res = S.additive_residuals(m)
    assert np.isnan(np.diag(res.to_numpy())).all()  # the diagonal takes no part
    assert res.loc["a", "b"] == pytest.approx(res.to_numpy()[~np.isnan(res.to_numpy())].max())
    assert np.nansum(res.to_numpy()) == pytest.approx(0, abs=1e-12)
    plain = S.additive_residuals(m - 0.0 * m.loc["a", "b"], exclude_diagonal=False)
    assert np.isfinite(plain.to_numpy()).all()


@pytest.mark.parametrize("est,lo,hi,text", [
    (0.046, 0.021, 0.071, "0.046 [0.021, 0.071]"),
    (0.000244, -0.097, 0.097, "0.000 [-0.097, 0.097]"),
    (12.34, 10.1, 14.6, "12.3 [10.1, 14.6]"),
    (0.5, np.nan, np.nan, "0.5 (no interval)"),
])
def test_estimates_are_rounded_to_what_their_interval_supports(est, lo, hi, text):
    assert S.format_estimate(est, lo, hi) == text


def test_the_crossed_jackknife_covers_a_mean_with_model_and_target_noise():
    """3 pretraining domains x 4 targets x 3 seeds, with noise of the pretrained model
    (domain, seed) and of the target and seed: the two-way jackknife keeps its 95 %
    interval around the true mean about 95 % of the time, where either way alone does not."""
    from hrtem_tl.stats import crossed_jackknife

    rng = np.random.default_rng(13)
    d, t, s = np.meshgrid(np.arange(3), np.arange(4), np.arange(3), indexing="ij")
    base = pd.DataFrame({"source": d.ravel(), "target": t.ravel(), "model": (d * 10 + s).ravel(),
                         "tseed": (t * 10 + s).ravel(), "cell": (d * 100 + t * 10 + s).ravel()})
    ways = dict(first=("model", ["source"]), second=("tseed", ["target"]), both=("cell", ["source", "target"]))
    misses, alone = 0, 0
    for _ in range(TRIALS):
        v = rng.normal(size=(3, 1, 3)) + rng.normal(size=(1, 4, 3)) + 0.1 * rng.normal(size=(3, 4, 3))
        # the mean over transfer pairs of their means over seeds, as the claims compute it
        frame, mean = base.assign(v=v.ravel()), lambda f: float(f.groupby(["source", "target"])["v"].mean().mean())
        est = crossed_jackknife(frame, mean, **ways)["value"]
        misses += not (est["lo"] <= 0 <= est["hi"])
        one = S.stratified_jackknife(frame, mean, unit="model", strata=["source"])["value"]
        alone += not (one["lo"] <= 0 <= one["hi"])
    assert abs(misses / TRIALS - 0.05) < 0.02 and alone / TRIALS > 0.08


def test_the_crossed_jackknife_covers_a_mean_on_an_unbalanced_grid():
    """The structure grid's shape: six pretraining domains transfer to three targets each,
    three others to one target only, two seeds; noise of the model and of the target and
    seed. The two-way interval still covers the true mean about 95 % of the time."""
    from hrtem_tl.stats import crossed_jackknife

    rng = np.random.default_rng(21)
    pairs = [(d, t) for d in range(6) for t in range(4) if t != d % 4] + [(d, d - 6) for d in range(6, 9)]
    base = pd.DataFrame([{"source": d, "target": t, "seed": s} for s in (0, 1) for d, t in pairs])
    base = base.assign(group=base["source"] * 10 + base["seed"], tseed=base["target"] * 10 + base["seed"],
                       cell=base["source"] * 100 + base["target"] * 10 + base["seed"])
    mean = lambda f: float(f.groupby(["source", "target"])["v"].mean().mean())  # noqa: E731
    ways = dict(first=("group", ["source"]), second=("tseed", ["target"]), both=("cell", ["source", "target"]))
    trials, misses = 400, 0
    for _ in range(trials):
        model, target = rng.normal(size=(9, 2)), rng.normal(size=(4, 2))
        v = model[base["source"], base["seed"]] + target[base["target"], base["seed"]] + 0.1 * rng.normal(size=len(base))
        est = crossed_jackknife(base.assign(v=v), mean, **ways)["value"]
        misses += not (est["lo"] <= 0 <= est["hi"])
    assert misses / trials < 0.08
