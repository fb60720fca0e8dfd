"""Shared helpers of the paper's notebooks: load results, format numbers as HTML.

The notebooks run with ``content/`` as working directory. Results are read from
``$HRTEM_TL_RESULTS`` (default ``../data/results``), examples from
``$HRTEM_TL_EXAMPLES`` (default ``../data/examples``). Every number a page shows is
computed here or in :mod:`hrtem_tl.analysis` from those files.
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
from hrtem_tl.results import ResultsError, read_results
from hrtem_tl.series import parse_structure_domain

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
    cls = {A.HOLDS: "holds", A.MIXED: "mixed", A.INCONCLUSIVE: "inconclusive", A.REFUTED: "refuted",
           A.UNTESTED: "untested"}[verdict]
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
    import torch

    from hrtem_tl.experiment import run_config_hash
    from hrtem_tl.train import Precision

    first = data.runs.iloc[0]
    precision = Precision(str(first["device"]), torch.bfloat16 if first["precision"] == "bf16" else None)
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
    if row["verdict"] == A.UNTESTED and math.isnan(row["estimate"]):
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
        note = f"<br><small>{html.escape(r['note'])}</small>" if r["note"] and r["verdict"] != A.UNTESTED else ""
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
    summary = A.claim_summary(table).loc[claim]
    parts = f" Parts: {html.escape(summary['parts'])}." if summary["parts"] else ""
    show(f"<p><em>{html.escape(A.CLAIMS[claim])}</em></p>",
         f"<p>Verdict from our data: {badge(summary['verdict'])}.{parts}</p>", claim_rows_html(table, claim))


def forest_figure(table: pd.DataFrame):
    """Every tested primary claim part on one axis: its distance from the threshold, on the
    claim's side, in units of its own interval half-width (beyond +1: holds; below -1:
    refuted; between: inconclusive). Hover gives the estimate in its own units."""
    import plotly.graph_objects as go

    rows = table[table["primary"].astype(bool) & (table["verdict"] != A.UNTESTED) & table["lo"].notna()].copy()
    if rows.empty:
        return None
    half = (rows["hi"] - rows["lo"]) / 2
    centre = (rows["hi"] + rows["lo"]) / 2
    sign = np.where(rows["side"] == "below", -1.0, 1.0)
    within = rows["side"] == "within"
    # for an equivalence part the claimed side is "inside the band": margin = tolerance - |centre| - nothing
    x = np.where(within, (rows["threshold"] - centre.abs()) / half, sign * (centre - rows["threshold"]) / half)
    labels = [f"{r.claim}{r.part} {r.series} {r.metric}" for r in rows.itertuples()]
    colours = {A.HOLDS: "#2a8a2a", A.INCONCLUSIVE: "#4a6fb0", A.REFUTED: "#c03030"}
    fig = go.Figure()
    for v, colour in colours.items():
        keep = (rows["verdict"] == v).to_numpy()
        if not keep.any():
            continue
        texts = [A.sentence(r) for _, r in rows[keep].iterrows()]
        fig.add_trace(go.Scatter(x=x[keep], y=np.array(labels, dtype=object)[keep], mode="markers", name=v,
                                 marker={"color": colour, "size": 9},
                                 error_x={"type": "constant", "value": 1, "color": colour, "thickness": 1.5},
                                 text=texts, hovertemplate="%{text}<extra></extra>"))
    fig.add_vline(x=0, line={"color": "#888", "dash": "dot"})
    fig.update_yaxes(autorange="reversed", title_text="")
    fig.update_xaxes(title_text="distance from the threshold on the claim's side (interval half-widths)",
                     zeroline=False)
    fig.update_layout(height=max(320, 22 * len(rows) + 120), template="plotly_white",
                      margin={"l": 150, "r": 10, "t": 30, "b": 60}, legend={"orientation": "h", "y": 1.05})
    return fig


def table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=False, border=0, classes="hr-table")


# --------------------------------------------------------------------------- figures


def _data_uri(array: np.ndarray, kind: str, quality: int = 75) -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    if kind == "jpeg":
        Image.fromarray(array, "L").save(buf, format="JPEG", quality=quality)
    else:
        Image.fromarray(array, "RGBA").save(buf, format="PNG", optimize=True)
    return f"data:image/{kind};base64," + base64.b64encode(buf.getvalue()).decode()


def _overlay(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    mask = mask.astype(bool)
    edge = mask & ~ndimage.binary_erosion(mask, iterations=1)
    rgba = np.zeros(mask.shape + (4,), np.uint8)
    rgba[mask] = (255, 150, 0, 70)
    rgba[edge] = (255, 120, 0, 255)
    return rgba


def example_files(suffix: str = "") -> dict[str, tuple[str, Path]]:
    """For each series, (profile, path) of ``data/examples/<profile>/<series><suffix>.npz`` for
    the largest-scale profile present: the example images, or with ``suffix="-predictions"``
    the predicted masks (``hrtem-tl examples SERIES --predictions``)."""
    found = {}
    for series in ("noise", "structure"):
        for profile in M.PROFILE_ORDER:
            path = EXAMPLES / profile / f"{series}{suffix}.npz"
            if path.exists():
                found[series] = (profile, path)
                break
    return found


def _domain_title(series: str, name: str, dose: float, defocus: float) -> tuple[str, str]:
    """(long title, short slider label) of a domain."""
    from hrtem_tl.series import SIZE_RADII

    if series == "noise":
        return f"noise series: {dose:g} e⁻/Å², defocus {defocus:g} nm", f"{dose:g}"
    lattice, size = parse_structure_domain(name)
    lo, hi = SIZE_RADII[size]
    return (f"structure series: {formula(lattice)}, {size} particles (radius {lo / 10:g}–{hi / 10:g} nm), "
            f"{dose:g} e⁻/Å²", f"{formula(lattice)} {size[0].upper()}")


def examples_figure(quality: int = 75):
    """Interactive example images: a slider over domains, a mask switch and a scale bar.

    Images are embedded as JPEG (``quality``), masks as transparent PNG overlays.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    files = example_files()
    if not files:
        return None
    entries = []  # (title, label, images, masks, pixel size [nm])
    for series, (profile, path) in files.items():
        with np.load(path) as data:
            for d, name in enumerate(data["domains"]):
                title, label = _domain_title(series, str(name), float(data["dose"][d]), float(data["defocus_nm"][d]))
                entries.append((title, label, data["images"][d], data["masks"][d], float(data["pixel_size"]) / 10))
    k = max(e[2].shape[0] for e in entries)
    fig = make_subplots(rows=1, cols=k, horizontal_spacing=0.02,
                        subplot_titles=[f"validation image {j + 1}" for j in range(k)])
    masks, spans = [], []
    for i, (title, _, images, labels, px) in enumerate(entries):
        first = len(fig.data)
        for j in range(images.shape[0]):
            common = dict(dx=px, dy=px, x0=px / 2, y0=px / 2, visible=(i == 0), hoverinfo="skip")
            fig.add_trace(go.Image(source=_data_uri(images[j], "jpeg", quality), name=title, **common),
                          row=1, col=j + 1)
            fig.add_trace(go.Image(source=_data_uri(_overlay(labels[j]), "png"), name="mask", opacity=1.0, **common),
                          row=1, col=j + 1)
            masks.append(len(fig.data) - 1)
        spans.append((first, len(fig.data)))
    steps = []
    for (title, label, *_), (lo, hi) in zip(entries, spans):
        visible = [lo <= t < hi for t in range(len(fig.data))]
        steps.append({"label": label, "method": "update",
                      "args": [{"visible": visible}, {"title.text": title}]})
    n, px = entries[0][2].shape[-1], entries[0][4]
    field = n * px
    bar = next(b for b in (10, 5, 2, 1, 0.5, 0.2) if b <= field / 4)
    for j in range(k):
        ref = "" if j == 0 else str(j + 1)
        x0, y = 0.06 * field, 0.93 * field
        fig.add_shape(type="line", x0=x0, x1=x0 + bar, y0=y, y1=y, xref=f"x{ref}", yref=f"y{ref}",
                      line={"color": "white", "width": 5})
        fig.add_annotation(x=x0 + bar / 2, y=y - 0.02 * field, text=f"<b>{bar:g} nm</b>", showarrow=False,
                           yanchor="bottom", xref=f"x{ref}", yref=f"y{ref}", font={"color": "white", "size": 13},
                           bgcolor="rgba(0,0,0,0.45)")
        fig.update_xaxes(visible=False, row=1, col=j + 1, range=[0, field])
        fig.update_yaxes(visible=False, row=1, col=j + 1, range=[field, 0], scaleanchor=f"x{ref}")
    profiles = ", ".join(sorted({f"{s}: {p}" for s, (p, _) in files.items()}))
    fig.update_layout(
        height=560, margin={"l": 10, "r": 40, "t": 90, "b": 110}, template="plotly_white",
        modebar={"orientation": "v"},
        title={"text": entries[0][0], "font": {"size": 14}, "x": 0.01, "xanchor": "left", "y": 0.97},
        sliders=[{"steps": steps, "active": 0, "x": 0.0, "len": 1.0, "y": -0.02, "yanchor": "top",
                  "pad": {"t": 10}, "currentvalue": {"visible": False},
                  "font": {"size": 10}}],
        updatemenus=[{"type": "buttons", "direction": "right", "x": 1, "xanchor": "right", "y": 1.1,
                      "yanchor": "bottom", "showactive": True, "active": 0,
                      "buttons": [{"label": "mask on", "method": "restyle", "args": [{"opacity": 1.0}, masks]},
                                  {"label": "mask off", "method": "restyle", "args": [{"opacity": 0.0}, masks]}]}],
        annotations=list(fig.layout.annotations) + [dict(
            text=f"domain (dose in e⁻/Å², or lattice with S/L = small/large particles) · data profile {profiles} "
                 "· orange: label mask", x=0, y=-0.2, xref="paper", yref="paper", xanchor="left",
            yanchor="top", showarrow=False, font={"size": 11})],
    )
    return fig


def _case_title(series: str, pretrain: str, target: str) -> str:
    if series == "noise":
        return f"pretrained at {pretrain.removeprefix('dose')}, transferred to {target.removeprefix('dose')} e⁻/Å²"
    return f"pretrained on {formula(pretrain)}, transferred to {formula(target)}".replace("_", " ")


def predictions_figure(quality: int = 80):
    """Per case (row): the first test image with its true mask and with the predicted mask,
    switched between before and after transfer by two buttons; Dice of that image in the titles."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    files = example_files("-predictions")
    if not files:
        return None
    rows = []  # (title, image, truth, before, after, dice before, dice after, pixel size [nm], profile)
    for series, (profile, path) in files.items():
        with np.load(path) as d:
            for c in range(len(d["target"])):
                rows.append((_case_title(series, str(d["pretrain"][c]), str(d["target"][c])), d["images"][c, 0],
                             d["masks"][c, 0], d["before"][c, 0], d["after"][c, 0], float(d["dice_before"][c, 0]),
                             float(d["dice_after"][c, 0]), float(d["pixel_size"]) / 10, profile))
    titles = [t for r in rows for t in (f"{r[0]}: true mask", f"predicted, before transfer (Dice {r[5]:.2f})")]
    fig = make_subplots(rows=len(rows), cols=2, horizontal_spacing=0.02, vertical_spacing=0.06,
                        subplot_titles=titles)
    before, after, predicted = [], [], []
    for i, (_, image, truth, pre, post, _, _, px, _) in enumerate(rows):
        common = dict(dx=px, dy=px, x0=px / 2, y0=px / 2, hoverinfo="skip")
        picture = _data_uri(image, "jpeg", quality)
        for col, mask in ((1, truth), (2, pre)):
            fig.add_trace(go.Image(source=picture, **common), row=i + 1, col=col)
            fig.add_trace(go.Image(source=_data_uri(_overlay(mask), "png"), **common), row=i + 1, col=col)
        predicted.append(len(fig.data) - 1)
        before.append(_data_uri(_overlay(pre), "png"))
        after.append(_data_uri(_overlay(post), "png"))
        field = image.shape[-1] * px
        for col in (1, 2):
            k = 2 * i + col  # subplot number: axes x, x2, x3, ...
            fig.update_xaxes(visible=False, range=[0, field], row=i + 1, col=col)
            fig.update_yaxes(visible=False, range=[field, 0], scaleanchor=f"x{k if k > 1 else ''}", row=i + 1, col=col)
    heads = [2 * i + 1 for i in range(len(rows))]  # the annotation index of each row's prediction title

    def titles_for(stage: int) -> dict:
        return {f"annotations[{a}].text": f"predicted, {('before', 'after')[stage]} transfer "
                                          f"(Dice {rows[i][5 + stage]:.2f})" for i, a in enumerate(heads)}
    profiles = ", ".join(sorted({f"{s}: {p}" for s, (p, _) in files.items()}))
    fig.update_layout(
        height=330 * len(rows), margin={"l": 10, "r": 10, "t": 70, "b": 40}, template="plotly_white",
        updatemenus=[{"type": "buttons", "direction": "right", "x": 0, "xanchor": "left", "y": 1.0, "yanchor": "bottom",
                      "pad": {"b": 30}, "showactive": True, "active": 0, "buttons": [
                          {"label": "before transfer", "method": "update",
                           "args": [{"source": before}, titles_for(0), predicted]},
                          {"label": "after transfer", "method": "update",
                           "args": [{"source": after}, titles_for(1), predicted]}]}],
    )
    fig.add_annotation(text=f"first test image of the target domain · orange: particle pixels · data profile {profiles}",
                       x=0, y=-0.02, xref="paper", yref="paper", xanchor="left", yanchor="top", showarrow=False,
                       font={"size": 11})
    return fig


def curves_figure(datasets: list[SeriesData]):
    """Validation loss per epoch: median and interquartile band, by stage and freezing."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    datasets = [d for d in datasets if d.ok and d.histories is not None and not d.histories.empty]
    if not datasets:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("pretraining", "transfer learning"), horizontal_spacing=0.1)
    colours = {"noise": "#1f77b4", "structure": "#d62728"}
    dashes = {"none": "solid", "encoder": "dash", "decoder": "dot", "": "solid"}
    for data in datasets:
        h = data.histories.merge(data.runs[["run_id", "pretrain_id", "freezing"]], on="run_id")
        pre = h[h["stage"] == "pretrain"].drop_duplicates(["pretrain_id", "epoch"]).assign(freezing="")
        post = h[h["stage"] == "transfer"]
        for col, frame in ((1, pre), (2, post)):
            for mode, part in frame.groupby("freezing"):
                q = part.groupby("epoch")["val_loss"].quantile([0.25, 0.5, 0.75]).unstack()
                name = data.name + (f", {mode} frozen" if mode and mode != "none" else
                                    (", full fine-tuning" if mode == "none" else ""))
                colour = colours.get(data.name, "#555")
                fig.add_trace(go.Scatter(x=list(q.index) + list(q.index[::-1]),
                                         y=list(q[0.75]) + list(q[0.25][::-1]), fill="toself", opacity=0.15,
                                         line={"width": 0, "color": colour}, hoverinfo="skip", showlegend=False),
                              row=1, col=col)
                fig.add_trace(go.Scatter(x=q.index, y=q[0.5], name=name, mode="lines+markers",
                                         line={"color": colour, "dash": dashes.get(mode, "solid")}), row=1, col=col)
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_yaxes(title_text="validation loss (cross-entropy on logits)", row=1, col=1)
    fig.update_layout(height=420, template="plotly_white", margin={"l": 60, "r": 10, "t": 40, "b": 50},
                      legend={"orientation": "h", "y": -0.2})
    return fig


def size_cells(data: SeriesData) -> pd.DataFrame:
    """After-TL target metrics of a series' full fine-tuning runs, with their transfer-set size."""
    return M.size_cells(data.runs, data.evaluations)


def size_figure(data: SeriesData):
    """After-TL loss and Dice on the target against the transfer-set size (one box per size)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not data.ok:
        return None
    cells = size_cells(data)
    sizes = sorted(cells["transfer_images"].unique())
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss on the target (lower is better)",
                                                        "Dice on the target (higher is better)"),
                        horizontal_spacing=0.12)
    for col, metric in ((1, "loss"), (2, "dice")):
        for n in sizes:
            part = cells[cells["transfer_images"] == n]
            fig.add_trace(go.Box(y=part[metric], name=str(n), boxpoints="all", jitter=0.4, pointpos=0,
                                 marker={"size": 4, "color": "#1f77b4"}, line={"color": "#1f77b4"},
                                 customdata=part[["pretrain_domain", "target_domain"]],
                                 hovertemplate="%{customdata[0]} → %{customdata[1]}: %{y:.3f}<extra></extra>",
                                 showlegend=False), row=1, col=col)
    fig.update_xaxes(title_text="transfer-set size (images)", type="category")
    fig.update_layout(height=400, template="plotly_white", margin={"l": 50, "r": 10, "t": 40, "b": 50})
    return fig


def dose_figure(frame: pd.DataFrame):
    """Dice per dose: the pretrained model on its own dose and on all doses, the transferred
    models on their target (mean, with the range over pretraining doses as error bars).

    ``frame`` is the per-dose table of the results page (one row per dose, in dose order).
    """
    import plotly.graph_objects as go

    x = frame["dose (e⁻/Å²)"]
    mean, spread = frame["transferred here: mean Dice"], frame["transferred here: range over sources"]
    fig = go.Figure([
        go.Scatter(x=x, y=frame["pretrained here: Dice on own dose"], name="pretrained here, on its own dose",
                   mode="lines+markers", marker={"symbol": "circle"}),
        go.Scatter(x=x, y=frame["pretrained here: mean Dice over all doses"], name="pretrained here, mean over all doses",
                   mode="lines+markers", marker={"symbol": "square"}, line={"dash": "dot"}),
        go.Scatter(x=x, y=mean, name="transferred here, mean over pretraining doses (bars: range)",
                   mode="lines+markers", marker={"symbol": "diamond"},
                   error_y={"type": "data", "symmetric": False, "array": (frame["transferred here: max"] - mean),
                            "arrayminus": (mean - frame["transferred here: min"])} if spread.notna().any() else None),
    ])
    fig.update_xaxes(title_text="dose (e⁻/Å²)", type="category")
    fig.update_yaxes(title_text="Dice (test images)")
    fig.update_layout(height=380, template="plotly_white", margin={"l": 60, "r": 10, "t": 20, "b": 50},
                      legend={"orientation": "h", "y": -0.25, "x": 0})
    return fig


def size_cost_figure(sizes: pd.DataFrame):
    """Dumbbells per lattice: Dice lost by a model of the other particle size, after pretraining
    and after transfer learning to the right size (0: as good as the model of the right size)."""
    import plotly.graph_objects as go

    y = [formula(v) for v in sizes["lattice"]]
    before, after = sizes["cost of the other size, after pretraining"], sizes["after TL"]
    fig = go.Figure()
    for yi, b, a in zip(y, before, after):
        fig.add_trace(go.Scatter(x=[b, a], y=[yi, yi], mode="lines", line={"color": "#999", "width": 2},
                                 hoverinfo="skip", showlegend=False))
    fig.add_trace(go.Scatter(x=before, y=y, mode="markers", name="after pretraining", marker={"size": 10}))
    fig.add_trace(go.Scatter(x=after, y=y, mode="markers", name="after transfer to the right size",
                             marker={"size": 10, "symbol": "diamond"}))
    fig.add_vline(x=0, line={"color": "#666", "width": 1})
    fig.update_xaxes(title_text="Dice lost against the model of the right size")
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=80 + 34 * len(y), template="plotly_white", margin={"l": 70, "r": 10, "t": 20, "b": 50},
                      legend={"orientation": "h", "y": -0.3, "x": 0})
    return fig


# --------------------------------------------------------------------------- agreement
AGREEMENT_SERIES = {"noise": "doses", "structure": "lattices (small particles)"}


def _loss_matrices(runs: pd.DataFrame, evals: pd.DataFrame, series: str) -> dict[str, np.ndarray]:
    from hrtem_tl.explore import series_domains
    from hrtem_tl.results import matrices

    mats = matrices(runs, evals, freezing={"none", "encoder", "decoder"}, metric="loss", reduction="median",
                    domains=series_domains(series))
    return {k: v["value"].to_numpy(dtype=float) for k, v in mats.items()}


def _axis_shares(runs: pd.DataFrame, evals: pd.DataFrame) -> tuple[float, float]:
    """Share of the loss matrix's spread explained by the target axis, before and after TL
    (cells on the series' domains; the transfer matrix without its diagonal)."""
    pre = S.variance_shares(M.model_cells(runs, evals, "pretrain"), "loss")
    post = S.variance_shares(M.model_cells(runs, evals, "transfer"), "loss", exclude_diagonal=True)
    return pre["col"], post["col"]


def agreement_table(root: Path = RESULTS) -> pd.DataFrame | None:
    """Per matrix figure and stage: Spearman rank correlation of our median loss cells
    with the original's (all freezing options pooled; the transfer matrix without its
    diagonal), beside the same correlation between our two seeds (how well we agree with
    ourselves), and the share of the spread the target axis explains in each source."""
    from hrtem_tl.explore import rank_agreement

    rows = []
    for series, axis in AGREEMENT_SERIES.items():
        ours = load(series, root)
        try:
            theirs = read_results(root / "original", series)
        except ResultsError:
            continue
        if not ours.ok:
            continue
        a = _loss_matrices(ours.runs, ours.evaluations, series)
        b = _loss_matrices(theirs["runs"], theirs["evaluations"], series)
        seeds = sorted(ours.runs["seed"].unique())
        by_seed = None
        if len(seeds) >= 2:
            pick = lambda s: (ours.runs[ours.runs["seed"] == s],  # noqa: E731
                              ours.evaluations[ours.evaluations["run_id"].isin(ours.runs.loc[ours.runs["seed"] == s, "run_id"])])
            by_seed = (_loss_matrices(*pick(seeds[0]), series), _loss_matrices(*pick(seeds[1]), series))
        share_ours = _axis_shares(ours.runs, ours.evaluations)
        share_theirs = _axis_shares(theirs["runs"], theirs["evaluations"])
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
