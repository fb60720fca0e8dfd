"""Generic statistics of the claim analysis: cell means, variance shares, intervals.

Nothing here knows about doses, lattices or claims (that is :mod:`hrtem_tl.analysis`).
Tables are long: one row per model (or unit) and cell, with label columns and values.

Intervals and their units
-------------------------
* :func:`stratified_jackknife`: independent *units* (a pretrained model, or a
  (pair, seed) with every freezing run of it) inside *strata* (the design cells: a
  pretraining domain, a transfer pair). Delete-one-unit jackknife, variance
  ``sum_h (n_h - 1) / n_h * sum_i (theta_(hi) - theta_(h.))^2``, Student t with
  ``units - strata`` degrees of freedom. For a mean of stratum means this is the
  textbook unbiased variance even with two units per stratum, where a bootstrap
  inside strata would halve it.
* :func:`group_jackknife`: leave out one whole group (for example a pretraining
  lattice with all its models) at a time; t with ``groups - 1`` degrees of freedom.
  It asks whether a finding generalises over the groups.
* :func:`paired`: mean of per-unit paired differences with a t interval over units, a
  sign count and an exact two-sided sign test.

Outputs named in ``shares`` (a share of variance, bounded by 0 and 1) keep the interval
of the raw scale with its ends cut at 0 and 1; ``half`` then gives the half-width of the
uncut interval. (A logit scale would stretch the spread that comes from the design
alone: a share of an after-TL matrix without its diagonal cannot reach 1, and its
ceiling moves as lattices are left out.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats as _scipy

LEVEL = 0.95  # width of every interval


def cell_means(cells: pd.DataFrame, value: str, row: str = "pretrain_domain", col: str = "eval_domain",
               order: list[str] | None = None) -> pd.DataFrame:
    """The matrix of mean ``value`` per (row, column) cell; ``order`` fixes both axes.

    Computed with numpy (``bincount`` over factorised labels): the jackknives call it
    many times.
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


def _rss(y: np.ndarray, design: np.ndarray) -> float:
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    return float(resid @ resid)


def _dummies(codes: np.ndarray) -> np.ndarray:
    levels = np.unique(codes)
    return (codes[:, None] == levels[None, :]).astype(float)


def _cells_of(matrix: pd.DataFrame, exclude_diagonal: bool):
    values = matrix.to_numpy()
    ri, ci = np.nonzero(~np.isnan(values))
    if exclude_diagonal:
        keep = matrix.index.to_numpy()[ri] != matrix.columns.to_numpy()[ci]
        ri, ci = ri[keep], ci[keep]
    return ri, ci, values[ri, ci]


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
    ri, ci, y = _cells_of(cell_means(cells, value, row, col), exclude_diagonal)
    out = {"cells": float(len(y))}
    nan = {"row": np.nan, "col": np.nan, "residual": np.nan, "shared": np.nan}
    total = float(((y - y.mean()) ** 2).sum()) if len(y) else 0.0
    if len(y) < 2 or total <= 1e-15 * max(1.0, float(y @ y)):
        return out | nan
    if len(np.unique(ri)) < 2 or len(np.unique(ci)) < 2:  # one row or one column: nothing to split
        return out | nan
    ones = np.ones((len(y), 1))
    rows, cols = _dummies(ri), _dummies(ci)
    full = _rss(y, np.hstack([ones, rows, cols]))
    rows_only = _rss(y, np.hstack([ones, rows]))
    cols_only = _rss(y, np.hstack([ones, cols]))
    row_share, col_share = (cols_only - full) / total, (rows_only - full) / total
    return out | {"row": row_share, "col": col_share, "residual": full / total,
                  "shared": 1 - row_share - col_share - full / total}


def additive_residuals(matrix: pd.DataFrame, exclude_diagonal: bool = True) -> pd.DataFrame:
    """``matrix`` minus its least-squares row and column main effects (``mu + a_r + b_c``).

    Cells that are NaN, and with ``exclude_diagonal`` the cells whose row equals their
    column, take no part in the fit and stay NaN. What is left is the interaction: how
    much better or worse a cell is than its row and column alone predict.
    """
    ri, ci, y = _cells_of(matrix, exclude_diagonal)
    out = np.full(matrix.shape, np.nan)
    if len(y) < 2:
        return pd.DataFrame(out, index=matrix.index, columns=matrix.columns)
    design = np.hstack([np.ones((len(y), 1)), _dummies(ri), _dummies(ci)])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    out[ri, ci] = y - design @ coef
    return pd.DataFrame(out, index=matrix.index, columns=matrix.columns)


def _as_dict(value) -> dict[str, float]:
    return value if isinstance(value, dict) else {"value": value}


def _cut_shares(result: dict[str, dict], shares: tuple[str, ...]) -> dict[str, dict]:
    """Interval ends of the outputs named in ``shares`` cut to [0, 1], with ``half``, the
    half-width of the uncut interval (what the data resolve)."""
    for k in shares:
        lo, hi = result[k]["lo"], result[k]["hi"]
        result[k] = result[k] | {"lo": float(np.clip(lo, 0, 1)), "hi": float(np.clip(hi, 0, 1)), "half": (hi - lo) / 2}
    return result


def _t_interval(estimate: float, variance: float, df: int, level: float) -> tuple[float, float]:
    if df < 1 or not np.isfinite(variance) or np.isnan(estimate):
        return (np.nan, np.nan)
    half = float(_scipy.t.ppf(0.5 + level / 2, df)) * math.sqrt(max(variance, 0.0))
    return estimate - half, estimate + half


def stratified_jackknife(cells: pd.DataFrame, statistic: Callable[[pd.DataFrame], float | dict], *,
                         unit: str, strata: list[str], level: float = LEVEL,
                         shares: tuple[str, ...] = ()) -> dict[str, dict]:
    """Estimate and t interval of each output of ``statistic`` by the delete-one-unit
    stratified jackknife (see the module docstring).

    ``unit`` names the column that identifies an independent unit; ``strata`` the
    columns of the design cell it belongs to. Strata with one unit add nothing to the
    variance and no degree of freedom. Returns ``{key: {estimate, lo, hi, df, variance}}``.
    """
    est = _as_dict(statistic(cells))
    labels = cells[unit].to_numpy()
    stratum_of = cells.groupby(unit, sort=False)[strata].first()
    key = stratum_of.astype(str).agg("|".join, axis=1) if strata else pd.Series("", index=stratum_of.index)
    variance = {k: 0.0 for k in est}
    df = 0
    for _, members in key.groupby(key):
        units = members.index.to_numpy()
        if len(units) < 2:
            continue
        df += len(units) - 1
        values = {k: [] for k in est}
        for u in units:
            stat = _as_dict(statistic(cells[labels != u]))
            for k in est:
                values[k].append(float(stat.get(k, np.nan)))
        for k, v in values.items():
            v = np.asarray(v)
            variance[k] += (len(v) - 1) / len(v) * float(np.sum((v - v.mean()) ** 2))
    out = {}
    for k, value in est.items():
        lo, hi = _t_interval(float(value), variance[k], df, level)
        out[k] = {"estimate": float(value), "lo": lo, "hi": hi, "df": df, "variance": variance[k]}
    return _cut_shares(out, shares)


def crossed_jackknife(cells: pd.DataFrame, statistic: Callable[[pd.DataFrame], float | dict], *,
                      first: tuple[str, list[str]], second: tuple[str, list[str]], both: tuple[str, list[str]],
                      level: float = LEVEL, shares: tuple[str, ...] = ()) -> dict[str, dict]:
    """For two crossed sources of shared noise (transfers share their pretrained model,
    and every transfer into one target shares its data and seed): the two-way variance
    V_first + V_second - V_both of :func:`stratified_jackknife` variances, each way a
    ``(unit, strata)``; ``both`` is the unit where the two meet (one transfer pair and
    seed). Where that sum is not positive, the larger of the two; Student's t with
    Satterthwaite's degrees of freedom for the sum (at most the smaller of the two ways')."""
    runs = {name: stratified_jackknife(cells, statistic, unit=unit, strata=strata, level=level)
            for name, (unit, strata) in (("first", first), ("second", second), ("both", both))}
    out = {}
    for k, a in runs["first"].items():
        b, ab = runs["second"][k], runs["both"][k]
        parts = [(a["variance"], a["df"]), (b["variance"], b["df"]), (ab["variance"], ab["df"])]
        variance = a["variance"] + b["variance"] - ab["variance"]
        if not variance > 0:
            variance = max(a["variance"], b["variance"])
        # Satterthwaite's degrees of freedom of a sum of variance estimates
        spread = sum(v ** 2 / d for v, d in parts if d > 0)
        df = min(a["df"], b["df"])
        if spread > 0 and df >= 1:
            df = max(1, int(min(df, variance ** 2 / spread)))
        lo, hi = _t_interval(a["estimate"], variance, df, level)
        out[k] = {"estimate": a["estimate"], "lo": lo, "hi": hi, "df": df, "variance": variance}
    return _cut_shares(out, shares)


def group_jackknife(cells: pd.DataFrame, statistic: Callable[[pd.DataFrame], float | dict], *, group: str,
                    level: float = LEVEL, shares: tuple[str, ...] = ()) -> dict[str, dict]:
    """Estimate and t interval (``groups - 1`` degrees of freedom) of each output of
    ``statistic``, leaving out one value of ``group`` with all its rows at a time.
    Leave-one-out values that are NaN are dropped (with fewer than two left: no interval)."""
    est = _as_dict(statistic(cells))
    labels = cells[group].to_numpy()
    values = {k: [] for k in est}
    for g in sorted(set(labels)):
        stat = _as_dict(statistic(cells[labels != g]))
        for k in est:
            values[k].append(float(stat.get(k, np.nan)))
    out = {}
    for k, value in est.items():
        v = np.asarray(values[k])
        v = v[~np.isnan(v)]
        n = len(v)
        variance = (n - 1) / n * float(np.sum((v - v.mean()) ** 2)) if n >= 2 else np.nan
        lo, hi = _t_interval(float(value), variance, n - 1, level)
        out[k] = {"estimate": float(value), "lo": lo, "hi": hi, "df": max(n - 1, 0)}
    return _cut_shares(out, shares)


def paired(differences, level: float = LEVEL) -> dict[str, float]:
    """Summary of paired differences, one per independent unit (NaN ignored).

    Returns ``estimate`` (mean), ``lo``, ``hi`` (t interval over units), ``df``, ``n``,
    ``positive`` (units with a difference above 0), ``negative`` and ``sign_p`` (exact
    two-sided sign test; zeros left out).
    """
    d = np.asarray(differences, float)
    d = d[~np.isnan(d)]
    n = len(d)
    out = {"estimate": float(d.mean()) if n else np.nan, "n": n, "df": max(n - 1, 0),
           "positive": int((d > 0).sum()), "negative": int((d < 0).sum())}
    variance = float(d.var(ddof=1)) / n if n >= 2 else np.nan
    out["lo"], out["hi"] = _t_interval(out["estimate"], variance, n - 1, level)
    signs = out["positive"] + out["negative"]
    out["sign_p"] = float(_scipy.binomtest(out["positive"], signs).pvalue) if signs else np.nan
    return out


def decimals_for(lo: float, hi: float) -> int:
    """Decimals an estimate with interval [lo, hi] deserves: two significant digits of
    the interval's half-width (at least 0, at most 6)."""
    half = (hi - lo) / 2
    if not np.isfinite(half) or half <= 0:
        return 3
    return int(min(6, max(0, 1 - math.floor(math.log10(half)))))


def format_estimate(estimate: float, lo: float, hi: float) -> str:
    """``'0.046 [0.021, 0.071]'``: rounded to the precision the interval supports
    (``'0.05 (no interval)'`` when there is none)."""
    if np.isnan(estimate):
        return "n/a"
    if np.isnan(lo) or np.isnan(hi):
        return f"{estimate:.3g} (no interval)"
    d = decimals_for(lo, hi)
    return f"{estimate:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]"
