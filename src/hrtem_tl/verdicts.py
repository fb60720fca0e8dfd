"""Verdicts on the claims of the original study: their vocabulary, thresholds, rows and sentences.

A claim part (one row of :func:`hrtem_tl.analysis.assess_claims`, columns
:data:`COLUMNS`) is an estimate with an interval, compared with a threshold fixed in
advance (:data:`THRESHOLDS`). Its verdict (:func:`verdict`, :func:`equivalence`):
``holds`` (the interval lies on the claimed side of the threshold), ``refuted`` (wholly
on the other side), ``inconclusive`` (it spans the threshold; ``detectable`` gives the
smallest distance from the threshold these data resolve). A claim's parts combine to
their common verdict, or to ``mixed`` when they differ (:func:`claim_summary` lists
them); :func:`sentence` says a part in words from its numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .stats import LEVEL, format_estimate

HOLDS, REFUTED, MIXED, INCONCLUSIVE, UNTESTED = "holds", "refuted", "mixed", "inconclusive", "not yet tested"
VERDICTS = (HOLDS, MIXED, INCONCLUSIVE, REFUTED, UNTESTED)

#: Thresholds of the verdicts, in one place so the pages can print them.
THRESHOLDS = {
    "strong_share": 0.25,  # a factor explaining at least this share of the cell variance "matters strongly"
    "weak_share": 0.10,  # a factor explaining at most this share "hardly matters"
    "most_share": 0.50,  # a factor explaining at least this share explains "most" of it
    "removed": 0.50,  # transfer learning "removes most" of a gap: at most this fraction of it is left
    "little": 0.50,  # a size gap at most this fraction of the gap between lattices "matters little"
    "equal_dice": 0.01,  # two Dice values closer than this are "about as good"
    "equal_loss": 0.05,  # two losses whose relative difference is below this are "about as good"
    "level": LEVEL,  # width of every interval
    "min_lattices": 3,  # structure claims need pretrained models of at least this many lattices
}



# --------------------------------------------------------------------------- verdicts


def verdict(lo: float, hi: float, threshold: float, above: bool = True) -> str:
    """``holds`` if [lo, hi] lies beyond ``threshold`` on the claimed side (``above``:
    the claim is that the statistic exceeds it), ``refuted`` if it lies wholly on the
    other side, ``inconclusive`` if it spans the threshold."""
    if np.isnan(lo) or np.isnan(hi):
        return UNTESTED
    if not above:
        lo, hi, threshold = -hi, -lo, -threshold
    if lo > threshold:
        return HOLDS
    if hi < threshold:
        return REFUTED
    return INCONCLUSIVE


def equivalence(lo: float, hi: float, tol: float) -> str:
    """``holds`` if [lo, hi] lies inside [-tol, tol], ``refuted`` if it lies wholly
    outside it, ``inconclusive`` otherwise."""
    if np.isnan(lo) or np.isnan(hi):
        return UNTESTED
    if -tol <= lo and hi <= tol:
        return HOLDS
    if hi < -tol or lo > tol:
        return REFUTED
    return INCONCLUSIVE


def combine(*verdicts: str) -> str:
    """One verdict for a claim made of parts: their common verdict, else ``mixed``.
    Untested parts are ignored unless every part is untested."""
    tested = [v for v in verdicts if v != UNTESTED]
    if not tested:
        return UNTESTED
    return tested[0] if all(v == tested[0] for v in tested) else MIXED


# --------------------------------------------------------------------------- tolerances


def tolerance(metric: str) -> float:
    """The "about as good" tolerance: relative for the loss, absolute otherwise."""
    return THRESHOLDS["equal_loss"] if metric == "loss" else THRESHOLDS["equal_dice"]


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

COLUMNS = ["claim", "part", "series", "metric", "test", "estimate", "lo", "hi", "df", "detectable", "seed_min",
           "seed_max", "seeds", "units", "method", "threshold", "side", "threshold_text", "verdict", "primary", "note"]


def per_seed(cells: pd.DataFrame, fn, key: str) -> list[float]:
    """The statistic ``fn(...)[key]`` on each seed's rows alone (the seed-to-seed noise floor)."""
    out = []
    for _, frame in cells.groupby("seed", sort=True):
        value = fn(frame)
        out.append(float(value[key] if isinstance(value, dict) else value))
    return out


def claim_row(claim, part, series, metric, test, stat: dict, threshold: float, *, side: str = "above",
         seeds: list[float] | None = None, units: int = 0, method: str = "", primary: bool = True,
         note: str = "") -> dict:
    """One claim part: estimate, interval, verdict against ``threshold`` on ``side``
    (``above``, ``below`` or ``within`` ±threshold)."""
    lo, hi = stat["lo"], stat["hi"]
    if side == "within":
        v, text = equivalence(lo, hi, threshold), f"within ±{threshold:g}"
    else:
        v, text = verdict(lo, hi, threshold, above=side == "above"), f"{'>' if side == 'above' else '<'} {threshold:g}"
    seeds = [s for s in (seeds or []) if not np.isnan(s)]
    return {"claim": claim, "part": part, "series": series, "metric": metric, "test": test,
            "estimate": stat["estimate"], "lo": lo, "hi": hi, "df": stat.get("df", 0),
            "detectable": stat.get("half", (hi - lo) / 2) if not np.isnan(lo) else np.nan,
            "seed_min": min(seeds) if seeds else np.nan, "seed_max": max(seeds) if seeds else np.nan,
            "seeds": len(seeds), "units": units, "method": method, "threshold": threshold, "side": side,
            "threshold_text": text, "verdict": v, "primary": primary, "note": note}


def untested(claim, part, series, test, why):
    nan = {"estimate": np.nan, "lo": np.nan, "hi": np.nan}
    return claim_row(claim, part, series, "", test, nan, np.nan, note=why) | {"verdict": UNTESTED, "threshold_text": why}


def claim_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per claim (1..6): ``verdict`` (:func:`combine` of its primary parts) and ``parts``
    (each part's verdict with the metrics per series, for example
    ``1a holds (noise: dice, loss); 1b refuted (noise: dice)``)."""
    out = {}
    for c in CLAIMS:
        rows = table[(table["claim"] == c) & table["primary"].astype(bool)]
        tested = rows[rows["verdict"] != UNTESTED]
        parts = []
        for (part, v), frame in tested.groupby(["part", "verdict"], sort=True):
            where = "; ".join(f"{series}: {', '.join(sorted(set(rows_of['metric'])))}"
                              for series, rows_of in frame.groupby("series", sort=True))
            parts.append(f"{c}{part} {v} ({where})")
        out[c] = {"verdict": combine(*rows["verdict"]) if len(rows) else UNTESTED, "parts": "; ".join(parts)}
    return pd.DataFrame.from_dict(out, orient="index")


def claim_verdicts(table: pd.DataFrame) -> pd.Series:
    """One verdict per claim (1..6) from the rows of :func:`assess_claims`."""
    return claim_summary(table)["verdict"]


# --------------------------------------------------------------------------- sentences


def direction(row) -> str:
    """Where a part's interval lies relative to its threshold, in words."""
    if np.isnan(row["lo"]):
        return "has no interval yet"
    if row["side"] == "within":
        tol = row["threshold"]
        if -tol <= row["lo"] and row["hi"] <= tol:
            return f"lies within ±{tol:g}"
        if row["hi"] < -tol or row["lo"] > tol:
            return f"lies outside ±{tol:g}"
        return f"cannot be told apart from the ±{tol:g} band"
    if row["lo"] > row["threshold"]:
        return f"is above {row['threshold']:g}"
    if row["hi"] < row["threshold"]:
        return f"is below {row['threshold']:g}"
    return f"cannot be told apart from {row['threshold']:g}"


def sentence(row) -> str:
    """One sentence for a claim part, generated from its estimate, interval and threshold."""
    if row["verdict"] == UNTESTED:
        return f"{row['test'].capitalize()}: not yet tested ({row['note'] or row['threshold_text']})."
    text = (f"{row['test'].capitalize()} ({row['metric']}): {format_estimate(row['estimate'], row['lo'], row['hi'])}, "
            f"which {direction(row)}; the claim needs {row['threshold_text']}, so this part "
            f"{ {HOLDS: 'holds', REFUTED: 'is refuted', INCONCLUSIVE: 'is inconclusive'}[row['verdict']]}")
    if row["verdict"] == INCONCLUSIVE:
        text += f" (these data resolve effects beyond ±{row['detectable']:.2g} of the threshold)"
    return text + "."
