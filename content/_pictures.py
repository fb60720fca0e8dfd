"""Micrographs and masks for the pages: the example images of each domain and the predicted
masks before and after transfer learning, read from ``data/examples`` (written by
``hrtem-tl examples``; nothing is simulated or trained here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hrtem_tl.series import parse_structure_domain

from _pages import EXAMPLES, M, formula, load


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


def prediction_provenance(series: str, profile: str, d) -> str:
    """Which stored run of ``profile`` the predictions file ``d`` (an open npz) repeats, or why it matches none."""
    freezing = {"none": "nothing frozen"}.get(str(d["freezing"]), f"{d['freezing']} frozen")
    run = f"runs with {freezing}, seed {int(d['seed'])}"
    data = load(series)
    stored = set(data.runs[data.runs["profile"] == profile]["config_hash"]) if data.ok else set()
    if "config_hash" not in d.files or str(d["config_hash"]) not in stored:
        return (f"These models are meant to repeat the {run}, but <strong>the file was made with other settings than "
                f"the stored {profile} {series} runs</strong> (or records none), so its masks may differ from the "
                f"models those runs trained: <code>hrtem-tl examples {series} --profile {profile} --predictions</code> "
                "remakes it, at the precision of the stored runs.")
    return (f"These models repeat the stored {run} ({d['precision']}, settings hash <code>{d['config_hash']}</code>, "
            "as the stored runs).")


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
        height=560, margin={"l": 10, "r": 40, "t": 100, "b": 110}, template="plotly_white",
        modebar={"orientation": "v"},
        title={"text": entries[0][0], "font": {"size": 14}, "x": 0.01, "xanchor": "left", "y": 0.97},
        sliders=[{"steps": steps, "active": 0, "x": 0.0, "len": 1.0, "y": -0.02, "yanchor": "top",
                  "pad": {"t": 10}, "currentvalue": {"visible": False},
                  "font": {"size": 10}}],
        updatemenus=[{"type": "buttons", "direction": "right", "x": 0, "xanchor": "left", "y": 1.0,
                      "yanchor": "bottom", "pad": {"b": 34}, "showactive": True, "active": 0,
                      "buttons": [{"label": "mask on", "method": "restyle", "args": [{"opacity": 1.0}, masks]},
                                  {"label": "mask off", "method": "restyle", "args": [{"opacity": 0.0}, masks]}]}],
        annotations=list(fig.layout.annotations) + [dict(
            text=f"domain: dose in e⁻/Å², or lattice (S/L: small/large particles)<br>data profile {profiles} "
                 "· orange: label mask", x=0, y=-0.2, xref="paper", yref="paper", xanchor="left",
            yanchor="top", showarrow=False, font={"size": 11})],
        meta={"narrow": {"height": 440}},  # two panels of a phone's width: less height to fill
    )
    return fig


def _case_title(series: str, pretrain: str, target: str) -> str:
    if series == "noise":
        return f"pretrained at {pretrain.removeprefix('dose')}, transferred to {target.removeprefix('dose')} e⁻/Å²"
    return f"pretrained on {formula(pretrain)}, transferred to {formula(target)}".replace("_", " ")


def _row_layout(rows: int, panel_px: int, head_px: int, top_px: int = 116, bottom_px: int = 30) -> dict:
    """Plotly attribute strings placing ``rows`` rows of two square panels ``panel_px`` tall,
    ``head_px`` apart (room for the titles above each row), for :func:`predictions_figure`:
    the height, each axis' vertical domain and each title's position."""
    plot = rows * panel_px + (rows - 1) * head_px
    out = {"height": top_px + plot + bottom_px}
    for i in range(rows):
        top = 1 - i * (panel_px + head_px) / plot
        for col in (1, 2):
            k = 2 * i + col
            out[f"yaxis{k if k > 1 else ''}.domain"] = [max(top - panel_px / plot, 0), top]
            out[f"annotations[{k - 1}].y"] = top  # the panel's title
        out[f"annotations[{2 * rows + i}].y"] = top  # the case's line
    return out


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

    def predicted(i: int, stage: int) -> str:
        return f"predicted {('before', 'after')[stage]} TL<br>Dice {rows[i][5 + stage]:.2f}"
    titles = [t for i in range(len(rows)) for t in ("true mask<br> ", predicted(i, 0))]
    fig = make_subplots(rows=len(rows), cols=2, horizontal_spacing=0.03, subplot_titles=titles)
    before, after, predicted_traces = [], [], []
    for i, (_, image, truth, pre, post, _, _, px, _) in enumerate(rows):
        common = dict(dx=px, dy=px, x0=px / 2, y0=px / 2, hoverinfo="skip")
        picture = _data_uri(image, "jpeg", quality)
        for col, mask in ((1, truth), (2, pre)):
            fig.add_trace(go.Image(source=picture, **common), row=i + 1, col=col)
            fig.add_trace(go.Image(source=_data_uri(_overlay(mask), "png"), **common), row=i + 1, col=col)
        predicted_traces.append(len(fig.data) - 1)
        before.append(_data_uri(_overlay(pre), "png"))
        after.append(_data_uri(_overlay(post), "png"))
        field = image.shape[-1] * px
        for col in (1, 2):
            k = 2 * i + col  # subplot number: axes x, x2, x3, ...
            fig.update_xaxes(visible=False, range=[0, field], row=i + 1, col=col)
            fig.update_yaxes(visible=False, range=[field, 0], scaleanchor=f"x{k if k > 1 else ''}", row=i + 1, col=col)
    for i, row in enumerate(rows):  # the case, on its own line above the row's panel titles
        fig.add_annotation(text=f"<b>{row[0]}</b>", x=0, y=1, xref="paper", yref="paper", xanchor="left",
                           yanchor="bottom", yshift=40, showarrow=False, font={"size": 13})
    for a in fig.layout.annotations[:2 * len(rows)]:
        a.font = {"size": 13}
    heads = [2 * i + 1 for i in range(len(rows))]  # the annotation index of each row's prediction title

    def titles_for(stage: int) -> dict:
        return {f"annotations[{a}].text": predicted(i, stage) for i, a in enumerate(heads)}
    profiles = ", ".join(sorted({f"{s}: {p}" for s, (p, _) in files.items()}))
    head_px = 70  # above each row: the case's line and the two-line panel titles
    fig.update_layout(
        margin={"l": 10, "r": 10, "t": head_px + 46, "b": 30}, template="plotly_white",
        updatemenus=[{"type": "buttons", "direction": "right", "x": 0, "xanchor": "left", "y": 1.0, "yanchor": "bottom",
                      "pad": {"b": head_px + 8}, "showactive": True, "active": 0, "buttons": [
                          {"label": "before transfer", "method": "update",
                           "args": [{"source": before}, titles_for(0), predicted_traces]},
                          {"label": "after transfer", "method": "update",
                           "args": [{"source": after}, titles_for(1), predicted_traces]}]}],
    )
    fig.add_annotation(text=f"data: {profiles}", x=0, y=0, xref="paper", yref="paper", xanchor="left",
                       yanchor="top", yshift=-8, showarrow=False, font={"size": 11})
    for key, value in _row_layout(len(rows), panel_px=310, head_px=head_px).items():
        fig.layout[key] = value
    fig.update_layout(meta={"narrow": _row_layout(len(rows), panel_px=160, head_px=head_px)})
    return fig
