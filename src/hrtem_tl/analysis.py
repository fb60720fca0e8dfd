"""Statistics behind the numbers of the paper's pages.

Everything here works on the tables of :mod:`hrtem_tl.results` (``runs`` and
``evaluations``) or on the long per-model tables built from them by
:func:`model_cells`. The pages call these functions and print what they return;
no measured number is typed into the text.

Conventions
-----------
* A *cell* is a (pretraining domain, evaluated domain) pair; a *model* is one
  pretrained network (``pretrain_id``) after pretraining, or one transfer run
  (``run_id``) after transfer learning.
* *Goodness* is a metric oriented so that larger is better: the metric itself for
  overlap measures, its negative for the loss (:func:`goodness`).
* Variance shares (:func:`variance_shares`) split the spread of the cell means of a
  matrix into a part explained by the rows (pretraining domain), a part explained by
  the columns (evaluated or target domain) and a remainder (interaction), using an
  additive two-way model fitted by least squares. For a complete matrix the three
  shares are the classical eta-squared values and sum to 1; with missing cells (the
  empty diagonal of a transfer matrix) they are type-II shares and may not.
* Uncertainty comes from re-sampling models with replacement inside their groups
  (:func:`bootstrap`) and from repeating a statistic seed by seed
  (:func:`per_seed`). Claims about lattices (structure series) instead leave out one
  pretraining lattice at a time (:func:`jackknife`): the question there is whether a
  finding generalises across lattices, and one seed gives one model per lattice.
* Verdicts (:func:`verdict`) compare a bootstrap interval with a threshold stated
  in :data:`THRESHOLDS`; the pages print the thresholds beside the verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import combinations

import numpy as np
import pandas as pd

from .metrics import HIGHER_IS_BETTER, METRICS

PROFILE_ORDER = ("paper", "gpu", "cpu", "smoke")  # largest scale first
HOLDS, PARTLY, FAILS, UNTESTED = "holds", "partly", "does not hold", "not yet tested"

#: Thresholds of the verdicts, in one place so the pages can print them.
THRESHOLDS = {
    "strong_share": 0.25,  # a factor explaining at least this share of the cell variance "matters strongly"
    "weak_share": 0.10,  # a factor explaining at most this share "hardly matters"
    "most_share": 0.50,  # a factor explaining at least this share explains "most" of it
    "worst_columns": 0.80,  # "worse across the board": worst in at least this share of columns
    "monotonic": 0.80,  # Spearman correlation of target mean with the dose that counts as "follows"
    "removed": 0.50,  # transfer learning "removes most" of a gap: at most this fraction of it is left
    "little": 0.50,  # a size gap at most this fraction of the gap between lattices "matters little"
    "equal_dice": 0.01,  # two Dice values closer than this are "about as good"
    "equal_loss": 0.05,  # two losses whose relative difference is below this are "about as good"
    "ood_share": 0.05,  # "can make out-of-distribution behaviour worse": in at least this share of cases
    "level": 0.95,  # width of the bootstrap intervals
    "min_lattices": 3,  # structure claims need pretrained models of at least this many lattices
}


# --------------------------------------------------------------------------- tables


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

    ``stage="pretrain"``: each pretrained model (``model`` = ``pretrain_id``) once per
    evaluated domain, however many transfer runs share it; ``freezing`` is empty.
    ``stage="transfer"``: each transfer run (``model`` = ``run_id``) on its target
    domain, or on every domain with ``target_only=False``.
    Columns: ``model, seed, freezing, pretrain_domain, target_domain, eval_domain`` and
    the metrics. ``freezing`` keeps only runs with those modes.
    """
    if stage not in ("pretrain", "transfer"):
        raise ValueError(f"unknown stage {stage!r}; choose pretrain or transfer")
    chosen = runs if freezing is None else runs[runs["freezing"].isin(list(freezing))]
    keys = ["run_id", "profile", "pretrain_id", "seed", "freezing", "pretrain_domain", "target_domain"]
    ev = evaluations[evaluations["stage"] == stage].merge(chosen[keys], on=["run_id", "profile"])
    if stage == "pretrain":
        ev = ev.drop_duplicates(["profile", "pretrain_id", "eval_domain"]).assign(
            model=lambda f: f["pretrain_id"], freezing="", target_domain="")
    else:
        ev = ev.assign(model=ev["run_id"])
        if target_only:
            ev = ev[ev["eval_domain"] == ev["target_domain"]]
    columns = ["model", "seed", "freezing", "pretrain_domain", "target_domain", "eval_domain", *METRICS]
    labels = {c: object for c in columns[:6] if c != "seed"}  # numpy objects: faster to re-sample than arrow strings
    return ev[columns].astype(labels).reset_index(drop=True)


def cell_means(cells: pd.DataFrame, value: str, row: str = "pretrain_domain", col: str = "eval_domain",
               order: list[str] | None = None) -> pd.DataFrame:
    """The matrix of mean ``value`` per (row, column) cell; ``order`` fixes both axes.

    Computed with numpy (``bincount`` over factorised labels): the bootstrap calls it
    thousands of times.
    """
    r, r_labels = pd.factorize(cells[row].to_numpy(), sort=True)
    c, c_labels = pd.factorize(cells[col].to_numpy(), sort=True)
    v = cells[value].to_numpy(float)
    ok = ~np.isnan(v)
    size = len(r_labels) * len(c_labels)
    key = r[ok] * len(c_labels) + c[ok]
    sums = np.bincount(key, v[ok], minlength=size)
    counts = np.bincount(key, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / counts, np.nan).reshape(len(r_labels), len(c_labels))
    matrix = pd.DataFrame(means, index=pd.Index(r_labels, name=row), columns=pd.Index(c_labels, name=col))
    if order is not None:
        matrix = matrix.reindex(index=order, columns=order)
    return matrix


# --------------------------------------------------------------------------- variance shares


def _rss(y: np.ndarray, design: np.ndarray) -> float:
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    return float(resid @ resid)


def _dummies(codes: np.ndarray) -> np.ndarray:
    levels = np.unique(codes)
    return (codes[:, None] == levels[None, :]).astype(float)


def variance_shares(cells: pd.DataFrame, value: str, row: str = "pretrain_domain", col: str = "eval_domain",
                    exclude_diagonal: bool = False) -> dict[str, float]:
    """Shares of the variance of the cell means explained by rows, columns and neither.

    The cells are first averaged (one mean per row x column); with
    ``exclude_diagonal`` cells whose row equals their column are dropped. An additive
    model ``mean = mu + a_row + b_col`` is fitted by least squares; the row share is
    the drop in residual sum of squares when row effects are added to a
    columns-only model (type II), relative to the total sum of squares, and likewise
    for columns. ``residual`` is what the additive model leaves; ``shared`` is the rest
    (0 for a complete matrix; with missing cells part of the spread can be credited to
    rows or columns alike). Returns ``row``, ``col``, ``residual``, ``shared`` (NaN when
    the cells do not vary, or when fewer than two rows or columns are present) and
    ``cells`` (how many cells were used).
    """
    matrix = cell_means(cells, value, row, col)
    values = matrix.to_numpy()
    ri, ci = np.nonzero(~np.isnan(values))
    if exclude_diagonal:
        keep = matrix.index.to_numpy()[ri] != matrix.columns.to_numpy()[ci]
        ri, ci = ri[keep], ci[keep]
    y = values[ri, ci]
    out = {"cells": float(len(y))}
    total = float(((y - y.mean()) ** 2).sum()) if len(y) else 0.0
    if len(y) < 2 or total <= 1e-15 * max(1.0, float(y @ y)):
        return out | {"row": np.nan, "col": np.nan, "residual": np.nan, "shared": np.nan}
    if len(np.unique(ri)) < 2 or len(np.unique(ci)) < 2:  # one row or one column: nothing to split
        return out | {"row": np.nan, "col": np.nan, "residual": np.nan, "shared": np.nan}
    ones = np.ones((len(y), 1))
    rows, cols = _dummies(ri), _dummies(ci)
    full = _rss(y, np.hstack([ones, rows, cols]))
    rows_only = _rss(y, np.hstack([ones, rows]))
    cols_only = _rss(y, np.hstack([ones, cols]))
    row_share, col_share = (cols_only - full) / total, (rows_only - full) / total
    return out | {"row": row_share, "col": col_share, "residual": full / total,
                  "shared": 1 - row_share - col_share - full / total}


# --------------------------------------------------------------------------- uncertainty


def bootstrap(cells: pd.DataFrame, statistic: Callable[[pd.DataFrame], float | dict], *,
              groups: Iterable[str] = ("pretrain_domain",), unit: str = "model", n: int = 500,
              seed: int = 0) -> pd.DataFrame:
    """Re-sample models with replacement inside each group and recompute ``statistic``.

    Every row of a drawn model comes along (a pretrained model keeps its whole row of
    evaluations). ``statistic`` returns a number or a dict of numbers; the result has
    one row per replicate.
    """
    rng = np.random.default_rng(seed)
    cells = cells.reset_index(drop=True)
    groups = list(groups)
    members = []
    parts = cells.groupby(groups, sort=True) if groups else [(None, cells)]
    for _, frame in parts:
        units = frame.groupby(unit, sort=True).indices
        members.append([frame.index.to_numpy()[idx] for idx in units.values()])
    values = []
    for _ in range(n):
        picks = []
        for units in members:
            for k in rng.integers(0, len(units), size=len(units)):
                picks.append(units[k])
        sample = cells.take(np.concatenate(picks)) if picks else cells.iloc[:0]
        stat = statistic(sample)
        values.append(stat if isinstance(stat, dict) else {"value": stat})
    return pd.DataFrame(values)


def jackknife(cells: pd.DataFrame, statistic: Callable[[pd.DataFrame], float | dict], block: str) -> pd.DataFrame:
    """``statistic`` recomputed with the rows of one value of ``block`` left out, for each
    value in turn; one row per value left out (index: that value)."""
    rows = {}
    labels = cells[block].to_numpy()
    for value in sorted(set(labels)):
        stat = statistic(cells[labels != value])
        rows[value] = stat if isinstance(stat, dict) else {"value": stat}
    return pd.DataFrame.from_dict(rows, orient="index")


def jackknife_interval(estimate: float, values, level: float = THRESHOLDS["level"]) -> tuple[float, float]:
    """Interval ``estimate`` ± t * jackknife standard error of the leave-one-out ``values``,
    with Student's t for one fewer degrees of freedom than values (NaN ignored; needs two)."""
    from scipy.stats import t

    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    if len(values) < 2 or np.isnan(estimate):
        return (np.nan, np.nan)
    k = len(values)
    se = float(np.sqrt((k - 1) / k * np.sum((values - values.mean()) ** 2)))
    q = float(t.ppf(0.5 + level / 2, k - 1))
    return estimate - q * se, estimate + q * se


def interval(values, level: float = THRESHOLDS["level"]) -> tuple[float, float]:
    """Central ``level`` percentile interval of ``values`` (NaN ignored)."""
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    if not len(values):
        return (np.nan, np.nan)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def per_seed(cells: pd.DataFrame, statistic: Callable[[pd.DataFrame], float | dict]) -> pd.DataFrame:
    """``statistic`` computed on each seed's models alone; one row per seed."""
    rows = {}
    for seed, frame in cells.groupby("seed", sort=True):
        stat = statistic(frame)
        rows[seed] = stat if isinstance(stat, dict) else {"value": stat}
    return pd.DataFrame.from_dict(rows, orient="index")


def summarise(cells: pd.DataFrame, statistic: Callable[[pd.DataFrame], float | dict], *,
              groups: Iterable[str] = ("pretrain_domain",), n: int = 500, seed: int = 0,
              leave_out: str | None = None) -> pd.DataFrame:
    """Estimate, interval and per-seed range of each output of ``statistic``.

    The interval (width ``THRESHOLDS['level']``) comes from :func:`bootstrap` over models
    in ``groups``, or, with ``leave_out`` (a column, such as the pretraining lattice), from
    :func:`jackknife` over that column's values. Returns one row per output with
    ``estimate``, ``lo``, ``hi``, ``seed_min``, ``seed_max``, ``seeds``, ``units`` (the
    fewest models in any re-sampling group, with 1 the interval says nothing; or the
    number of values left out in turn) and ``method``.
    """
    groups = list(groups)
    est = statistic(cells)
    est = est if isinstance(est, dict) else {"value": est}
    if leave_out is not None:
        units, method = int(cells[leave_out].nunique()), "jackknife"
        jack = jackknife(cells, statistic, leave_out)
        spans = {key: jackknife_interval(float(value), jack[key]) if key in jack else (np.nan, np.nan)
                 for key, value in est.items()}
    else:
        units = (int(cells.groupby(groups)["model"].nunique().min()) if groups and len(cells)
                 else cells["model"].nunique())
        method = "bootstrap"
        boot = bootstrap(cells, statistic, groups=groups, n=n, seed=seed)
        spans = {key: interval(boot[key]) if key in boot else (np.nan, np.nan) for key in est}
    seeds = per_seed(cells, statistic)
    rows = {}
    for key, value in est.items():
        lo, hi = spans[key]
        col = seeds[key] if key in seeds else pd.Series(dtype=float)
        rows[key] = {"estimate": float(value), "lo": lo, "hi": hi, "seed_min": float(col.min()) if len(col) else np.nan,
                     "seed_max": float(col.max()) if len(col) else np.nan, "seeds": int(col.notna().sum()),
                     "units": units, "method": method}
    return pd.DataFrame.from_dict(rows, orient="index")


# --------------------------------------------------------------------------- verdicts


def verdict(lo: float, hi: float, threshold: float, above: bool = True) -> str:
    """``holds`` if the interval [lo, hi] lies beyond ``threshold`` on the claimed side,
    ``does not hold`` if it lies wholly on the other side, ``partly`` if it straddles it.
    ``above`` says whether the claim is that the statistic exceeds the threshold."""
    if np.isnan(lo) or np.isnan(hi):
        return UNTESTED
    if not above:
        lo, hi, threshold = -hi, -lo, -threshold
    if lo > threshold:
        return HOLDS
    if hi < threshold:
        return FAILS
    return PARTLY


def combine(*verdicts: str) -> str:
    """One verdict for a claim made of parts: the common verdict, else ``partly``.

    Untested parts are ignored unless every part is untested.
    """
    tested = [v for v in verdicts if v != UNTESTED]
    if not tested:
        return UNTESTED
    return tested[0] if all(v == tested[0] for v in tested) else PARTLY


# --------------------------------------------------------------------------- claim statistics


def worst_row_share(cells: pd.DataFrame, value: str, row_label: str, metric: str,
                    row: str = "pretrain_domain", col: str = "eval_domain") -> float:
    """Share of columns in which the models of ``row_label`` have the worst mean ``value``
    (NaN with fewer than two rows: there is nothing to be worse than)."""
    matrix = goodness(cell_means(cells, value, row, col), metric)
    matrix = matrix.dropna(axis=1, how="all")
    if row_label not in matrix.index or matrix.empty or len(matrix.index) < 2:
        return np.nan
    worst = matrix.idxmin(axis=0)
    return float((worst == row_label).mean())


def _group_means(cells: pd.DataFrame, value: str, by: str) -> pd.Series:
    codes, labels = pd.factorize(cells[by].to_numpy(), sort=True)
    v = cells[value].to_numpy(float)
    ok = ~np.isnan(v)
    counts = np.bincount(codes[ok], minlength=len(labels))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.bincount(codes[ok], v[ok], minlength=len(labels)) / counts
    return pd.Series(means, index=labels).dropna()


def _rank_correlation(values: pd.Series, numeric: dict[str, float]) -> float:
    """Spearman correlation of ``values`` with the numbers of their labels (NaN with fewer
    than three labels or without spread)."""
    keep = [k for k in values.index if k in numeric]
    if len(keep) < 3:
        return np.nan
    x = pd.Series([numeric[k] for k in keep]).rank().to_numpy()
    y = values[keep].rank().to_numpy()
    if x.std() == 0 or y.std() == 0:
        return np.nan
    return float(np.corrcoef(x, y)[0, 1])


def trend(cells: pd.DataFrame, value: str, metric: str, numeric: dict[str, float], by: str = "eval_domain") -> float:
    """Spearman correlation of the mean goodness per ``by`` domain with its number (e.g. dose)."""
    return _rank_correlation(goodness(_group_means(cells, value, by), metric), numeric)


def spread_trend(cells: pd.DataFrame, value: str, numeric: dict[str, float], by: str = "size",
                 within: str = "target_domain") -> float:
    """Spearman correlation of the spread of ``value`` per ``by`` group with its number
    (negative: the spread shrinks as the number grows). The spread of a group is the
    standard deviation over its models inside each ``within`` group, averaged."""
    return _rank_correlation(cells.groupby([by, within])[value].std().groupby(level=0).mean().dropna(), numeric)


def class_contrast(cells: pd.DataFrame, value: str, metric: str, classes: dict[str, object],
                   row: str = "pretrain_domain", col: str = "eval_domain") -> float:
    """Mean goodness of off-diagonal cells whose two domains share a class, minus that of
    cells whose domains differ in class (positive: a model does better within its class)."""
    matrix = goodness(cell_means(cells, value, row, col), metric)
    rows = [d for d in matrix.index if d in classes]
    cols = [d for d in matrix.columns if d in classes]
    values = matrix.loc[rows, cols].to_numpy()
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


def lighter_advantage(cells: pd.DataFrame, value: str, metric: str, pairs: list[tuple[str, str]],
                      row: str = "pretrain_domain", col: str = "eval_domain") -> dict[str, float]:
    """For each (lighter, heavier) pair: mean goodness of the model pretrained on the
    lighter domain minus that of the model pretrained on the heavier one, both over the
    evaluated domains other than the pair itself. Returns ``mean`` (over pairs) and
    ``share`` (fraction of pairs where the lighter one does better)."""
    matrix = goodness(cell_means(cells, value, row, col), metric)
    diffs = []
    for light, heavy in pairs:
        if light not in matrix.index or heavy not in matrix.index:
            continue
        others = [c for c in matrix.columns if c not in (light, heavy)]
        d = matrix.loc[light, others].mean() - matrix.loc[heavy, others].mean()
        if not np.isnan(d):
            diffs.append(d)
    if not diffs:
        return {"mean": np.nan, "share": np.nan}
    return {"mean": float(np.mean(diffs)), "share": float(np.mean(np.asarray(diffs) > 0))}


def split_domain(domain: str) -> tuple[str, str]:
    """``'Fe3O4_small'`` -> ``('Fe3O4', 'small')``."""
    lattice, _, size = domain.rpartition("_")
    return lattice, size


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
    * ``lattice``: cost of another lattice of the same size (after pretraining);
    * ``ratio`` = before / lattice: the size gap relative to the lattice gap.
    """
    m_pre = goodness(cell_means(pre, value), metric)
    m_post = goodness(cell_means(post, value), metric)
    g_pre = {(r, c): v for r, row in zip(m_pre.index, m_pre.to_numpy()) for c, v in zip(m_pre.columns, row)}
    g_post = {(r, c): v for r, row in zip(m_post.index, m_post.to_numpy()) for c, v in zip(m_post.columns, row)}
    nan = float("nan")
    before, after, small_on_large, lattice_cost = [], [], [], []
    for target in m_pre.columns:
        if target not in m_pre.index:
            continue
        lattice, size = split_domain(target)
        own = g_pre[(target, target)]
        for source in m_pre.index:
            s_lat, s_size = split_domain(source)
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
            if (s_size, size) == ("small", "large"):
                small_on_large.append(cost)
    mb = float(np.mean(before)) if before else nan
    ma = float(np.mean(after)) if after else nan
    ml = float(np.mean(lattice_cost)) if lattice_cost else nan
    return {"before": mb, "after": ma, "left": ma / mb if mb > 0 else nan,
            "small_on_large": float(np.mean(small_on_large)) if small_on_large else nan,
            "lattice": ml, "ratio": mb / ml if ml > 0 else nan}


def paired_freezing(runs: pd.DataFrame, evaluations: pd.DataFrame, metric: str,
                    reference: str = "none") -> pd.DataFrame:
    """Each transfer run beside its twin with ``reference`` freezing.

    Twins share series, pretraining and target domain and seed. Returns one row per
    run with a freezing mode other than ``reference``: ``freezing``, ``diff`` (goodness
    minus the twin's; positive = better than the reference), ``rel`` (relative change
    of the raw metric), ``time_ratio`` (transfer wall time over the twin's) and
    ``pair`` (the twin key).
    """
    post = model_cells(runs, evaluations, "transfer")
    post = post.merge(runs[["run_id", "wall_transfer_s"]], left_on="model", right_on="run_id")
    post["pair"] = post["pretrain_domain"] + ">" + post["target_domain"] + "|s" + post["seed"].astype(str)
    ref = post[post["freezing"] == reference].set_index("pair")
    other = post[post["freezing"] != reference]
    other = other[other["pair"].isin(ref.index)]
    base = ref.loc[other["pair"]]
    return pd.DataFrame({
        "freezing": other["freezing"].to_numpy(),
        "pair": other["pair"].to_numpy(),
        "seed": other["seed"].to_numpy(),
        "pretrain_domain": other["pretrain_domain"].to_numpy(),
        "diff": goodness(other[metric].to_numpy() - base[metric].to_numpy(), metric),
        "rel": other[metric].to_numpy() / base[metric].to_numpy() - 1,
        "time_ratio": other["wall_transfer_s"].to_numpy() / base["wall_transfer_s"].to_numpy(),
    })


def freezing_table(runs: pd.DataFrame, evaluations: pd.DataFrame, metrics: Iterable[str] = ("loss", "dice")) -> pd.DataFrame:
    """Per freezing mode: runs, trainable parameters, median transfer wall time and the
    median of each metric on the target after transfer learning."""
    post = model_cells(runs, evaluations, "transfer").merge(
        runs[["run_id", "params_trainable", "params_total", "wall_transfer_s"]], left_on="model", right_on="run_id")
    table = post.groupby("freezing").agg(
        runs=("model", "size"), params_trainable=("params_trainable", "median"),
        params_total=("params_total", "median"), wall_transfer_s=("wall_transfer_s", "median"),
        **{metric: (metric, "median") for metric in metrics})
    table["trainable_share"] = table["params_trainable"] / table["params_total"]
    return table


def ood_changes(runs: pd.DataFrame, evaluations: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Change of each transfer run on domains it was not transferred to.

    One row per run and evaluated domain other than its target: ``change`` = goodness
    after transfer learning minus goodness of the same pretrained model before it
    (negative = transfer learning made it worse there), ``kind`` = ``source`` for the
    pretraining domain itself, else ``other``.
    """
    after = model_cells(runs, evaluations, "transfer", target_only=False)
    before = model_cells(runs, evaluations, "pretrain")
    before = before.assign(pretrain_id=before["model"])[["pretrain_id", "eval_domain", metric]]
    after = after.merge(runs[["run_id", "pretrain_id"]], left_on="model", right_on="run_id")
    after = after[after["eval_domain"] != after["target_domain"]]
    merged = after.merge(before, on=["pretrain_id", "eval_domain"], suffixes=("", "_before"))
    change = goodness(merged[metric] - merged[f"{metric}_before"], metric)
    rel = merged[metric] / merged[f"{metric}_before"] - 1
    kind = np.where(merged["eval_domain"] == merged["pretrain_domain"], "source", "other")
    return pd.DataFrame({"model": merged["model"], "seed": merged["seed"], "freezing": merged["freezing"],
                         "pretrain_domain": merged["pretrain_domain"], "target_domain": merged["target_domain"],
                         "eval_domain": merged["eval_domain"], "kind": kind, "change": change, "rel": rel})


def worse_share(changes: pd.DataFrame, metric: str) -> float:
    """Share of rows of :func:`ood_changes` that got worse by more than the tolerance of
    ``metric`` (``equal_dice`` in absolute terms for overlap measures, ``equal_loss``
    relative for the loss)."""
    if changes.empty:
        return np.nan
    if metric == "loss":
        worse = changes["rel"] > THRESHOLDS["equal_loss"]
    else:
        worse = changes["change"] < -THRESHOLDS["equal_dice"]
    return float(worse.mean())


def tolerance(metric: str) -> float:
    """The "about as good" tolerance: relative for the loss, absolute otherwise."""
    return THRESHOLDS["equal_loss"] if metric == "loss" else THRESHOLDS["equal_dice"]


def equivalence(lo: float, hi: float, tol: float) -> str:
    """``holds`` if [lo, hi] lies inside [-tol, tol], ``does not hold`` if it lies wholly
    outside it, ``partly`` otherwise."""
    if np.isnan(lo) or np.isnan(hi):
        return UNTESTED
    if -tol <= lo and hi <= tol:
        return HOLDS
    if hi < -tol or lo > tol:
        return FAILS
    return PARTLY


# --------------------------------------------------------------------------- the six claims

#: The claims of the original study under test, in our words.
CLAIMS = {
    1: "After pretraining alone, how well a model does depends strongly on the dose of its "
       "pretraining images, and models pretrained at low dose are worse on every dose.",
    2: "After transfer learning, performance on the target dose barely depends on the pretraining "
       "dose and tracks the signal-to-noise ratio of the target.",
    3: "After pretraining alone, models do comparably well on lattices of the same symmetry class; "
       "inside a class, models of lighter elements are sometimes slightly better.",
    4: "After transfer learning, performance on a new lattice is set mostly by the target lattice.",
    5: "Particle size matters little: after pretraining, models trained on small particles are "
       "slightly worse on large ones, and transfer learning removes most of that gap.",
    6: "More transfer data lowers the loss and its spread; freezing the decoder is about as good as "
       "fine-tuning everything; freezing the encoder is slightly worse but faster; transfer learning "
       "can degrade out-of-distribution performance.",
}

DOSE = {f"dose{d}": float(d) for d in (30, 75, 150, 300, 600)}


def space_groups(domains: Iterable[str]) -> dict[str, int]:
    """Space-group number of each structure domain's lattice."""
    from .lattices import LATTICES

    return {d: LATTICES[split_domain(d)[0]].spacegroup for d in domains if split_domain(d)[0] in LATTICES}


def mean_atomic_number(domains: Iterable[str]) -> dict[str, float]:
    """Mean atomic number of each structure domain's formula unit (a lightness measure)."""
    from ase.formula import Formula
    from ase.data import atomic_numbers

    out = {}
    for d in domains:
        counts = Formula(split_domain(d)[0]).count()
        out[d] = sum(atomic_numbers[el] * n for el, n in counts.items()) / sum(counts.values())
    return out


def _row(claim, part, series, metric, text, threshold, stats, key, above=True, kind="threshold"):
    s = stats.loc[key]
    if kind == "equivalence":
        v = equivalence(s["lo"], s["hi"], threshold)
        shown = f"within ±{threshold:g}"
    else:
        v = verdict(s["lo"], s["hi"], threshold, above)
        shown = f"{'>' if above else '<'} {threshold:g}"
    return {"claim": claim, "part": part, "series": series, "metric": metric, "test": text,
            "estimate": s["estimate"], "lo": s["lo"], "hi": s["hi"], "seed_min": s["seed_min"],
            "seed_max": s["seed_max"], "seeds": s["seeds"], "units": s["units"], "method": s["method"],
            "threshold": shown, "verdict": v}


def _untested(claim, part, series, text, why):
    return {"claim": claim, "part": part, "series": series, "metric": "", "test": text, "estimate": np.nan,
            "lo": np.nan, "hi": np.nan, "seed_min": np.nan, "seed_max": np.nan, "seeds": 0, "units": 0, "method": "",
            "threshold": why, "verdict": UNTESTED}


def assess_noise(runs: pd.DataFrame, evaluations: pd.DataFrame, metrics=("loss", "dice"), n: int = 500) -> list[dict]:
    """Rows of claims 1 and 2 from the noise series (one profile)."""
    T = THRESHOLDS
    rows = []
    pre = model_cells(runs, evaluations, "pretrain")
    post = model_cells(runs, evaluations, "transfer")
    doses = sorted({d for d in pre["pretrain_domain"] if d in DOSE}, key=DOSE.get)
    for m in metrics:
        st = summarise(pre, lambda f: {"share": variance_shares(f, m)["row"],
                                       "worst": worst_row_share(f, m, doses[0], m) if doses else np.nan},
                       groups=("pretrain_domain",), n=n)
        rows.append(_row(1, "a", "noise", m, "share of the after-pretraining matrix explained by the pretraining dose",
                         T["strong_share"], st, "share"))
        rows.append(_row(1, "b", "noise", m, "share of evaluated doses on which the lowest-dose models are the worst",
                         T["worst_columns"], st, "worst"))

        def after(f, m=m):
            shares = variance_shares(f, m, exclude_diagonal=True)
            return {"pre": shares["row"], "target": shares["col"], "trend": trend(f, m, m, DOSE)}

        st = summarise(post, after, groups=("pretrain_domain", "eval_domain"), n=n)
        rows.append(_row(2, "a", "noise", m, "share of the after-TL matrix explained by the pretraining dose",
                         T["weak_share"], st, "pre", above=False))
        rows.append(_row(2, "b", "noise", m, "share of the after-TL matrix explained by the target dose",
                         T["most_share"], st, "target"))
        rows.append(_row(2, "c", "noise", m, "rank correlation of after-TL performance with the target dose",
                         T["monotonic"], st, "trend"))
    return rows


def _small(frame: pd.DataFrame) -> pd.DataFrame:
    keep = frame["pretrain_domain"].str.endswith("_small") & frame["eval_domain"].str.endswith("_small")
    return frame[keep]


def assess_structure(runs: pd.DataFrame, evaluations: pd.DataFrame, metrics=("loss", "dice")) -> list[dict]:
    """Rows of claims 3, 4 and 5 from the structure series (one profile; jackknife intervals)."""
    T = THRESHOLDS
    rows = []
    # Intervals leave out one pretraining lattice (with both its sizes) at a time.
    pre, post = (model_cells(runs, evaluations, stage).assign(lattice=lambda f: [
        split_domain(d)[0] for d in f["pretrain_domain"]]) for stage in ("pretrain", "transfer"))
    small_pre, small_post = _small(pre), _small(post)
    # A running study fills the matrices one pretrained model at a time: speak about
    # lattices only once enough of them have rows.
    sources = {split_domain(d) for d in pre["pretrain_domain"].unique()}
    small = sorted(lat for lat, size in sources if size == "small")
    paired = sorted(lat for lat in small if (lat, "large") in sources)  # both sizes pretrained
    need = T["min_lattices"]
    if len(small) < need:  # then also len(paired) < need: nothing to say yet
        why = (f"small-particle models of {len(small)} lattice(s) so far ({', '.join(small) or 'none'}); "
               f"needs at least {need}")
        return [_untested(c, "", "structure", text, why) for c, text in (
            (3, "structure classes after pretraining"), (4, "target versus pretraining lattice after TL"),
            (5, "effect of particle size"))]
    transferred = sorted({split_domain(d)[0] for d in small_post["pretrain_domain"].unique()})
    targets_tested, sizes_tested = len(transferred) >= need, len(paired) >= need
    if not targets_tested:
        rows.append(_untested(4, "", "structure", "target versus pretraining lattice after TL",
                              f"transfers between small-particle lattices from {len(transferred)} pretraining "
                              f"lattice(s) so far ({', '.join(transferred) or 'none'}); needs at least {need}"))
    if not sizes_tested:
        rows.append(_untested(5, "", "structure", "effect of particle size",
                              f"models of both particle sizes for {len(paired)} lattice(s) so far "
                              f"({', '.join(paired)}); needs at least {need}"))
    domains = sorted(set(small_pre["pretrain_domain"]))
    classes = space_groups(domains)
    pairs = lighter_pairs(classes, mean_atomic_number(domains))
    both = pd.concat([pre.assign(stage="pretrain"), post.assign(stage="transfer")], ignore_index=True)
    for m in metrics:
        st = summarise(small_pre, lambda f: {"class": class_contrast(f, m, m, classes),
                                             "light": lighter_advantage(f, m, m, pairs)["mean"]},
                       leave_out="lattice")
        rows.append(_row(3, "a", "structure", m, "same-class minus other-class performance after pretraining "
                         "(small particles)", 0.0, st, "class"))
        rows.append(_row(3, "b", "structure", m, "lighter- minus heavier-element models within a class, "
                         "on the other lattices", 0.0, st, "light"))
        if targets_tested:
            def after(f, m=m):
                shares = variance_shares(f, m, exclude_diagonal=True)
                return {"target": shares["col"], "margin": shares["col"] - shares["row"]}

            st = summarise(small_post, after, leave_out="lattice")
            rows.append(_row(4, "a", "structure", m, "share of the after-TL matrix explained by the target lattice",
                             T["most_share"], st, "target"))
            rows.append(_row(4, "b", "structure", m, "target-lattice share minus pretraining-lattice share after TL",
                             0.0, st, "margin"))
        if not sizes_tested:
            continue

        def gaps(f, m=m):
            return size_gaps(f[f["stage"] == "pretrain"], f[f["stage"] == "transfer"], m, m)

        st = summarise(both, gaps, leave_out="lattice")
        rows.append(_row(5, "a", "structure", m, "cost of small-particle pretraining on large particles",
                         0.0, st, "small_on_large"))
        rows.append(_row(5, "b", "structure", m, "fraction of the size gap left after TL", T["removed"], st, "left",
                         above=False))
        rows.append(_row(5, "c", "structure", m, "size gap relative to the gap between lattices", T["little"], st,
                         "ratio", above=False))
    return sorted(rows, key=lambda r: r["claim"])


def assess_training(series: str, runs: pd.DataFrame, evaluations: pd.DataFrame, metrics=("loss", "dice"),
                    n: int = 500) -> list[dict]:
    """Rows of claim 6 about freezing and out-of-distribution change from one series (one profile)."""
    rows = []
    modes = set(runs["freezing"])
    for m in metrics:
        pairs = paired_freezing(runs, evaluations, m).assign(model=lambda f: f["pair"])
        key = "rel" if m == "loss" else "diff"
        for mode, part, text in (("decoder", "b", "decoder frozen vs full fine-tuning"),
                                 ("encoder", "c", "encoder frozen vs full fine-tuning")):
            sub = pairs[pairs["freezing"] == mode]
            if sub.empty or "none" not in modes:
                rows.append(_untested(6, part, series, text, "no paired runs"))
                continue
            what = "relative change of the loss" if m == "loss" else "change of Dice"
            if mode == "decoder":
                st = summarise(sub, lambda f, k=key: float(f[k].mean()), groups=(), n=n)
                rows.append(_row(6, part, series, m, f"{text}: {what}", tolerance(m), st, "value",
                                 kind="equivalence"))
            else:
                st = summarise(sub, lambda f: float(f["diff"].mean()), groups=(), n=n)
                rows.append(_row(6, part, series, m, f"{text}: change of goodness (negative = worse)", 0.0, st,
                                 "value", above=False))
        changes = ood_changes(runs, evaluations, m)
        if changes.empty:
            rows.append(_untested(6, "e", series, "out-of-distribution change", "no other domains"))
        else:
            st = summarise(changes, lambda f, m=m: worse_share(f, m), groups=(), n=n)
            rows.append(_row(6, "e", series, m, "share of (model, other domain) pairs made worse by TL",
                             THRESHOLDS["ood_share"], st, "value"))
    pairs = paired_freezing(runs, evaluations, "loss").assign(model=lambda f: f["pair"])
    sub = pairs[pairs["freezing"] == "encoder"]
    if sub.empty:
        rows.append(_untested(6, "d", series, "speed-up of encoder freezing", "no paired runs"))
    else:
        st = summarise(sub, lambda f: 1 - float(f["time_ratio"].median()), groups=(), n=n)
        rows.append(_row(6, "d", series, "time", "transfer wall-time saved by freezing the encoder (share)", 0.0, st,
                         "value"))
    return rows


def size_cells(runs: pd.DataFrame, evaluations: pd.DataFrame) -> pd.DataFrame:
    """:func:`model_cells` after transfer learning (full fine-tuning runs, on their target)
    with each run's ``transfer_images``."""
    return model_cells(runs, evaluations, "transfer", freezing=("none",)).merge(
        runs[["run_id", "transfer_images"]], left_on="model", right_on="run_id")


def assess_transfer_size(runs: pd.DataFrame, evaluations: pd.DataFrame, metrics=("loss", "dice"), n: int = 500,
                         series: str = "tlsize") -> list[dict]:
    """Rows of claim 6 about the transfer-set size (parts a and f), from a series that varies
    it (full fine-tuning runs only); models are resampled within each size."""
    post = size_cells(runs, evaluations)
    if post["transfer_images"].nunique() < 3:
        return [_untested(6, "a", series, "effect of the transfer-set size",
                          f"{post['transfer_images'].nunique()} transfer-set size(s) so far; needs at least 3")]
    sizes = {str(k): float(k) for k in post["transfer_images"].unique()}
    post = post.assign(size=post["transfer_images"].astype(str))
    rows = []
    for m in metrics:
        st = summarise(post, lambda f, m=m: {"level": trend(f, m, m, sizes, by="size"),
                                             "spread": spread_trend(f, m, sizes)}, groups=("size",), n=n)
        rows.append(_row(6, "a", series, m, "rank correlation of after-TL performance with the transfer-set size",
                         THRESHOLDS["monotonic"], st, "level"))
        rows.append(_row(6, "f", series, m, "rank correlation of the spread between models with the transfer-set "
                         "size", -THRESHOLDS["monotonic"], st, "spread", above=False))
    return rows


def assess_claims(noise: tuple[pd.DataFrame, pd.DataFrame] | None,
                  structure: tuple[pd.DataFrame, pd.DataFrame] | None,
                  metrics=("loss", "dice"), n: int = 500,
                  tlsize: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Every tested part of the six claims, one row per part, series and metric.

    ``noise``, ``structure`` and ``tlsize`` are (runs, evaluations) of one profile each,
    or ``None`` when that series has no results (its claims are then ``not yet
    tested``); the transfer-set size part of claim 6 comes from ``tlsize``. Columns:
    ``claim, part, series, metric, test, estimate, lo, hi, seed_min, seed_max, seeds,
    units, method, threshold, verdict`` (``method``: bootstrap over models or jackknife
    over pretraining lattices, see :func:`summarise`).
    """
    rows = []
    if noise is None or noise[0].empty:
        rows += [_untested(c, "", "noise", "needs results of the noise series", "no noise results yet") for c in (1, 2)]
    else:
        rows += assess_noise(*noise, metrics=metrics, n=n)
    if structure is None or structure[0].empty:
        rows += [_untested(c, "", "structure", "needs results of the structure series", "no structure results yet")
                 for c in (3, 4, 5)]
    else:
        rows += assess_structure(*structure, metrics=metrics)
    if tlsize is None or tlsize[0].empty:
        rows.append(_untested(6, "a", "tlsize", "effect of the transfer-set size", "no tlsize results yet"))
    else:
        rows += assess_transfer_size(*tlsize, metrics=metrics, n=n)
    for name, data in (("noise", noise), ("structure", structure)):
        if data is not None and not data[0].empty:
            rows += assess_training(name, *data, metrics=metrics, n=n)
    return pd.DataFrame(rows)


def claim_verdicts(table: pd.DataFrame) -> pd.Series:
    """One verdict per claim (1..6) from the rows of :func:`assess_claims`."""
    return pd.Series({c: combine(*table.loc[table["claim"] == c, "verdict"]) if (table["claim"] == c).any()
                      else UNTESTED for c in CLAIMS})
