"""Measures of the defocus series and the mixture baseline, with intervals.

The transfer measures average a value per run over pretraining groups: the runs that
share a pretraining defocus and a seed (in our series they all start from one pretrained
model, so their transfers to different targets are not independent; the original
pretrained a model per run, so there a group is a bundle of independent runs). Targets
are crossed with them (every transfer into one target shares its test images, and in our
series its transfer data and seed), so :func:`crossed` gives a two-way jackknife
interval: pretraining groups within their defocus, crossed with target groups (target
defocus and seed) within theirs.
The mixture comparison keeps the domain pair as its unit (each mixture is its own model). Losses are compared as log ratios (a loss has a ratio
scale; the original's and ours differ by definition but a ratio within one source is
meaningful); ``percent`` turns a mean log ratio into a percentage change.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import stats as S
from .defocus_views import baseline_rows, long_table, ood_spread

CONFIG = ["pretrain_domain", "target_domain", "transfer_images", "lr", "seed"]
UNIT = ["pretrain_domain", "seed"]  # a pretraining group


def crossed(values: pd.Series) -> dict:
    """Mean over transfer pairs of ``values`` (indexed by at least ``pretrain_domain``,
    ``target_domain`` and ``seed``; seeds and other levels averaged within a pair) with a
    two-way interval (:func:`stats.crossed_jackknife`: pretraining groups within their
    defocus, crossed with target groups within theirs); counts are of pretraining groups."""
    frame = values.rename("v").reset_index()
    seed = "|s" + frame["seed"].astype(str)
    frame = frame.assign(pair=frame["pretrain_domain"] + ">" + frame["target_domain"],
                         group=frame["pretrain_domain"] + seed, target=frame["target_domain"] + seed)
    frame = frame.assign(cell=frame["pair"] + seed)
    mean = lambda f: float(f.groupby("pair")["v"].mean().mean())  # noqa: E731
    st = S.crossed_jackknife(frame, mean, first=("group", ["pretrain_domain"]), second=("target", ["target_domain"]),
                             both=("cell", ["pretrain_domain", "target_domain"]))["value"]
    counts = S.paired(frame.groupby("group")["v"].mean())
    return {**counts, "estimate": st["estimate"], "lo": st["lo"], "hi": st["hi"], "df": st["df"]}


def percent(log_ratio: float) -> float:
    """A mean log ratio as a percentage change (``exp(x) - 1``, in %)."""
    return float(np.expm1(log_ratio) * 100)


def as_percent(summary: dict) -> dict:
    """:func:`stats.paired` output with ``estimate``, ``lo`` and ``hi`` in % change."""
    return {**summary, **{k: percent(summary[k]) for k in ("estimate", "lo", "hi")}}


def on_target(tables: dict[str, pd.DataFrame], metric: str = "loss") -> pd.DataFrame:
    """One row per transfer run: its settings and ``metric`` on its target after TL."""
    frame = long_table(tables)
    frame = frame[(frame["stage"] == "transfer") & (frame["eval_domain"] == frame["target_domain"])]
    return frame.assign(pair=frame["pretrain_domain"] + ">" + frame["target_domain"])


def size_effect(target: pd.DataFrame, metric: str = "loss") -> dict[str, dict]:
    """Largest against smallest transfer set: per pair and seed, ``level`` the log ratio
    of the median metric and ``spread`` that of its interquartile range over the runs
    (learning rates x freezing options), then :func:`crossed` (in %)."""
    small, large = target["transfer_images"].min(), target["transfer_images"].max()

    def per_pair(stat) -> pd.Series:
        g = target.groupby(["pretrain_domain", "target_domain", "seed", "transfer_images"])[metric].agg(stat)
        g = g.unstack()
        return np.log(g[large] / g[small])

    iqr = lambda v: v.quantile(0.75) - v.quantile(0.25)  # noqa: E731
    return {"level": as_percent(crossed(per_pair("median"))), "spread": as_percent(crossed(per_pair(iqr))),
            "small": int(small), "large": int(large)}


def freezing_effect(target: pd.DataFrame, mode: str, metric: str = "loss") -> dict:
    """Log ratio of ``metric`` with ``mode`` frozen to full fine-tuning, matched on pair,
    set size, learning rates and seed; :func:`crossed` (in %)."""
    wide = target.pivot_table(index=CONFIG, columns="freezing", values=metric, aggfunc="first")
    return as_percent(crossed(np.log(wide[mode] / wide["none"])))


def seed_spread(target: pd.DataFrame, metric: str = "loss") -> float:
    """Median over configurations of the coefficient of variation across seeds (in %)."""
    g = target.groupby(["pair", "transfer_images", "lr", "freezing"])[metric]
    cv = g.std() / g.mean()
    return float(cv.median() * 100)


def lr_table(target: pd.DataFrame, metric: str = "loss") -> pd.DataFrame:
    """Median and quartiles of ``metric`` per learning-rate pair, and how often each
    pair is the best of a configuration (pair, set size, freezing, seed)."""
    summary = target.groupby("lr")[metric].describe()[["count", "25%", "50%", "75%"]]
    best = target.loc[target.groupby(["pair", "transfer_images", "freezing", "seed"])[metric].idxmin(), "lr"]
    return summary.assign(best_share=best.value_counts(normalize=True).reindex(summary.index).fillna(0.0))


def in_focus_penalty(tables: dict[str, pd.DataFrame], metric: str = "loss") -> dict:
    """After pretraining: log ratio of ``metric`` at 0 nm to its median over the other
    evaluated defocus domains except the model's own; models pretrained at 0 nm are left
    out. The unit is the pretrained model (in %); ``by_domain``: the same per pretraining
    defocus, as the mean log ratio in %."""
    frame = long_table(tables)
    pre = frame[(frame["stage"] == "pretrain") & (frame["pretrain_domain"] != "df0")]
    pre = pre.drop_duplicates(["pretrain_id", "eval_domain"])
    others = pre[(pre["eval_domain"] != pre["pretrain_domain"]) & (pre["eval_domain"] != "df0")]
    focus = pre[pre["eval_domain"] == "df0"].set_index("pretrain_id")
    ratio = np.log(focus[metric] / others.groupby("pretrain_id")[metric].median().reindex(focus.index))
    by_domain = ratio.groupby(focus["pretrain_domain"]).mean().map(percent)
    return {**as_percent(S.paired(ratio)), "by_domain": by_domain}


def mixture_against_transfer(base: dict, tl: dict, images: int, role: str, metric: str = "loss") -> dict:
    """Log ratio of ``metric`` of transfer learning to the single-stage mixture, both with
    ``images`` target-domain images, on the ``role`` domain ("target" or "source");
    median per approach within a pair (every rate, seed and freezing option), then a
    mean over the pairs both approaches have (in %; below 0: transfer learning is better)."""
    (frame,) = baseline_rows(base, tl).values()
    frame = frame[frame["images"] == images].assign(pair=lambda f: f["major"] + ">" + f["minor"])
    med = frame.groupby(["pair", "approach"])[f"{role}_{metric}"].median().unstack()
    if not {"mixture", "transfer learning"} <= set(med.columns):
        return {"estimate": np.nan, "lo": np.nan, "hi": np.nan, "n": 0, "df": 0, "positive": 0, "negative": 0,
                "sign_p": np.nan}
    return as_percent(S.paired(np.log(med["transfer learning"] / med["mixture"])))


def shared_pairs(base: dict, tl: dict, images: int) -> list[str]:
    """The domain pairs for which both the mixtures and the transfers used ``images``
    target-domain images."""
    (frame,) = baseline_rows(base, tl).values()
    frame = frame[frame["images"] == images]
    per_approach = [set(part["pair"]) for _, part in frame.groupby("approach")]
    return sorted(set.intersection(*per_approach)) if len(per_approach) == 2 else []


def shared_sizes(base: dict, tl: dict) -> list[int]:
    """Numbers of target-domain images that both the mixtures and the transfers used."""
    (frame,) = baseline_rows(base, tl).values()
    per_approach = [set(part["images"]) for _, part in frame.groupby("approach")]
    return sorted(int(n) for n in set.intersection(*per_approach)) if len(per_approach) == 2 else []


def mixture_and_transfer(base: dict, tl: dict, images: int, metric: str = "loss") -> pd.DataFrame:
    """For few domain pairs, where no interval over pairs exists: ``metric`` on the target
    and on the source domain per approach and seed (the independent unit), each a mean
    over the pairs both approaches share, with ``images`` target-domain images; transfer
    learning with nothing frozen, the setting a mixture is compared with. Index
    (approach, seed); columns ``target``, ``source`` and ``pairs``."""
    (frame,) = baseline_rows(base, tl).values()
    pairs = shared_pairs(base, tl, images)
    frame = frame[(frame["images"] == images) & frame["pair"].isin(pairs) & (frame["freezing"] == "none")]
    out = frame.groupby(["approach", "seed"])[[f"target_{metric}", f"source_{metric}"]].mean()
    out.columns = ["target", "source"]
    return out.assign(pairs=len(pairs))


def ood_change(tables: dict[str, pd.DataFrame], metric: str = "loss") -> pd.DataFrame:
    """Per freezing option: share of runs whose spread over the non-target defocus
    domains grew, and the mean per-pair log ratio after/before with its interval (%)."""
    spread = ood_spread(long_table(tables), metric)
    rows = {}
    for mode, part in [("all", spread), *spread.groupby("freezing")]:
        ratio = np.log(part["after"] / part["before"])
        ratio.index = pd.MultiIndex.from_frame(part[["pretrain_domain", "target_domain", "seed"]])
        rows[mode] = {"grew": float((part["shift"] > 0).mean()), "runs": len(part), **as_percent(crossed(ratio))}
    return pd.DataFrame(rows).T


def ood_level(tables: dict[str, pd.DataFrame], metric: str = "loss") -> dict:
    """The level beside the spread: per transfer run, the log ratio of the median
    ``metric`` over every evaluated domain except the target, after/before transfer
    learning; :func:`crossed` (in %)."""
    frame = long_table(tables)
    other = frame[frame["eval_domain"] != frame["target_domain"]]
    level = other.groupby(["run_id", "stage"])[metric].median().unstack("stage")
    runs = frame.drop_duplicates("run_id").set_index("run_id")[["pretrain_domain", "target_domain", "seed"]]
    ratio = np.log(level["transfer"] / level["pretrain"])
    return as_percent(crossed(ratio.set_axis(pd.MultiIndex.from_frame(runs.loc[ratio.index]))))


def ood_freezing_difference(tables: dict[str, pd.DataFrame], mode: str, metric: str = "loss") -> dict:
    """The log ratio after/before of the out-of-distribution spread with ``mode`` frozen
    minus that with nothing frozen, matched on pair, set size, learning rates and seed;
    :func:`crossed` (in % of the ratio)."""
    spread = ood_spread(long_table(tables), metric)
    spread = spread.assign(change=np.log(spread["after"] / spread["before"]))
    wide = spread.pivot_table(index=CONFIG, columns="freezing", values="change", aggfunc="first")
    return as_percent(crossed(wide[mode] - wide["none"]))


def ood_by_pretraining(tables: dict[str, pd.DataFrame], metric: str = "loss") -> pd.DataFrame:
    """Per pretraining defocus: the log ratio of the out-of-distribution spread
    after/before transfer learning, averaged within each pretraining group (seed), then
    over the defocus' groups (in %, t interval over seeds: wide with few seeds)."""
    spread = ood_spread(long_table(tables), metric)
    per_group = np.log(spread["after"] / spread["before"]).groupby([spread[u] for u in UNIT]).mean()
    rows = {d: as_percent(S.paired(part)) for d, part in per_group.groupby(level="pretrain_domain")}
    return pd.DataFrame(rows).T
