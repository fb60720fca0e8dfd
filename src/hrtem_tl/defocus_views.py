"""The original study's four defocus-data figures as kernel-free explorers.

* ``app:hp_widget`` (:func:`hp_explorer`): the target-domain metric after transfer
  learning by transfer-set size, grouped by freezing option or by learning-rate pair.
* ``app:domain_widget`` (:func:`domain_explorer`): pretraining x evaluation defocus
  matrices after pretraining and after transfer learning.
* ``app:baseline_widget`` (:func:`baseline_explorer`): single-stage training on a
  mixture of two defocus domains against pretraining on one and transferring to the
  other, by the number of target-domain images.
* ``app:gen_widget`` (:func:`gen_explorer`): out-of-distribution spread, the standard
  deviation of a metric over every defocus domain but the transfer target, before and
  after transfer learning, and its shift.

Each explorer offers every data source stored under the results folder: the original's
released GPU tables (``<results>/original/``, loss only) and our runs (``<results>/``),
each labelled with its profile and model count; metrics a source lacks are disabled.
Defocus values are in nm, learning rates as released.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .metrics import HIGHER_IS_BETTER, METRICS
from .results import ResultsError, read_results, transfers
from .series import FREEZING
from .variants import Control, variant_html, variant_payload

ALL = "all"
METRIC_NAMES = {"loss": "loss", "dice": "Dice", "iou": "IoU", "precision": "precision", "recall": "recall",
                "accuracy": "pixel accuracy"}
LOSS_NOTE = ("The original's loss (softmax cross-entropy minus its 0.3133 floor) and ours (cross-entropy of "
             "logits) are different quantities: compare shapes and ranks across sources, not values.")


def defocus_value(domain: str) -> int:
    """``"df-10"`` -> -10 (nm)."""
    match = re.fullmatch(r"df(-?\d+)", domain)
    if match is None:
        raise ValueError(f"not a defocus domain: {domain!r}")
    return int(match.group(1))


def lr_text(value: float) -> str:
    """A learning rate as ``1e-4`` (powers of ten) or ``%g``."""
    exponent = np.log10(value)
    return f"1e{int(round(exponent))}" if np.isclose(exponent, round(exponent)) else f"{value:g}"


def lr_pair(runs: pd.DataFrame) -> pd.Series:
    """``"1e-3 → 1e-4"`` (pretraining → transfer learning) per run."""
    return runs["lr_pretrain"].map(lr_text).astype(str) + " → " + runs["lr_transfer"].map(lr_text).astype(str)


def load_sources(results_root: Path, series: str) -> dict[str, dict[str, pd.DataFrame]]:
    """Tables of ``series`` per data source (profile), ours first, then the original."""
    out = {}
    for root in (Path(results_root), Path(results_root) / "original"):
        try:
            tables = read_results(root, series)
        except ResultsError:
            continue
        for profile, runs in tables["runs"].groupby("profile", sort=False):
            ev = tables["evaluations"]
            out[profile] = {"runs": runs, "evaluations": ev[ev["profile"] == profile]}
    if not out:
        raise ResultsError(f"no {series} results under {results_root} or {Path(results_root) / 'original'}")
    return dict(sorted(out.items(), key=lambda kv: kv[0] == "original"))


def source_title(profile: str, runs: pd.DataFrame) -> str:
    device = runs["device"].iloc[0] if "device" in runs else "?"
    who = "original study" if profile == "original" else f"ours, {profile} profile"
    return f"{who} ({device}; {len(runs)} models)"


def source_control(sources: dict[str, dict[str, pd.DataFrame]]) -> Control:
    options = tuple((p, source_title(p, t["runs"])) for p, t in sources.items())
    return Control("source", "data source", options, options[0][0])


def metric_control(sources: dict[str, dict[str, pd.DataFrame]]) -> Control:
    present = [m for m in METRICS if any(available(t["evaluations"], m) for t in sources.values())]
    return Control("metric", "metric", tuple((m, METRIC_NAMES[m]) for m in present), "loss")


def available(evaluations: pd.DataFrame, metric: str) -> bool:
    """Whether a source has any finite value of ``metric``."""
    return metric in evaluations and bool(np.isfinite(evaluations[metric].to_numpy(dtype=float)).any())


def long_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per transfer run, stage and evaluated domain, with the run's settings."""
    runs = transfers(tables["runs"]).assign(lr=lambda r: lr_pair(r))
    keep = ["run_id", "pretrain_id", "pretrain_domain", "target_domain", "freezing", "transfer_images", "lr", "seed"]
    return tables["evaluations"].merge(runs[keep], on="run_id")


def _choices(values, title=str) -> tuple[tuple[str, str], ...]:
    return ((ALL, ALL), *((str(v), title(v)) for v in values))


def _filter(frame: pd.DataFrame, freezing: str, size: str, lr: str) -> pd.DataFrame:
    keep = np.ones(len(frame), bool)
    if freezing != ALL:
        keep &= (frame["freezing"] == freezing).to_numpy()
    if size != ALL:
        keep &= (frame["transfer_images"] == int(size)).to_numpy()
    if lr != ALL:
        keep &= (frame["lr"] == lr).to_numpy()
    return frame[keep]


def _box_stats(values: np.ndarray) -> dict:
    """Quartiles, mean and Tukey whiskers (most extreme values within 1.5 IQR)."""
    v = np.sort(values[np.isfinite(values)])
    if len(v) == 0:
        return {k: np.nan for k in ("q1", "median", "q3", "lowerfence", "upperfence", "mean")} | {"n": 0}
    q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
    iqr = q3 - q1
    return {"q1": q1, "median": med, "q3": q3, "mean": v.mean(), "n": len(v),
            "lowerfence": v[v >= q1 - 1.5 * iqr].min(), "upperfence": v[v <= q3 + 1.5 * iqr].max()}


def _box_props(groups: list[tuple[str, np.ndarray]]) -> dict:
    """Plotly box-trace properties from precomputed statistics per x category."""
    stats = [(x, _box_stats(v)) for x, v in groups]
    stats = [(x, s) for x, s in stats if s["n"]]
    props = {k: [s[k] for _, s in stats] for k in ("q1", "median", "q3", "lowerfence", "upperfence", "mean")}
    return {"x": [x for x, _ in stats], **props, "visible": bool(stats),
            "hovertext": [f"{s['n']} models" for _, s in stats]}


def _order_defocus(domains) -> list[str]:
    return sorted(set(domains), key=defocus_value)


def _axis_labels(domains: list[str]) -> list[str]:
    return [str(defocus_value(d)) for d in domains]


# --- app:hp_widget ---------------------------------------------------------------------------

HP_GROUPS = {"freezing": "freezing option", "lr": "learning rates (pretraining → TL)"}


def hp_explorer(results_root: Path, element_id: str = "hp-explorer") -> str:
    """Target-domain metric after transfer learning, by transfer-set size (box plots)."""
    sources = load_sources(results_root, "defocus")
    long = {p: long_table(t) for p, t in sources.items()}
    groups = {"freezing": list(FREEZING),
              "lr": sorted({v for f in long.values() for v in f["lr"].unique()}, key=lambda s: s)}
    n_traces = max(len(v) for v in groups.values())
    fig = go.Figure([go.Box(name=f"group {i}", boxmean=True, hoverinfo="y+text") for i in range(n_traces)])
    fig.update_layout(boxmode="group", height=420, template="plotly_white", margin={"l": 70, "r": 20, "t": 60, "b": 60},
                      xaxis={"title": {"text": "transfer-set size (target-domain images)"}, "type": "category"},
                      yaxis={"title": {"text": "loss"}}, legend={"orientation": "h", "y": -0.25},
                      title={"text": "", "font": {"size": 14}})
    source, metric = source_control(sources), metric_control(sources)
    group = Control("group", "group by", tuple(HP_GROUPS.items()), "freezing")
    variants = {}
    for profile, frame in long.items():
        on_target = frame[(frame["stage"] == "transfer") & (frame["eval_domain"] == frame["target_domain"])]
        sizes = sorted(on_target["transfer_images"].unique())
        for m, _ in metric.options:
            if not available(sources[profile]["evaluations"], m):
                continue
            for g in groups:
                traces = []
                for value in groups[g]:
                    sel = on_target[on_target[g] == value]
                    props = _box_props([(str(s), sel.loc[sel["transfer_images"] == s, m].to_numpy(float))
                                        for s in sizes])
                    traces.append({**props, "name": value})
                traces += [{"visible": False}] * (n_traces - len(traces))
                variants[(profile, m, g)] = {
                    "traces": traces,
                    "layout": {"yaxis.title.text": f"{METRIC_NAMES[m]} on the target domain after TL",
                               "yaxis.type": "log" if m == "loss" else "linear",
                               "title.text": f"{METRIC_NAMES[m]} after transfer learning, by {HP_GROUPS[g]} — "
                                             f"{source_title(profile, sources[profile]['runs'])}"},
                    "note": (f"Boxes: quartiles over models of every pretraining and target defocus; the dashed line is "
                             f"the mean, whiskers reach the most extreme model within 1.5 IQR. Data: {profile}."),
                }
    payload = variant_payload(fig, [source, metric, group], variants, LOSS_NOTE)
    return variant_html(element_id, payload)


# --- app:domain_widget -----------------------------------------------------------------------

def _cell_values(frame: pd.DataFrame, rows: list[str], cols: list[str], metric: str, reduction: str) -> np.ndarray:
    values = frame.groupby(["pretrain_domain", "eval_domain"])[metric].agg(reduction)
    return values.unstack().reindex(index=rows, columns=cols).to_numpy(float, copy=True)


def domain_matrices(frame: pd.DataFrame, rows: list[str], cols: list[str], metric: str,
                    reduction: str) -> dict[str, np.ndarray]:
    """``pretrain``: each pretrained model once per evaluated domain; ``transfer``: each run
    on its target (column); its diagonal (no transfer) holds the pretraining value."""
    pre = frame[frame["stage"] == "pretrain"].drop_duplicates(["pretrain_id", "eval_domain"])
    post = frame[(frame["stage"] == "transfer") & (frame["eval_domain"] == frame["target_domain"])]
    before = _cell_values(pre, rows, cols, metric, reduction)
    after = _cell_values(post, rows, cols, metric, reduction)
    for i, d in enumerate(rows):
        if d in cols:
            after[i, cols.index(d)] = before[i, cols.index(d)]
    return {"pretrain": before, "transfer": after}


def _two_heatmaps(rows: list[str], cols: list[str], titles: tuple[str, ...], colorbar: str) -> go.Figure:
    fig = make_subplots(rows=1, cols=len(titles), horizontal_spacing=0.08, subplot_titles=titles)
    x, y = _axis_labels(cols), _axis_labels(rows)
    for i, _ in enumerate(titles, start=1):
        fig.add_trace(go.Heatmap(x=x, y=y, z=np.full((len(rows), len(cols)), np.nan), coloraxis="coloraxis",
                                 xgap=1, ygap=1, name=titles[i - 1],
                                 hovertemplate="pretrained at %{y} nm<br>evaluated at %{x} nm<br>%{z:.4g}<extra></extra>"),
                      row=1, col=i)
        fig.update_xaxes(title_text="evaluation (target) defocus (nm)", type="category", row=1, col=i)
        fig.update_yaxes(title_text="pretraining defocus (nm)" if i == 1 else None, type="category",
                         autorange="reversed", row=1, col=i)
    fig.update_layout(height=380, template="plotly_white", margin={"l": 70, "r": 20, "t": 70, "b": 60},
                      coloraxis={"colorscale": "Viridis", "colorbar": {"title": {"text": colorbar}}},
                      title={"text": "", "font": {"size": 14}})
    return fig


def domain_explorer(results_root: Path, element_id: str = "domain-explorer") -> str:
    """Pretraining x evaluation defocus matrices, filterable by set size, rates and freezing."""
    sources = load_sources(results_root, "defocus")
    long = {p: long_table(t) for p, t in sources.items()}
    rows = _order_defocus(pd.concat([f["pretrain_domain"] for f in long.values()]))
    cols = _order_defocus(pd.concat([f["eval_domain"] for f in long.values()]))
    fig = _two_heatmaps(rows, cols, ("after pretraining", "after transfer learning"), "loss")
    sizes = sorted({int(s) for f in long.values() for s in f["transfer_images"].unique()})
    lrs = sorted({v for f in long.values() for v in f["lr"].unique()})
    source, metric = source_control(sources), metric_control(sources)
    controls = [source, metric, Control("freezing", "frozen during TL", _choices(FREEZING), ALL),
                Control("size", "transfer-set size", _choices(sizes), ALL),
                Control("lr", "learning rates", _choices(lrs), ALL),
                Control("reduction", "reduction over models", (("median", "median"), ("mean", "mean")), "median")]
    variants = {}
    for profile, frame in long.items():
        for m, _ in metric.options:
            if not available(sources[profile]["evaluations"], m):
                continue
            for fz in (ALL, *FREEZING):
                for size in (ALL, *map(str, sizes)):
                    for lr in (ALL, *lrs):
                        sel = _filter(frame, fz, size, lr)
                        if sel.empty:
                            continue
                        n = sel["run_id"].nunique()
                        for red in ("median", "mean"):
                            mats = domain_matrices(sel, rows, cols, m, red)
                            variants[(profile, m, fz, size, lr, red)] = {
                                "traces": [{"z": mats["pretrain"]}, {"z": mats["transfer"]}],
                                "layout": {"coloraxis.reversescale": not HIGHER_IS_BETTER[m],
                                           "coloraxis.colorbar.title.text": f"{red}<br>{METRIC_NAMES[m]}",
                                           "title.text": f"{METRIC_NAMES[m]} by defocus — "
                                                         f"{source_title(profile, sources[profile]['runs'])}"},
                                "note": (f"{n} transfer runs match. Right-hand diagonal: no transfer, the "
                                         "pretrained model itself. Better values are yellow."),
                            }
    payload = variant_payload(fig, controls, variants, LOSS_NOTE)
    return variant_html(element_id, payload)


# --- app:gen_widget --------------------------------------------------------------------------

def ood_spread(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per transfer run: the standard deviation (ddof 1) of ``metric`` over every
    evaluated domain except the run's target, after pretraining (``before``) and after
    transfer learning (``after``), and ``shift`` = after - before."""
    other = frame[frame["eval_domain"] != frame["target_domain"]]
    spread = other.groupby(["run_id", "stage"])[metric].std().unstack("stage")
    spread = spread.rename(columns={"pretrain": "before", "transfer": "after"})
    spread["shift"] = spread["after"] - spread["before"]
    keep = ["run_id", "pretrain_domain", "target_domain", "freezing", "transfer_images", "lr", "seed"]
    return frame[keep].drop_duplicates("run_id").merge(spread.reset_index(), on="run_id")


def gen_explorer(results_root: Path, element_id: str = "gen-explorer") -> str:
    """Out-of-distribution spread before and after transfer learning, per defocus pair (median)."""
    sources = load_sources(results_root, "defocus")
    long = {p: long_table(t) for p, t in sources.items()}
    rows = _order_defocus(pd.concat([f["pretrain_domain"] for f in long.values()]))
    cols = _order_defocus(pd.concat([f["target_domain"] for f in long.values()]))
    fig = _two_heatmaps(rows, cols, ("spread before TL", "spread after TL", "shift (after − before)"), "spread")
    fig.data[2].update(coloraxis="coloraxis2")
    fig.update_layout(coloraxis2={"colorscale": "RdBu", "reversescale": True, "cmid": 0,
                                  "colorbar": {"title": {"text": "shift"}, "x": 1.13, "len": 0.9}},
                      margin={"r": 110})
    fig.layout.coloraxis.colorbar.update(x=1.02, len=0.9)
    for i in (1, 2, 3):
        fig.update_xaxes(title_text="target defocus (nm)", row=1, col=i)
    sizes = sorted({int(s) for f in long.values() for s in f["transfer_images"].unique()})
    lrs = sorted({v for f in long.values() for v in f["lr"].unique()})
    source, metric = source_control(sources), metric_control(sources)
    controls = [source, metric, Control("freezing", "frozen during TL", _choices(FREEZING), ALL),
                Control("size", "transfer-set size", _choices(sizes), ALL),
                Control("lr", "learning rates", _choices(lrs), ALL)]
    variants = {}
    for profile, frame in long.items():
        for m, _ in metric.options:
            if not available(sources[profile]["evaluations"], m):
                continue
            spread = ood_spread(frame, m)
            for fz in (ALL, *FREEZING):
                for size in (ALL, *map(str, sizes)):
                    for lr in (ALL, *lrs):
                        sel = _filter(spread, fz, size, lr)
                        if sel.empty:
                            continue
                        cells = sel.groupby(["pretrain_domain", "target_domain"])[["before", "after", "shift"]].median()
                        z = {k: cells[k].unstack().reindex(index=rows, columns=cols).to_numpy(float)
                             for k in ("before", "after", "shift")}
                        worse = float((sel["shift"] > 0).mean())
                        variants[(profile, m, fz, size, lr)] = {
                            "traces": [{"z": z["before"]}, {"z": z["after"]}, {"z": z["shift"]}],
                            "layout": {"coloraxis.colorbar.title.text": f"median spread<br>of {METRIC_NAMES[m]}",
                                       "title.text": f"spread of {METRIC_NAMES[m]} over the other defocus domains — "
                                                     f"{source_title(profile, sources[profile]['runs'])}"},
                            "note": (f"{len(sel)} transfer runs; spread = standard deviation over every defocus "
                                     f"domain but the target; cells are medians over models. The spread grew "
                                     f"in {worse:.0%} of these runs (red: grew, blue: shrank)."),
                        }
    payload = variant_payload(fig, controls, variants, LOSS_NOTE)
    return variant_html(element_id, payload)


# --- app:baseline_widget ---------------------------------------------------------------------

def baseline_rows(sources_base: dict, sources_tl: dict) -> dict[str, pd.DataFrame]:
    """Per source: one row per model with ``approach`` (mixture | transfer), ``pair``
    (``"-10 → 5"``: pretraining or major domain → target or minor domain), ``images``
    (target-domain images in training), ``lr`` (pretraining or single-stage rate),
    ``seed``, ``freezing`` (``none`` for a mixture) and the metric on the ``target`` and
    on the ``source`` domain."""
    out = {}
    for profile in sources_base:
        base = sources_base[profile]
        runs = base["runs"][base["runs"]["kind"] == "baseline"]
        ev = base["evaluations"].merge(runs[["run_id", "pretrain_domain", "target_domain", "minor_images",
                                             "lr_pretrain", "seed", "freezing"]], on="run_id")
        parts = [_two_domains(ev, "mixture", ev["minor_images"])]
        if profile in sources_tl:
            tl = long_table(sources_tl[profile])
            tl = tl[tl["stage"] == "transfer"].merge(
                transfers(sources_tl[profile]["runs"])[["run_id", "lr_pretrain"]], on="run_id")
            if len(tl):
                parts.append(_two_domains(tl, "transfer learning", tl["transfer_images"]))
        frame = pd.concat(parts, ignore_index=True)
        pairs = set(zip(runs["pretrain_domain"], runs["target_domain"]))
        keep = [p in pairs for p in zip(frame["major"], frame["minor"])]
        out[profile] = frame[keep].assign(pair=lambda f: f["major"].map(defocus_value).astype(str) + " → " +
                                          f["minor"].map(defocus_value).astype(str))
    return out


def _two_domains(ev: pd.DataFrame, approach: str, images: pd.Series) -> pd.DataFrame:
    """Rows (run, metric on the target, metric on the source) from long evaluations."""
    ev = ev.assign(images=images.to_numpy(), role=np.where(ev["eval_domain"] == ev["target_domain"], "target",
                                                           np.where(ev["eval_domain"] == ev["pretrain_domain"],
                                                                    "source", "")))
    ev = ev[ev["role"] != ""]
    metrics = [m for m in METRICS if m in ev]
    wide = ev.drop_duplicates(["run_id", "role"]).set_index(["run_id", "role"])[metrics].unstack("role")
    wide.columns = [f"{role}_{m}" for m, role in wide.columns]
    keys = ev.drop_duplicates("run_id")[["run_id", "pretrain_domain", "target_domain", "images", "lr_pretrain",
                                          "seed", "freezing"]]
    wide = keys.merge(wide.reset_index(), on="run_id").rename(columns={"pretrain_domain": "major",
                                                                       "target_domain": "minor"})
    return wide.assign(approach=approach, lr=wide["lr_pretrain"].map(lr_text))


def baseline_explorer(results_root: Path, element_id: str = "baseline-explorer") -> str:
    """Mixtures of two defocus domains against transfer learning between them."""
    base = load_sources(results_root, "baseline")
    try:
        tl = load_sources(results_root, "defocus")
    except ResultsError:
        tl = {}
    frames = baseline_rows(base, tl)
    pairs = sorted({p for f in frames.values() for p in f["pair"]},
                   key=lambda p: tuple(int(v) for v in p.split(" → ")))
    lrs = sorted({v for f in frames.values() for v in f["lr"]})
    default_pair = "-10 → 5" if "-10 → 5" in pairs else pairs[0]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("on the target (minor) domain", "on the source (major) domain"))
    for col in (1, 2):
        for approach, colour in (("mixture", "#7570b3"), ("transfer learning", "#1b9e77")):
            fig.add_trace(go.Box(name=approach, legendgroup=approach, showlegend=col == 1, marker={"color": colour},
                                 boxmean=True, hoverinfo="y+text"), row=1, col=col)
        fig.update_xaxes(title_text="target-domain images in training", type="category", row=1, col=col)
    images = sorted({int(c) for f in frames.values() for c in f["images"]})
    for col in (1, 2):
        fig.update_xaxes(categoryorder="array", categoryarray=[str(c) for c in images], row=1, col=col)
    fig.update_layout(boxmode="group", height=400, template="plotly_white", legend={"orientation": "h", "y": -0.25},
                      margin={"l": 70, "r": 20, "t": 70, "b": 60}, title={"text": "", "font": {"size": 14}})
    source, metric = source_control(base), metric_control(base)
    controls = [source, metric, Control("pair", "source → target defocus (nm)", _choices(pairs), default_pair),
                Control("lr", "pretraining / single-stage learning rate", _choices(lrs), ALL)]
    variants = {}
    for profile, frame in frames.items():
        for m, _ in metric.options:
            if not available(base[profile]["evaluations"], m):
                continue
            for pair in (ALL, *pairs):
                for lr in (ALL, *lrs):
                    sel = frame[((frame["pair"] == pair) | (pair == ALL)) & ((frame["lr"] == lr) | (lr == ALL))]
                    if sel.empty:
                        continue
                    traces = []
                    for role in ("target", "source"):
                        for approach in ("mixture", "transfer learning"):
                            part = sel[sel["approach"] == approach]
                            counts = sorted(part["images"].unique())
                            traces.append({**_box_props([(str(c), part.loc[part["images"] == c, f"{role}_{m}"]
                                                          .to_numpy(float)) for c in counts]), "name": approach})
                    counts = sel.groupby("approach")["run_id"].nunique().to_dict()
                    variants[(profile, m, pair, lr)] = {
                        "traces": traces,
                        "layout": {"yaxis.title.text": METRIC_NAMES[m], "yaxis.type": "log" if m == "loss" else "linear",
                                   "yaxis2.type": "log" if m == "loss" else "linear",
                                   "title.text": f"mixture against transfer learning — "
                                                 f"{source_title(profile, base[profile]['runs'])}"},
                        "note": (f"Mixture: one training stage on 512 images, the x value of them from the target "
                                 f"domain ({counts.get('mixture', 0)} models). Transfer learning: 512 source-domain "
                                 f"images, then the x value of target images ({counts.get('transfer learning', 0)} "
                                 "models, every freezing option)."),
                    }
    payload = variant_payload(fig, controls, variants, LOSS_NOTE)
    return variant_html(element_id, payload)


def explorer_or_note(builder, results_root: Path, what: str) -> str:
    """The explorer, or a note saying which results are missing."""
    import html

    try:
        return builder(results_root)
    except ResultsError as err:
        return f'<div class="hrtem-explorer hrtem-missing"><p><strong>No {what} results are stored yet.</strong> ' \
               f"{html.escape(str(err))}</p></div>"
