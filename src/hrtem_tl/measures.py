"""Per-model tables and the measures the claims are built from.

:func:`model_cells` turns the results tables (:mod:`hrtem_tl.results`) into one row
per model and evaluated domain; the other functions compute, from such tables, the
quantities that :mod:`hrtem_tl.analysis` tests against the claims' thresholds: gaps
between rows, dose slopes, class contrasts, size gaps, paired freezing differences,
changes against control runs. *Goodness* is a metric oriented so that larger is better
(:func:`goodness`). Control runs (``kind == "control"``) never count as transfers.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import combinations

import numpy as np
import pandas as pd

from .metrics import HIGHER_IS_BETTER, METRICS
from .results import controls, transfers
from .series import DOSES, parse_structure_domain
from .stats import additive_residuals, cell_means

PROFILE_ORDER = ("paper", "gpu", "cpu", "smoke")  # largest scale first
DOSE = {f"dose{d}": float(d) for d in DOSES}  # noise-series domain -> dose [e-/Å²]


def pick_profile(profiles: Iterable[str]) -> str | None:
    """The largest-scale profile among ``profiles`` (paper > gpu > cpu > smoke > others)."""
    profiles = sorted(set(profiles))
    for name in PROFILE_ORDER:
        if name in profiles:
            return name
    return profiles[0] if profiles else None


def for_profile(runs: pd.DataFrame, evaluations: pd.DataFrame, profile: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of both tables that belong to ``profile``."""
    return (runs[runs["profile"] == profile].reset_index(drop=True),
            evaluations[evaluations["profile"] == profile].reset_index(drop=True))


def goodness(values, metric: str):
    """``values`` oriented so that larger is better (the loss changes sign)."""
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    return values if HIGHER_IS_BETTER[metric] else -values


def model_cells(runs: pd.DataFrame, evaluations: pd.DataFrame, stage: str, *,
                freezing: Iterable[str] | None = None, target_only: bool = True) -> pd.DataFrame:
    """One row per model and evaluated domain, with every metric.

    ``stage="pretrain"``: each pretrained model (``model`` = ``unit`` = ``pretrain_id``)
    once per evaluated domain, however many runs share it; ``freezing`` is empty.
    ``stage="transfer"``: each transfer run (``model`` = ``run_id``; control runs left
    out) on its target domain, or on every domain with ``target_only=False``; its
    ``unit`` is the (pair, seed) it belongs to, shared by its freezing options.
    Columns: ``model, unit, seed, freezing, pretrain_domain, target_domain,
    eval_domain`` and the metrics. ``freezing`` keeps only runs with those modes.
    """
    if stage not in ("pretrain", "transfer"):
        raise ValueError(f"unknown stage {stage!r}; choose pretrain or transfer")
    chosen = runs if stage == "pretrain" else transfers(runs)
    chosen = chosen if freezing is None else chosen[chosen["freezing"].isin(list(freezing))]
    keys = ["run_id", "profile", "pretrain_id", "seed", "freezing", "pretrain_domain", "target_domain"]
    ev = evaluations[evaluations["stage"] == stage].merge(chosen[keys], on=["run_id", "profile"])
    if stage == "pretrain":
        ev = ev.drop_duplicates(["profile", "pretrain_id", "eval_domain"]).assign(
            model=lambda f: f["pretrain_id"], unit=lambda f: f["pretrain_id"], freezing="", target_domain="")
    else:
        ev = ev.assign(model=ev["run_id"],
                       unit=ev["pretrain_domain"] + ">" + ev["target_domain"] + "|s" + ev["seed"].astype(str))
        if target_only:
            ev = ev[ev["eval_domain"] == ev["target_domain"]]
    columns = ["model", "unit", "seed", "freezing", "pretrain_domain", "target_domain", "eval_domain", *METRICS]
    labels = {c: object for c in columns[:7] if c != "seed"}  # numpy objects: faster to slice than arrow strings
    return ev[columns].astype(labels).reset_index(drop=True)


def lowest_row_gap(cells: pd.DataFrame, value: str, metric: str, row_label: str) -> dict[str, float]:
    """Goodness of the ``row_label`` models minus the mean of the other rows, per
    evaluated domain: ``mean`` over domains and ``best`` (the domain where the
    ``row_label`` models are least behind; below 0 = behind on every domain)."""
    matrix = goodness(cell_means(cells, value), metric)
    if row_label not in matrix.index or len(matrix.index) < 2:
        return {"mean": np.nan, "best": np.nan}
    gap = (matrix.loc[row_label] - matrix.drop(index=row_label).mean()).dropna()
    return {"mean": float(gap.mean()), "best": float(gap.max())} if len(gap) else {"mean": np.nan, "best": np.nan}


def dose_slope(cells: pd.DataFrame, value: str, metric: str, by: str = "eval_domain") -> float:
    """Least-squares slope of the mean goodness per ``by`` dose against log2(dose)
    [goodness per doubling of the dose]; NaN with fewer than two doses."""
    means = goodness(cells.groupby(by)[value].mean(), metric)
    means = means[[d in DOSE for d in means.index]]
    if len(means) < 2:
        return np.nan
    x = np.log2([DOSE[d] for d in means.index])
    return float(np.polyfit(x, means.to_numpy(float), 1)[0])


def class_contrast(cells: pd.DataFrame, value: str, metric: str, classes: dict[str, object],
                   main_effects_removed: bool = True) -> float:
    """Mean goodness of off-diagonal cells whose two domains share a class, minus that of
    cells whose classes differ (positive: models do better within their class).

    With ``main_effects_removed`` the row (pretraining domain) and column (evaluated
    domain) effects of an additive fit are taken out first, so that a lattice that is
    easy for every model, or a model that is good everywhere, does not pass for a
    class effect.
    """
    matrix = goodness(cell_means(cells, value), metric)
    rows = [d for d in matrix.index if d in classes]
    cols = [d for d in matrix.columns if d in classes]
    matrix = matrix.loc[rows, cols]
    if main_effects_removed:
        matrix = additive_residuals(matrix)
    values = matrix.to_numpy()
    rc = np.array([classes[d] for d in rows], dtype=object)[:, None]
    cc = np.array([classes[d] for d in cols], dtype=object)[None, :]
    off = np.array(rows, dtype=object)[:, None] != np.array(cols, dtype=object)[None, :]
    same, ok = (rc == cc), off & ~np.isnan(values)
    if not (ok & same).any() or not (ok & ~same).any():
        return np.nan
    return float(values[ok & same].mean() - values[ok & ~same].mean())


def lighter_pairs(classes: dict[str, object], weight: dict[str, float]) -> list[tuple[str, str]]:
    """Pairs (lighter, heavier) of domains that share a class, by ``weight``."""
    pairs = []
    for a, b in combinations(sorted(classes), 2):
        if classes[a] == classes[b] and weight[a] != weight[b]:
            pairs.append((a, b) if weight[a] < weight[b] else (b, a))
    return pairs


def lighter_advantage(cells: pd.DataFrame, value: str, metric: str, pairs: list[tuple[str, str]]) -> float:
    """Mean over (lighter, heavier) pairs of the goodness of the model pretrained on the
    lighter domain minus that of the heavier one, both over the evaluated domains other
    than the pair itself (positive: the lighter element's model does better)."""
    matrix = goodness(cell_means(cells, value), metric)
    diffs = []
    for light, heavy in pairs:
        if light not in matrix.index or heavy not in matrix.index:
            continue
        others = [c for c in matrix.columns if c not in (light, heavy)]
        d = matrix.loc[light, others].mean() - matrix.loc[heavy, others].mean()
        if not np.isnan(d):
            diffs.append(d)
    return float(np.mean(diffs)) if diffs else np.nan


def structure_types(domains: Iterable[str]) -> dict[str, str]:
    """Structure type (wurtzite, fcc, diamond, spinel, bcc) of each structure domain."""
    from .lattices import LATTICES

    return {d: LATTICES[parse_structure_domain(d)[0]].structure_type for d in domains
            if parse_structure_domain(d)[0] in LATTICES}


def space_groups(domains: Iterable[str]) -> dict[str, int]:
    """Space-group number of each structure domain's lattice."""
    from .lattices import LATTICES

    return {d: LATTICES[parse_structure_domain(d)[0]].spacegroup for d in domains
            if parse_structure_domain(d)[0] in LATTICES}


def mean_atomic_number(domains: Iterable[str]) -> dict[str, float]:
    """Mean atomic number of each structure domain's formula unit (a lightness measure)."""
    from ase.data import atomic_numbers
    from ase.formula import Formula

    out = {}
    for d in domains:
        counts = Formula(parse_structure_domain(d)[0]).count()
        out[d] = sum(atomic_numbers[el] * n for el, n in counts.items()) / sum(counts.values())
    return out


def size_gaps(pre: pd.DataFrame, post: pd.DataFrame, value: str, metric: str) -> dict[str, float]:
    """How much worse models trained on one particle size do on the other, before and after TL.

    ``pre``: :func:`model_cells` after pretraining (every domain); ``post``: after
    transfer learning (target domains). For a target domain T = (lattice L, size t)
    and a source S, the *cost* of S on T is the goodness of the model pretrained on T
    itself, on T, minus that of the model pretrained on S, on T. Returned means:

    * ``before``: cost of the other size of the same lattice (S = (L, s), s != t);
    * ``after``: the same after transfer learning from S to T, on T;
    * ``left`` = after / before: the fraction of the size gap that TL leaves;
    * ``small_on_large``: ``before`` for small-particle models on large particles only;
    * ``large_on_small``: the same for large-particle models on small particles;
    * ``lattice``: cost of another lattice of the same size (after pretraining);
    * ``ratio`` = before / lattice: the size gap relative to the lattice gap.
    """
    m_pre = goodness(cell_means(pre, value), metric)
    m_post = goodness(cell_means(post, value), metric)
    g_pre = {(r, c): v for r, row in zip(m_pre.index, m_pre.to_numpy()) for c, v in zip(m_pre.columns, row)}
    g_post = {(r, c): v for r, row in zip(m_post.index, m_post.to_numpy()) for c, v in zip(m_post.columns, row)}
    nan = float("nan")
    before, after, small_on_large, large_on_small, lattice_cost = [], [], [], [], []
    for target in m_pre.columns:
        if target not in m_pre.index:
            continue
        lattice, size = parse_structure_domain(target)
        own = g_pre[(target, target)]
        for source in m_pre.index:
            s_lat, s_size = parse_structure_domain(source)
            cost = own - g_pre[(source, target)]
            if s_lat != lattice and s_size == size and not np.isnan(cost):
                lattice_cost.append(cost)
            if s_lat != lattice or s_size == size:
                continue
            a = own - g_post.get((source, target), nan)
            if np.isnan(cost) or np.isnan(a):
                continue
            before.append(cost)
            after.append(a)
            (small_on_large if (s_size, size) == ("small", "large") else large_on_small).append(cost)
    mb = float(np.mean(before)) if before else nan
    ma = float(np.mean(after)) if after else nan
    ml = float(np.mean(lattice_cost)) if lattice_cost else nan
    return {"before": mb, "after": ma, "left": ma / mb if mb > 0 else nan,
            "small_on_large": float(np.mean(small_on_large)) if small_on_large else nan,
            "large_on_small": float(np.mean(large_on_small)) if large_on_small else nan,
            "lattice": ml, "ratio": mb / ml if ml > 0 else nan}


def paired_freezing(runs: pd.DataFrame, evaluations: pd.DataFrame, metric: str,
                    reference: str = "none") -> pd.DataFrame:
    """Each transfer run beside its twin with ``reference`` freezing (same pretrained
    model, same target, same seed).

    One row per run with a freezing mode other than ``reference``: ``freezing``,
    ``pair`` (``source>target``), ``unit`` (pair and seed), ``seed``,
    ``pretrain_domain``, ``diff`` (goodness minus the twin's; positive = better than
    the reference), ``rel`` (relative change of the raw metric) and ``time_ratio``
    (transfer wall time over the twin's).
    """
    post = model_cells(runs, evaluations, "transfer")
    post = post.merge(runs[["run_id", "wall_transfer_s"]], left_on="model", right_on="run_id")
    ref = post[post["freezing"] == reference].set_index("unit")
    other = post[(post["freezing"] != reference) & post["unit"].isin(ref.index)]
    base = ref.loc[other["unit"]]
    return pd.DataFrame({
        "freezing": other["freezing"].to_numpy(),
        "pair": (other["pretrain_domain"] + ">" + other["target_domain"]).to_numpy(),
        "unit": other["unit"].to_numpy(),
        "seed": other["seed"].to_numpy(),
        "pretrain_domain": other["pretrain_domain"].to_numpy(),
        "diff": goodness(other[metric].to_numpy() - base[metric].to_numpy(), metric),
        "rel": other[metric].to_numpy() / base[metric].to_numpy() - 1,
        "time_ratio": other["wall_transfer_s"].to_numpy() / base["wall_transfer_s"].to_numpy(),
    })


def per_pair(frame: pd.DataFrame, value: str, by: str = "pair") -> pd.Series:
    """Mean of ``value`` per ``by`` (over seeds): one paired difference per pair."""
    return frame.groupby(by)[value].mean()


def freezing_table(runs: pd.DataFrame, evaluations: pd.DataFrame, metrics: Iterable[str] = ("loss", "dice")) -> pd.DataFrame:
    """Per freezing mode: transfer runs, trainable parameters, median transfer wall time
    and the median of each metric on the target after transfer learning."""
    post = model_cells(runs, evaluations, "transfer").merge(
        runs[["run_id", "params_trainable", "params_total", "wall_transfer_s"]], left_on="model", right_on="run_id")
    table = post.groupby("freezing").agg(
        runs=("model", "size"), params_trainable=("params_trainable", "median"),
        params_total=("params_total", "median"), wall_transfer_s=("wall_transfer_s", "median"),
        **{metric: (metric, "median") for metric in metrics})
    table["trainable_share"] = table["params_trainable"] / table["params_total"]
    return table


def control_changes(runs: pd.DataFrame, evaluations: pd.DataFrame, metric: str) -> pd.DataFrame:
    """What transfer learning did on domains other than its target, against the control.

    One row per transfer run and evaluated domain other than its target: ``change`` =
    goodness after transfer learning minus goodness of the same pretrained model before
    it; ``control_change`` = the same for the model's control run (the transfer stage's
    training on its own pretraining domain) on that domain; ``excess`` = change minus
    control change (negative: transfer learning did worse there than the same amount of
    further training at home). ``kind`` is ``source`` for the pretraining domain, else
    ``other``. Empty when there are no control runs.
    """
    ctrl = controls(runs)
    if ctrl.empty:
        return pd.DataFrame(columns=["model", "pair", "unit", "seed", "freezing", "pretrain_domain",
                                     "target_domain", "eval_domain", "kind", "change", "control_change", "excess"])
    after = model_cells(runs, evaluations, "transfer", target_only=False)
    after = after.merge(runs[["run_id", "pretrain_id"]], left_on="model", right_on="run_id")
    after = after[after["eval_domain"] != after["target_domain"]]
    before = model_cells(runs, evaluations, "pretrain")
    before = before.rename(columns={"model": "pretrain_id", metric: "before"})[["pretrain_id", "eval_domain", "before"]]
    home = evaluations[(evaluations["stage"] == "transfer") & evaluations["run_id"].isin(ctrl["run_id"])]
    home = home.merge(ctrl[["run_id", "pretrain_id"]], on="run_id").rename(columns={metric: "control"})
    merged = (after.merge(before, on=["pretrain_id", "eval_domain"])
              .merge(home[["pretrain_id", "eval_domain", "control"]], on=["pretrain_id", "eval_domain"]))
    change = goodness(merged[metric] - merged["before"], metric)
    control = goodness(merged["control"] - merged["before"], metric)
    return pd.DataFrame({
        "model": merged["model"], "pair": merged["pretrain_domain"] + ">" + merged["target_domain"],
        "unit": merged["unit"], "seed": merged["seed"], "freezing": merged["freezing"],
        "pretrain_domain": merged["pretrain_domain"], "target_domain": merged["target_domain"],
        "eval_domain": merged["eval_domain"],
        "kind": np.where(merged["eval_domain"] == merged["pretrain_domain"], "source", "other"),
        "change": change, "control_change": control, "excess": change - control})


def worse_than_start(runs: pd.DataFrame, evaluations: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """Each transfer run on its target beside the pretrained model it started from.

    Columns: ``model``, ``pair``, ``freezing``, ``seed``, ``same_lattice`` (a structure
    transfer between the two sizes of one lattice), ``start``, ``end`` (goodness before
    and after transfer learning, on the target's test split) and ``worse`` (end < start).
    """
    post = model_cells(runs, evaluations, "transfer").merge(runs[["run_id", "pretrain_id"]], left_on="model",
                                                             right_on="run_id")
    pre = model_cells(runs, evaluations, "pretrain").rename(columns={"model": "pretrain_id", metric: "start"})
    merged = post.merge(pre[["pretrain_id", "eval_domain", "start"]], on=["pretrain_id", "eval_domain"])
    end, start = goodness(merged[metric], metric), goodness(merged["start"], metric)
    lattice = [parse_structure_domain(a)[0] == parse_structure_domain(b)[0] and "_" in a
               for a, b in zip(merged["pretrain_domain"], merged["target_domain"])]
    return pd.DataFrame({"model": merged["model"], "pair": merged["pretrain_domain"] + ">" + merged["target_domain"],
                         "freezing": merged["freezing"], "seed": merged["seed"], "same_lattice": lattice,
                         "start": start, "end": end, "worse": end < start})


def seed_ranges(runs: pd.DataFrame, evaluations: pd.DataFrame, metric: str = "dice") -> pd.Series:
    """The seed-to-seed noise of transfer learning: for each configuration (pair,
    freezing option, transfer-set size, learning rates) trained with two or more
    seeds, the range (highest minus lowest) of ``metric`` on the target over its seeds."""
    keys = ["transfer_images", "lr_pretrain", "lr_transfer"]
    cells = model_cells(runs, evaluations, "transfer").merge(runs[["run_id", *keys]], left_on="model",
                                                             right_on="run_id")
    g = cells.groupby(["pretrain_domain", "target_domain", "freezing", *keys])
    return (g[metric].max() - g[metric].min())[g["seed"].nunique() >= 2]


def size_cells(runs: pd.DataFrame, evaluations: pd.DataFrame) -> pd.DataFrame:
    """:func:`model_cells` after transfer learning (full fine-tuning runs, on their target)
    with each run's ``transfer_images``."""
    return model_cells(runs, evaluations, "transfer", freezing=("none",)).merge(
        runs[["run_id", "transfer_images"]], left_on="model", right_on="run_id")


def size_pairs(cells: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (pair, seed): goodness with the largest transfer set minus the smallest
    (``gain``), from :func:`size_cells`; per target: the spread (standard deviation over
    pretraining domains) with the smallest minus with the largest (``narrowing``)."""
    small, large = cells["transfer_images"].min(), cells["transfer_images"].max()
    g = cells.assign(g=goodness(cells[metric], metric), pair=cells["pretrain_domain"] + ">" + cells["target_domain"])
    wide = g.pivot_table(index=["pair", "seed"], columns="transfer_images", values="g")
    gain = (wide[large] - wide[small]).rename("gain").reset_index()
    spread = g.groupby(["target_domain", "seed", "transfer_images"])["g"].std().unstack("transfer_images")
    narrowing = (spread[small] - spread[large]).rename("narrowing").reset_index()
    return gain, narrowing
