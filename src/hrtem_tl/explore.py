"""Plotly confusion-matrix explorers built from the results store.

Two forms share one figure builder:

* :func:`explorer_html` returns a self-contained HTML fragment for static pages: every
  combination of freezing subset x metric x reduction (x profile) is precomputed
  with :func:`hrtem_tl.results.matrices` and embedded as JSON; a small script redraws
  the figure with ``window.Plotly`` when a control changes, with no kernel.
* :func:`matrix_figure` returns a ``plotly.graph_objects.Figure`` for one choice,
  used live by the Voila app.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .metrics import HIGHER_IS_BETTER, METRICS
from .results import REDUCTIONS, ResultsError, as_array, matrices, read_results, transfers
from .series import DEFOCI, DOSES, FREEZING
from .lattices import LATTICES

METRIC_TITLES = {
    "loss": "cross-entropy loss (logits; floor 0)", "dice": "Dice / F1", "iou": "IoU",
    "precision": "precision", "recall": "recall", "accuracy": "pixel accuracy",
}
SCRIPT = Path(__file__).with_name("explorer.js")
TOOLS = Path(__file__).with_name("figure_tools.js")  # stacked panels on phones, CSV downloads
STYLE = """<style>
.hrtem-explorer{font:14px/1.4 system-ui,sans-serif;margin:0.5em 0}
.hrtem-controls{display:flex;flex-wrap:wrap;gap:0.6em 1.4em;align-items:center;margin-bottom:0.4em}
.hrtem-control{display:inline-flex;gap:0.4em;align-items:center;border:0;padding:0;margin:0}
.hrtem-control legend{float:left;margin-right:0.5em;padding:0}
.hrtem-control select{font:inherit;padding:0.1em 0.3em}
.hrtem-note{font-size:12px;opacity:0.8;margin:0.2em 0}
.hrtem-csv{font-size:12px}
</style>"""


def formula_html(formula: str) -> str:
    """Chemical formula with subscript digits for Plotly labels (Fe3O4 -> Fe<sub>3</sub>O<sub>4</sub>)."""
    return re.sub(r"(\d+)", r"<sub>\1</sub>", formula)


def axis_labels(series: str, domains: list[str]) -> list[str]:
    if series == "noise":
        return [d.removeprefix("dose") for d in domains]
    if series == "structure":
        return [formula_html(d.split("_")[0]) for d in domains]
    return [d.removeprefix("df") for d in domains]


def series_domains(series: str, size: str = "small") -> list[str]:
    """Domain order of the explorers' axes."""
    if series == "noise":
        return [f"dose{d}" for d in DOSES]
    if series == "structure":
        return [f"{f}_{size}" for f in LATTICES]
    if series == "defocus":
        return [f"df{d}" for d in DEFOCI]
    raise ValueError(f"no domain order for series {series!r}")


AXIS_TITLES = {
    "noise": ("pretraining dose (e⁻/Å²)", "target dose (e⁻/Å²)"),
    "structure": ("pretraining lattice (small particles)", "target lattice (small particles)"),
}


def _cells(stats: dict[str, pd.DataFrame]) -> dict:
    return {k: as_array(stats[k]) for k in ("value", "count", "q25", "q75")}


def matrix_figure(runs: pd.DataFrame, evaluations: pd.DataFrame, series: str, *, freezing=FREEZING,
                  metric: str = "loss", reduction: str = "median", profile: str | None = None) -> go.Figure:
    """Two heatmaps, after pretraining and after transfer learning, one colour scale."""
    if profile is not None:
        runs, evaluations = runs[runs["profile"] == profile], evaluations[evaluations["profile"] == profile]
    domains = series_domains(series)
    mats = matrices(runs, evaluations, freezing=set(freezing), metric=metric, reduction=reduction, domains=domains)
    return _figure(series, {k: _cells(v) for k, v in mats.items()}, metric, reduction,
                   profile or ",".join(sorted(runs["profile"].unique())))


def _figure(series: str, cells: dict, metric: str, reduction: str, profile: str) -> go.Figure:
    domains = series_domains(series)
    labels = axis_labels(series, domains)
    ytitle, xtitle = AXIS_TITLES[series]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("after pretraining", "after transfer learning"))
    for col, stage in enumerate(("pretrain", "transfer"), start=1):
        c = cells[stage]
        custom = [[list(cell) for cell in zip(*rows)] for rows in zip(c["count"], c["q25"], c["q75"])]
        # what a cell holds: the diagonal of the transfer matrix has no transfer in it
        what = [["evaluated on" if stage == "pretrain" else "no transfer: the pretrained model itself on" if r == k
                 else "transferred to and evaluated on" for k in range(len(labels))] for r in range(len(labels))]
        fig.add_trace(go.Heatmap(
            z=c["value"], x=labels, y=labels, coloraxis="coloraxis", customdata=custom, text=what, xgap=1, ygap=1,
            hovertemplate=("pretrained on %{y}<br>%{text} %{x}"
                           f"<br>{reduction} %{{z:.4f}}<br>models %{{customdata[0]}}"
                           "<br>IQR %{customdata[1]:.4f} – %{customdata[2]:.4f}<extra></extra>"),
            name=stage,
        ), row=1, col=col)
        fig.update_xaxes(title_text=xtitle, row=1, col=col, tickangle=-90 if series == "structure" else 0,
                         constrain="domain", type="category")
        fig.update_yaxes(title_text=ytitle if col == 1 else None, row=1, col=col, autorange="reversed", type="category",
                         scaleanchor=f"x{'' if col == 1 else col}", constrain="domain")
    fig.update_layout(
        coloraxis={"colorscale": "Viridis", "reversescale": not HIGHER_IS_BETTER[metric], "colorbar": {"title": {"text": f"{reduction}<br>{metric}"}}},
        title={"text": f"{METRIC_TITLES[metric]} — data profile: {profile}", "font": {"size": 14}},
        margin={"l": 70, "r": 20, "t": 70, "b": 80}, height=450, template="plotly_white",
    )
    return fig


def freezing_subsets() -> list[tuple[str, ...]]:
    """Every non-empty subset of the freezing modes, in a fixed order."""
    return [c for r in range(1, len(FREEZING) + 1) for c in itertools.combinations(FREEZING, r)]


def _short(v: float | None) -> float | None:
    """Five significant digits; ``None`` for a missing or NaN value (valid JSON)."""
    return None if v is None or np.isnan(v) else float(f"{v:.5g}")


def _round(cells: dict) -> dict:
    return {k: [[_short(v) for v in row] for row in m] for k, m in cells.items()}


def explorer_payload(results: dict[str, pd.DataFrame], series: str) -> dict:
    """Every precomputed matrix pair for the static explorer, keyed by choice.

    One entry per data source (profile) x freezing subset x metric x reduction; a
    metric that a source lacks (the original released only losses) has no entry and
    its option is disabled for that source. With the original and one of ours, the
    payload also holds the rank agreement of their loss matrices.
    """
    runs, evals = results["runs"], results["evaluations"]
    domains = series_domains(series)
    profiles = sorted(runs["profile"].unique(), key=lambda p: (p == "original", p))  # ours first
    table, spread, metrics = {}, {}, {}
    for profile in profiles:
        r, e = runs[runs["profile"] == profile], evals[evals["profile"] == profile]
        metrics[profile] = [m for m in METRICS if np.isfinite(e[m].to_numpy(dtype=float)).any()]
        for subset in freezing_subsets():
            for metric in metrics[profile]:
                for reduction in REDUCTIONS:
                    mats = matrices(r, e, freezing=set(subset), metric=metric, reduction=reduction, domains=domains)
                    key = "|".join([profile, "+".join(subset), metric, reduction])
                    table[key] = {k: _round({"value": as_array(v["value"])})["value"] for k, v in mats.items()}
                # counts and quartiles do not depend on the reduction: stored once
                spread["|".join([profile, "+".join(subset), metric])] = {
                    k: _round({q: as_array(v[q]) for q in ("count", "q25", "q75")}) for k, v in mats.items()}
    payload = {"series": series, "profiles": profiles, "freezing": list(FREEZING), "metrics": list(METRICS),
               "reductions": list(REDUCTIONS), "higher_is_better": HIGHER_IS_BETTER, "titles": METRIC_TITLES,
               "matrices": table, "spread": spread, "metrics_by_profile": metrics,
               "sources": {p: source_title(runs[runs["profile"] == p]) for p in profiles},
               "scale": {p: profile_scale(runs[runs["profile"] == p]) for p in profiles}}
    if series == "structure":
        payload["sizes"] = size_boxes(per_model_sizes(runs, evals), metrics)
    ours = [p for p in profiles if p != "original"]
    if ours and "original" in profiles:
        payload["agreement"] = agreement(table, ours[0], "original", domains, series)
    return payload


def source_title(runs: pd.DataFrame) -> str:
    """``original study (NVIDIA A100 (NERSC); 180 models)`` or ``ours, cpu profile (...)``."""
    first = runs.iloc[0]
    if first["profile"] == "original":
        return f"original study ({first['device']}; {len(transfers(runs))} transfer models)"
    return f"ours, {first['profile']} profile ({first['device']} {first['precision']}; {len(transfers(runs))} transfer models)"


def rank_agreement(ours: np.ndarray, theirs: np.ndarray, skip_diagonal: bool) -> dict:
    """Spearman rank correlation of two matrices over the cells both have.

    Returns the cells' ranks (1 = lowest value), their labels (row, column index) and
    ``rho``; the diagonal is left out when ``skip_diagonal`` (no transfer there)."""
    a, b = np.asarray(ours, float), np.asarray(theirs, float)
    keep = np.isfinite(a) & np.isfinite(b)
    if skip_diagonal:
        keep &= ~np.eye(len(a), dtype=bool)
    rows, cols = np.nonzero(keep)
    ra, rb = pd.Series(a[keep]).rank().to_numpy(), pd.Series(b[keep]).rank().to_numpy()
    rho = float(np.corrcoef(ra, rb)[0, 1]) if keep.sum() > 2 else float("nan")
    return {"ours": ra.tolist(), "original": rb.tolist(), "cells": list(zip(rows.tolist(), cols.tolist())),
            "rho": None if np.isnan(rho) else rho, "n": int(keep.sum())}


def agreement(table: dict, ours: str, original: str, domains: list[str], series: str) -> dict:
    """Per freezing subset and reduction: rank agreement of the loss matrices, both stages."""
    out = {}
    for subset in freezing_subsets():
        for reduction in REDUCTIONS:
            tail = f"{'+'.join(subset)}|loss|{reduction}"
            a, b = table.get(f"{ours}|{tail}"), table.get(f"{original}|{tail}")
            if a is None or b is None:
                continue
            out[f"{'+'.join(subset)}|{reduction}"] = {
                stage: rank_agreement(_as_float(a[stage]), _as_float(b[stage]), stage == "transfer")
                for stage in ("pretrain", "transfer")}
    return {"ours": ours, "original": original, "labels": axis_labels(series, domains), "values": out}


def _as_float(rows) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in rows], float)


def size_boxes(rows: list[dict], metrics: dict[str, list[str]]) -> dict:
    """Box statistics of :func:`per_model_sizes` rows per source, freezing subset, metric,
    stage and trained size (x = evaluated size): quartiles, mean, Tukey whiskers, count."""
    frame = pd.DataFrame(rows)
    out = {}
    if frame.empty:
        return out
    for (profile, stage, group), part in frame.groupby(["profile", "stage", "group"]):
        modes = part["freezing"].str.split("+")
        for subset in freezing_subsets():
            chosen = part[modes.map(lambda fs: bool(set(fs) & set(subset)))]
            for metric in metrics.get(profile, []):
                boxes = {}
                for size in ("small", "large"):
                    v = chosen.loc[chosen["eval_size"] == size, metric].to_numpy(float)
                    v = np.sort(v[np.isfinite(v)])
                    if len(v) == 0:
                        continue
                    q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
                    iqr = q3 - q1
                    boxes[size] = [_short(x) for x in (q1, med, q3, v.mean(), v[v >= q1 - 1.5 * iqr].min(),
                                                       v[v <= q3 + 1.5 * iqr].max())] + [len(v)]
                out["|".join([profile, "+".join(subset), metric, stage, group])] = boxes
    return out


def profile_scale(runs: pd.DataFrame) -> str:
    """One line saying what scale produced these runs."""
    first = runs.iloc[0]
    seeds = runs["seed"].nunique()
    return (f"{len(transfers(runs))} transfer runs, {seeds} seed(s), protocol {first['protocol']}; "
            f"{first['pretrain_images']} pretraining and "
            f"{first['transfer_images']} transfer images of {first['crop']} px crops; "
            f"{first['pretrain_epochs']}+{first['transfer_epochs']} epochs")


def per_model_sizes(runs: pd.DataFrame, evals: pd.DataFrame) -> list[dict]:
    """Per-model values on small and large particles, for the size distributions.

    After pretraining: one row per pretrained model and evaluated domain, tagged by
    the pretraining size, its ``freezing`` the "+"-joined modes of the model's runs (it
    counts once if any is chosen). After transfer learning: one row per run and
    evaluated domain of the target's lattice, tagged by the transfer (target) size.
    """
    ev = evals.merge(transfers(runs)[["run_id", "profile", "pretrain_id", "pretrain_domain", "target_domain",
                                      "freezing"]], on=["run_id", "profile"])  # control runs are no transfers
    ev["eval_size"] = ev["eval_domain"].str.split("_").str[1]
    ev["eval_lattice"] = ev["eval_domain"].str.split("_").str[0]
    pre = ev[ev["stage"] == "pretrain"]
    # each pretrained model once per evaluated domain, with the freezing modes of its runs
    modes = pre.groupby(["profile", "pretrain_id"])["freezing"].agg(lambda f: "+".join(sorted(set(f))))
    pre = pre.drop_duplicates(["profile", "pretrain_id", "eval_domain"]).drop(columns="freezing").merge(
        modes.reset_index(), on=["profile", "pretrain_id"])
    pre = pre.assign(group=pre["pretrain_domain"].str.split("_").str[1],
                     same=pre["eval_lattice"] == pre["pretrain_domain"].str.split("_").str[0])
    post = ev[(ev["stage"] == "transfer")]
    post = post.assign(group=post["target_domain"].str.split("_").str[1],
                       same=post["eval_lattice"] == post["target_domain"].str.split("_").str[0])
    rows = []
    for stage, frame in (("pretrain", pre), ("transfer", post)):
        frame = frame[frame["same"]]  # each model on its own lattice, both sizes
        for rec in frame[["profile", "freezing", "group", "eval_size", *METRICS]].itertuples(index=False):
            rows.append({"stage": stage, **{k: (_short(v) if isinstance(v, float) else v)
                                            for k, v in rec._asdict().items()}})
    return rows


def explorer_html(results_root: Path, series: str, element_id: str | None = None, original: bool = True) -> str:
    """A self-contained HTML fragment (controls + data + script) for a static page.

    With ``original``, the original study's tables under ``<results_root>/original``
    (written by ``hrtem-tl import-original``) join ours as a second data source.
    """
    results = read_results(Path(results_root), series)
    if original and (Path(results_root) / "original" / series / "runs.parquet").exists():
        theirs = read_results(Path(results_root) / "original", series)
        results = {k: pd.concat([results[k], theirs[k]], ignore_index=True) for k in ("runs", "evaluations")}
    payload = explorer_payload(results, series)
    profile = payload["profiles"][0]
    choice = f"{profile}|{'+'.join(FREEZING)}|loss"
    first = {k: {"value": v, **payload["spread"][choice][k]} for k, v in payload["matrices"][f"{choice}|median"].items()}
    base = _figure(series, first, "loss", "median", profile).to_plotly_json()
    payload["figure"] = json.loads(json.dumps(base, cls=_PlotlyEncoder))
    uid = element_id or f"explorer-{series}-{uuid.uuid4().hex[:8]}"
    data = json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    script = TOOLS.read_text() + SCRIPT.read_text()
    return (f'{STYLE}<div class="hrtem-explorer" id="{html.escape(uid)}" data-series="{series}"></div>\n'
            f'<script type="application/json" id="{html.escape(uid)}-data">{data}</script>\n'
            f"<script>{script}\nhrtemExplorer({json.dumps(uid)});</script>")


class _PlotlyEncoder(json.JSONEncoder):
    def default(self, o):
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        return super().default(o)


def explorer_or_note(results_root: Path, series: str) -> str:
    """The explorer, or a note saying which command produces the missing results."""
    try:
        return explorer_html(results_root, series, element_id=f"{series}-explorer")
    except ResultsError as err:
        return (f'<div class="hrtem-explorer hrtem-missing" data-series="{series}"><p><strong>No {series} results '
                f"are stored yet.</strong> {html.escape(str(err))}</p></div>")
