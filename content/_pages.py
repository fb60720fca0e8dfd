"""Shared helpers of the paper's notebooks: load results, format numbers as HTML.

The notebooks run with ``content/`` as working directory. Results are read from
``$HRTEM_TL_RESULTS`` (default ``../data/results``), examples from
``$HRTEM_TL_EXAMPLES`` (default ``../data/examples``). Every number a page shows is
computed here or in :mod:`hrtem_tl.analysis` from those files; the figures are built
in ``_figures`` (results) and ``_pictures`` (micrographs and masks).
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import HTML

from hrtem_tl import analysis as A
from hrtem_tl import measures as M
from hrtem_tl import stats as S
from hrtem_tl import verdicts as V
from hrtem_tl.results import ResultsError, read_results

RESULTS = Path(os.environ.get("HRTEM_TL_RESULTS", "../data/results"))
EXAMPLES = Path(os.environ.get("HRTEM_TL_EXAMPLES", "../data/examples"))
COMMANDS = {
    "noise": "hrtem-tl study noise --profile cpu",
    "structure": "hrtem-tl study structure --profile cpu",
    "tlsize": "hrtem-tl study tlsize --profile cpu",
}
PROFILE_MEANING = {
    "smoke": "a plumbing test on tiny, barely trained models whose numbers mean nothing",
    "cpu": "a reduced scale that one 2-core computer finishes in hours",
    "gpu": "the original image and set sizes on one accelerator",
    "paper": "the original study's settings in full",
}
STYLE = """<style>
.hr-table{border-collapse:collapse;font-size:0.9em;margin:0.4em 0 0.8em}
.hr-table th,.hr-table td{border-bottom:1px solid #ccc;padding:0.2em 0.6em;text-align:left;vertical-align:top}
.hr-note{border-left:4px solid #d9a300;padding:0.3em 0.8em;background:#fff8e0;color:#1d2329}
.hr-note code{background:#f3ead0;color:#1d2329}
.hr-v{font-weight:600;padding:0 0.3em;border-radius:3px;color:#1d2329}
.hr-scroll{overflow-x:auto}
.hr-holds{background:#d7f0d7}.hr-mixed{background:#fff0c2}.hr-inconclusive{background:#e3e8f4}
.hr-refuted{background:#f8d4d4}.hr-untested{background:#e6e6e6}
.hr-context td{opacity:0.75;font-style:italic}
.hr-data{margin:0.2em 0 1em}.hr-data summary{cursor:pointer;font-size:0.9em}
</style>"""


@dataclass
class SeriesData:
    """One series' results for the largest-scale profile present, or why there are none."""

    name: str
    runs: pd.DataFrame | None = None
    evaluations: pd.DataFrame | None = None
    histories: pd.DataFrame | None = None
    profile: str | None = None
    missing: str | None = None

    @property
    def ok(self) -> bool:
        return self.runs is not None and not self.runs.empty

    @property
    def pair(self):
        return (self.runs, self.evaluations) if self.ok else None


def load(series: str, root: Path = RESULTS) -> SeriesData:
    """Results of ``series`` for the largest-scale profile stored."""
    try:
        tables = read_results(root, series)
    except ResultsError as err:
        return SeriesData(series, missing=str(err))
    profile = M.pick_profile(tables["runs"]["profile"])
    if profile is None:
        return SeriesData(series, missing=f"{root}/{series}/runs.parquet holds no runs")
    runs, evals = M.for_profile(tables["runs"], tables["evaluations"], profile)
    hist = tables["histories"][tables["histories"]["profile"] == profile]
    return SeriesData(series, runs, evals, hist, profile)


def planned_runs(series: str, profile: str) -> int:
    """Runs in the full grid of ``series`` at ``profile``."""
    from hrtem_tl.config import load_profile
    from hrtem_tl.series import Series
    from hrtem_tl.study import plan

    return len(plan(Series(series, load_profile(profile))))


def grid_state(data: SeriesData) -> tuple[bool, str]:
    """Whether a stored series holds its whole grid, and its run count as text. A
    protocol-1 series predates the current grid and counts as complete as it stands."""
    if int(data.runs["protocol"].max()) < 2:
        return True, f"{len(data.runs):,} (protocol-1 grid)"
    planned = planned_runs(data.name, data.profile)
    return len(data.runs) >= planned, f"{len(data.runs):,} of {planned:,}"


def fmt(x, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (thousands separated), or an en dash."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if x == 0:
        return "0"
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def pct(x, digits: int | None = None) -> str:
    """A fraction as a percentage (whole percent from 10 %, finer below; ``digits`` decimals if given)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    v = 100 * float(x)
    if v == 0:
        return "0 %"
    if digits is not None:
        return f"{v:.{digits}f} %"
    if v != 0 and abs(v) < 0.01:
        return "< 0.01 %" if v > 0 else "> −0.01 %"
    return f"{v:.0f} %" if abs(v) >= 10 else f"{v:.1f} %" if abs(v) >= 1 else f"{v:.2f} %"


def seconds(x) -> str:
    """A duration in s, min or h."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if x < 120:
        return f"{x:.3g} s"
    if x < 2 * 3600:
        return f"{x / 60:.3g} min"
    return f"{x / 3600:.3g} h"


def badge(verdict: str) -> str:
    cls = {V.HOLDS: "holds", V.MIXED: "mixed", V.INCONCLUSIVE: "inconclusive", V.REFUTED: "refuted",
           V.UNTESTED: "untested"}[verdict]
    return f'<span class="hr-v hr-{cls}">{html.escape(verdict)}</span>'


def table(frame: pd.DataFrame, formats: dict | None = None, index: bool = True, caption: str | None = None) -> str:
    """A small HTML table; ``formats`` maps column names to formatting functions."""
    formats = formats or {}
    frame = frame.copy()
    for col in frame.columns:
        f = formats.get(col, fmt if pd.api.types.is_numeric_dtype(frame[col]) else str)
        frame[col] = [f(v) for v in frame[col]]
    body = frame.to_html(index=index, escape=False, border=0, classes="hr-table")
    return (f"<p><em>{caption}</em></p>" if caption else "") + body


def data_table(frame: pd.DataFrame, summary: str, **kwargs) -> str:
    """:func:`table` behind a "data" toggle, for numbers that a figure above already shows."""
    return f'<details class="hr-data"><summary>{html.escape(summary)}</summary>{table(frame, **kwargs)}</details>'


def scale_sentence(data: SeriesData) -> str:
    """Which profile produced a series' numbers and what that scale means."""
    if not data.ok:
        return (f'<p class="hr-note">No <strong>{data.name}</strong> results are stored yet. '
                f"They are produced by <code>{COMMANDS.get(data.name, 'hrtem-tl study ' + data.name)}</code>; "
                f"until then every statement of this page about the {data.name} series is "
                f"<em>not yet tested</em>.</p>")
    r = data.runs
    first = r.iloc[0]
    seeds = sorted(r["seed"].unique())
    note = PROFILE_MEANING.get(data.profile, "a custom scale")
    sizes = [fmt(int(n)) for n in sorted(r["transfer_images"].unique())]
    transfer = sizes[0] if len(sizes) == 1 else ", ".join(sizes[:-1]) + f" or {sizes[-1]}"
    if int(first["protocol"]) < 2:
        done = f"{fmt(len(r))} runs"
    else:
        planned = planned_runs(data.name, data.profile)
        done = (f"all {fmt(planned)} runs of its grid" if len(r) >= planned
                else f"{fmt(len(r))} of the {fmt(planned)} runs of its grid (the study was still running)")
    protocol = int(first["protocol"])
    if protocol >= 2:
        split = (f"{fmt(int(first['val_images']))} validation images (best epoch only) and "
                 f"{fmt(int(first['test_images']))} test images per domain (every number reported); transfer sets "
                 f"from scenes the pretrained model never saw; {fmt(int((r['kind'] == 'control').sum()))} control runs")
    else:
        split = (f"{fmt(int(first['val_images']))} validation images per domain, which both chose the best epoch and "
                 "gave the reported numbers, and transfer sets drawn from the pretraining scenes "
                 "(<strong>protocol 1, superseded</strong>: these results await their re-run on protocol 2)")
    bn = {"adapt": "batch-norm statistics re-estimated from the target's crops during transfer",
          "fixed": "batch-norm statistics kept from pretraining during transfer"}.get(first["transfer_batchnorm"])
    split += f"; {bn}" if bn else ""
    stale = ""
    if protocol >= 2 and not is_current(data):
        stale = (f" <strong>These runs predate the current <code>{data.profile}</code> settings</strong> (now: "
                 f"{current_changes(data)}); <code>{COMMANDS.get(data.name, 'hrtem-tl study ' + data.name)}</code> "
                 "re-runs them, and re-executing this page then shows the new runs.")
    return (f"<p>The <strong>{data.name}</strong> numbers on this page come from the <code>{data.profile}</code> profile "
            f"({note}), protocol {protocol}: {done}, seed(s) {', '.join(map(str, seeds))}; "
            f"{fmt(int(first['pretrain_images']))} pretraining and {transfer} transfer images per domain, "
            f"{split}; training on random {fmt(int(first['crop']))} px crops, "
            f"{fmt(int(first['pretrain_epochs']))} pretraining epochs of {fmt(int(first['pretrain_steps']))} mini-batches "
            f"and {fmt(int(first['transfer_epochs']))} transfer epochs of {fmt(int(first['transfer_steps']))}, "
            f"{first['precision']} on {first['device']}.{stale}</p>")


def _profile_of(data: SeriesData):
    from hrtem_tl.config import load_profile

    return load_profile(data.profile)


def is_current(data: SeriesData) -> bool:
    """Whether the stored runs have the config hash the profile gives today (at their precision)."""
    from hrtem_tl.experiment import run_config_hash
    from hrtem_tl.train import Precision

    first = data.runs.iloc[0]
    precision = Precision.named(str(first["precision"]), str(first["device"]))
    return first["config_hash"] == run_config_hash(_profile_of(data), data.name, precision)


def current_changes(data: SeriesData) -> str:
    """The run settings where the profile now differs from the stored runs (batch norm, epochs, ...)."""
    t = _profile_of(data).training
    first = data.runs.iloc[0]
    fields = {"transfer_batchnorm": "batch norm during transfer", "transfer_epochs": "transfer epochs",
              "transfer_steps": "transfer steps per epoch", "pretrain_epochs": "pretraining epochs",
              "crop": "crop", "lr_transfer": "transfer learning rate"}
    diff = [f"{label} {getattr(t, k)}" for k, label in fields.items() if k in first and str(getattr(t, k)) != str(first[k])]
    return ", ".join(diff) or "other settings"


def formula(text: str) -> str:
    """Chemical formula with subscript digits (Fe3O4 -> Fe<sub>3</sub>O<sub>4</sub>)."""
    import re

    return re.sub(r"(\d+)", r"<sub>\1</sub>", str(text))


def show(*parts: str) -> None:
    """Display the HTML ``parts`` (with the page style) as one output."""
    from IPython.display import display

    display(HTML(STYLE + "".join(parts)))


# --------------------------------------------------------------------------- claims


def assess(noise: SeriesData, structure: SeriesData, tlsize: SeriesData | None = None) -> pd.DataFrame:
    """The claim table of :func:`hrtem_tl.analysis.assess_claims` (same settings on every page);
    the tlsize series is loaded here unless given."""
    tlsize = tlsize if tlsize is not None else load("tlsize")
    return A.assess_claims(noise.pair, structure.pair, metrics=("loss", "dice"), tlsize=tlsize.pair)


def interval_text(row) -> str:
    """'estimate [lo, hi]' rounded to what the interval supports, with its units."""
    if row["verdict"] == V.UNTESTED and math.isnan(row["estimate"]):
        return "–"
    text = S.format_estimate(row["estimate"], row["lo"], row["hi"])
    if not math.isnan(row["lo"]):
        text += f" <small>({html.escape(row['method'])}; {int(row['units'])} units, {int(row['df'])} d.f.)</small>"
    return text


def seed_text(row) -> str:
    """The per-seed range of a part's statistic: the seed-to-seed noise floor."""
    if row["seeds"] < 2:
        return "one seed" if row["seeds"] == 1 else "–"
    d = S.decimals_for(row["lo"], row["hi"]) if not math.isnan(row["lo"]) else 3
    return f"{row['seed_min']:.{d}f} to {row['seed_max']:.{d}f} ({int(row['seeds'])} seeds)"


def claim_rows_html(table: pd.DataFrame, claim: int) -> str:
    """The parts of one claim: what is measured, estimate and interval, seed range,
    threshold, verdict; context rows (which enter no verdict) in grey."""
    rows = table[table["claim"] == claim]
    body = []
    for _, r in rows.iterrows():
        context = not bool(r["primary"])
        note = f"<br><small>{html.escape(r['note'])}</small>" if r["note"] and r["verdict"] != V.UNTESTED else ""
        cells = [f"{claim}{r['part']}", r["series"], {"dice": "Dice", "time": "wall time"}.get(r["metric"], r["metric"]),
                 html.escape(str(r["test"])) + note, interval_text(r), seed_text(r),
                 html.escape(str(r["threshold_text"])),
                 "context" if context else badge(r["verdict"])]
        body.append(f'<tr{" class=hr-context" if context else ""}>' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = ("part", "series", "metric", "what is measured", "estimate [95 % interval]", "per-seed range",
            "claim needs", "verdict")
    return ('<div class="hr-scroll"><table class="hr-table"><tr>' + "".join(f"<th>{h}</th>" for h in head)
            + "</tr>" + "".join(body) + "</table></div>")


def claim_section(table: pd.DataFrame, claim: int) -> None:
    """Show one claim: our wording, its verdict with each part's verdict, its table."""
    summary = V.claim_summary(table).loc[claim]
    parts = f" Parts: {html.escape(summary['parts'])}." if summary["parts"] else ""
    show(f"<p><em>{html.escape(V.CLAIMS[claim])}</em></p>",
         f"<p>Verdict from our data: {badge(summary['verdict'])}.{parts}</p>", claim_rows_html(table, claim))


def forest_figure(table: pd.DataFrame):
    """Every tested primary claim part on one axis: its distance from the threshold, on the
    claim's side, in units of its own interval half-width (beyond +1: holds; below -1:
    refuted; between: inconclusive). Hover gives the estimate in its own units."""
    import plotly.graph_objects as go

    rows = table[table["primary"].astype(bool) & (table["verdict"] != V.UNTESTED) & table["lo"].notna()].copy()
    if rows.empty:
        return None
    half = (rows["hi"] - rows["lo"]) / 2
    centre = (rows["hi"] + rows["lo"]) / 2
    sign = np.where(rows["side"] == "below", -1.0, 1.0)
    within = rows["side"] == "within"
    # for an equivalence part the claimed side is "inside the band": margin = tolerance - |centre| - nothing
    x = np.where(within, (rows["threshold"] - centre.abs()) / half, sign * (centre - rows["threshold"]) / half)
    labels = [f"{r.claim}{r.part} {r.series} {r.metric}" for r in rows.itertuples()]
    colours = {V.HOLDS: "#2a8a2a", V.INCONCLUSIVE: "#4a6fb0", V.REFUTED: "#c03030"}
    fig = go.Figure()
    for v, colour in colours.items():
        keep = (rows["verdict"] == v).to_numpy()
        if not keep.any():
            continue
        texts = [V.sentence(r) for _, r in rows[keep].iterrows()]
        fig.add_trace(go.Scatter(x=x[keep], y=np.array(labels, dtype=object)[keep], mode="markers", name=v,
                                 marker={"color": colour, "size": 9},
                                 error_x={"type": "constant", "value": 1, "color": colour, "thickness": 1.5},
                                 text=texts, hovertemplate="%{text}<extra></extra>"))
    fig.add_vline(x=0, line={"color": "#888", "dash": "dot"})
    fig.update_yaxes(autorange="reversed", title_text="")
    fig.update_xaxes(title_text="distance from the threshold<br>(interval half-widths)",
                     zeroline=False)
    fig.update_layout(height=max(320, 22 * len(rows) + 130), template="plotly_white",
                      margin={"l": 150, "r": 10, "t": 30, "b": 75}, legend={"orientation": "h", "y": 1.05})
    return fig


def table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=False, border=0, classes="hr-table")


# --------------------------------------------------------------------------- figures


AGREEMENT_SERIES = {"noise": "doses", "structure": "lattices (small particles)", "defocus": "defocus values"}


def _loss_matrices(runs: pd.DataFrame, evals: pd.DataFrame, series: str) -> dict[str, np.ndarray]:
    from hrtem_tl.explore import series_domains
    from hrtem_tl.results import matrices

    mats = matrices(runs, evals, freezing={"none", "encoder", "decoder"}, metric="loss", reduction="median",
                    domains=series_domains(series))
    return {k: v["value"].to_numpy(dtype=float) for k, v in mats.items()}


def _axis_shares(runs: pd.DataFrame, evals: pd.DataFrame, series: str) -> tuple[float, float]:
    """Share of the loss matrix's spread explained by the target axis, before and after TL
    (cells on the domains of the agreement figure, for structure the small particles; the
    transfer matrix without its diagonal)."""
    from hrtem_tl.explore import series_domains

    domains = set(series_domains(series))

    def cells(stage):
        f = M.model_cells(runs, evals, stage)
        return f[f["pretrain_domain"].isin(domains) & f["eval_domain"].isin(domains)]

    pre = S.variance_shares(cells("pretrain"), "loss")
    post = S.variance_shares(cells("transfer"), "loss", exclude_diagonal=True)
    return pre["col"], post["col"]


def _at_our_rates(ours: SeriesData, theirs: dict) -> dict:
    """The original's runs (and their evaluations) at the learning-rate pairs our runs used."""
    ran = set(zip(ours.runs["lr_pretrain"], ours.runs["lr_transfer"]))
    keep = [pair in ran for pair in zip(theirs["runs"]["lr_pretrain"], theirs["runs"]["lr_transfer"])]
    return {"runs": theirs["runs"][keep],
            "evaluations": theirs["evaluations"][theirs["evaluations"]["run_id"].isin(theirs["runs"].loc[keep, "run_id"])]}


def defocus_transfer_orders(root: Path = RESULTS) -> pd.DataFrame | None:
    """What orders the defocus matrix after transfer learning, per source (ours, the
    original's at our learning rates): the hardest target; over the cells off the
    diagonal and off the hardest target, Spearman ρ of the target's median loss with its
    defocus [nm] (does the loss follow the sign and size of the defocus?) and of each
    cell's loss relative to its target's median with the distance |pretraining − target|
    [nm] (is a farther transfer harder?); of the defocus magnitudes with a target of
    either sign, at how many the positive (underfocus) target has the higher median loss.
    ``attrs["ρ after pretraining, our axis reversed"]``: the rank agreement of the two
    after-pretraining matrices with our defocus axis read with the other sign. None until
    our grid is complete."""
    from scipy.stats import spearmanr

    from hrtem_tl.explore import rank_agreement, series_domains

    ours = load("defocus", root)
    try:
        theirs = read_results(root / "original", "defocus")
    except ResultsError:
        return None
    if not ours.ok or not grid_state(ours)[0]:
        return None
    domains = series_domains("defocus")
    nm = np.array([float(d.removeprefix("df")) for d in domains])
    rows, pretrained = {}, {}
    for name, tables in {"ours": {"runs": ours.runs, "evaluations": ours.evaluations},
                         "original": _at_our_rates(ours, theirs)}.items():
        matrices = _loss_matrices(tables["runs"], tables["evaluations"], "defocus")
        m, pretrained[name] = matrices["transfer"], matrices["pretrain"]
        i, j = np.nonzero(~np.isnan(m) & ~np.eye(len(nm), dtype=bool))
        cells = pd.DataFrame({"pretrain": nm[i], "target": nm[j], "loss": m[i, j]})
        by_target = cells.groupby("target")["loss"].median()
        hardest = by_target.idxmax()
        rest = cells[cells["target"] != hardest]
        per_target = by_target.drop(hardest)
        relative = rest["loss"] / rest["target"].map(by_target)
        mirrored = [m for m in per_target.index if m > 0 and -m in per_target.index]
        rows[name] = {"hardest target (nm)": hardest, "targets": len(per_target), "cells": len(rest),
                      "magnitudes": len(mirrored),
                      "positive harder": sum(per_target[m] > per_target[-m] for m in mirrored),
                      "ρ target loss vs defocus": spearmanr(per_target.index, per_target.to_numpy()).statistic,
                      "ρ relative loss vs distance": spearmanr((rest["pretrain"] - rest["target"]).abs(),
                                                               relative).statistic}
    out = pd.DataFrame(rows).T
    out.attrs["ρ after pretraining, our axis reversed"] = rank_agreement(
        pretrained["ours"][::-1, ::-1], pretrained["original"], False)["rho"]
    return out


def agreement_table(root: Path = RESULTS) -> pd.DataFrame | None:
    """Per matrix figure and stage: Spearman rank correlation of our median loss cells
    with the original's (all freezing options pooled; the transfer matrix without its
    diagonal; for defocus, the original's runs at our learning rates only), beside the
    same correlation between our two seeds (how well we agree with ourselves), and the
    share of the spread the target axis explains in each source. Series whose grid is
    not complete are left out."""
    from hrtem_tl.explore import rank_agreement

    rows = []
    for series, axis in AGREEMENT_SERIES.items():
        ours = load(series, root)
        try:
            theirs = read_results(root / "original", series)
        except ResultsError:
            continue
        if not ours.ok or not grid_state(ours)[0]:
            continue  # a partial grid's cells are not comparable with a complete one's
        if series == "defocus":  # the original varied learning rates; compare the pairs we ran
            theirs = _at_our_rates(ours, theirs)
        a = _loss_matrices(ours.runs, ours.evaluations, series)
        b = _loss_matrices(theirs["runs"], theirs["evaluations"], series)
        seeds = sorted(ours.runs["seed"].unique())
        by_seed = None
        if len(seeds) >= 2:
            pick = lambda s: (ours.runs[ours.runs["seed"] == s],  # noqa: E731
                              ours.evaluations[ours.evaluations["run_id"].isin(ours.runs.loc[ours.runs["seed"] == s, "run_id"])])
            by_seed = (_loss_matrices(*pick(seeds[0]), series), _loss_matrices(*pick(seeds[1]), series))
        share_ours = _axis_shares(ours.runs, ours.evaluations, series)
        share_theirs = _axis_shares(theirs["runs"], theirs["evaluations"], series)
        for i, stage in enumerate(("pretrain", "transfer")):
            skip = stage == "transfer"
            agree = rank_agreement(a[stage], b[stage], skip)
            self_rho = rank_agreement(by_seed[0][stage], by_seed[1][stage], skip)["rho"] if by_seed else np.nan
            rows.append({"figure": f"{series} ({axis})", "stage": "after pretraining" if i == 0 else "after transfer",
                         "cells": agree["n"], "ρ ours vs original": agree["rho"],
                         "ρ our seed vs seed": self_rho if self_rho is not None else np.nan,
                         "target axis share, ours": share_ours[i], "target axis share, original": share_theirs[i],
                         "our profile": f"{ours.profile} (protocol {int(ours.runs['protocol'].iloc[0])})"})
    return pd.DataFrame(rows) if rows else None
