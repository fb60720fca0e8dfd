"""Plotly figures of the results pages, built from the stored results (``_pages.load``).

Figures whose panels sit side by side carry a phone layout (:func:`stack_when_narrow`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hrtem_tl.series import parse_structure_domain

from _pages import M, S, SeriesData, formula


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


def stack_when_narrow(fig, panel_px: int = 280, gap_px: int = 110) -> None:
    """Give a one-row figure of side-by-side panels a phone layout: panels stacked, each
    ``panel_px`` tall with ``gap_px`` between them for the axis title and the next panel's
    title. Stored as ``layout.meta.narrow`` (Plotly attribute strings), which the site's
    script applies where the figure is narrower than the explorers' breakpoint (640 px)."""
    n = sum(1 for key in fig.layout.to_plotly_json() if key.startswith("xaxis"))
    plot = n * panel_px + (n - 1) * gap_px
    margin = fig.layout.margin
    patch = {"height": plot + (margin.t or 0) + (margin.b or 0)}
    for k in range(n):
        top = 1 - k * (panel_px + gap_px) / plot
        suffix = str(k + 1) if k else ""
        patch[f"xaxis{suffix}.domain"] = [0, 1]
        patch[f"yaxis{suffix}.domain"] = [max(top - panel_px / plot, 0), top]
        if k < len(fig.layout.annotations):  # make_subplots' panel titles come first, in panel order
            patch[f"annotations[{k}].x"], patch[f"annotations[{k}].y"] = 0.5, top
    fig.update_layout(meta={"narrow": patch})


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
                                 text=part["pretrain_domain"] + " → " + part["target_domain"],
                                 hovertemplate="%{text}: %{y:.3f}<extra></extra>",
                                 showlegend=False), row=1, col=col)
    fig.update_xaxes(title_text="transfer-set size (images)", type="category")
    fig.update_layout(height=400, template="plotly_white", margin={"l": 50, "r": 10, "t": 40, "b": 50})
    stack_when_narrow(fig)
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
        go.Scatter(x=x, y=mean, name="transferred here, mean over<br>pretraining doses (bars: range)",
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


FREEZING_LABELS = {"none": "nothing", "encoder": "encoder", "decoder": "decoder"}


def freezing_figure(datasets: list[SeriesData]):
    """Dice on the target per transfer pair (mean over seeds) for each freezing option, one
    thin line per pair and the median over pairs as a bold red line; one panel per series."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ok = [d for d in datasets if d.ok]
    if not ok:
        return None
    fig = make_subplots(rows=1, cols=len(ok), horizontal_spacing=0.1,
                        subplot_titles=[f"{d.name} series ({d.profile})" for d in ok])
    for col, data in enumerate(ok, start=1):
        post = M.model_cells(data.runs, data.evaluations, "transfer")
        post = post.assign(pair=post["pretrain_domain"] + " → " + post["target_domain"])
        per = post.groupby(["pair", "freezing"])["dice"].mean().unstack()
        per = per[[m for m in FREEZING_LABELS if m in per.columns]].dropna()
        x = [FREEZING_LABELS[m] for m in per.columns]
        xs, ys, names = [], [], []
        for pair, row in per.iterrows():  # one trace, pairs separated by gaps: light to draw
            xs += [*x, None]
            ys += [*row.to_numpy(), None]
            names += [pair] * len(x) + [None]
        fig.add_trace(go.Scatter(x=xs, y=ys, text=names, mode="lines+markers", showlegend=False,
                                 line={"color": "rgba(31,119,180,0.3)", "width": 1},
                                 marker={"size": 3, "color": "rgba(31,119,180,0.5)"},
                                 hovertemplate="%{text}, %{x} frozen: Dice %{y:.3f}<extra></extra>"), row=1, col=col)
        fig.add_trace(go.Scatter(x=x, y=per.median().to_numpy(), mode="lines+markers", name="median over pairs",
                                 line={"color": "#d62728", "width": 3}, marker={"size": 8}, showlegend=False,
                                 hovertemplate=f"{len(per)} pairs, %{{x}} frozen: median Dice %{{y:.3f}}<extra></extra>"),
                      row=1, col=col)
    fig.update_xaxes(title_text="frozen during transfer", type="category")
    fig.update_yaxes(title_text="Dice on the target", col=1)
    fig.update_layout(height=400, template="plotly_white", margin={"l": 60, "r": 10, "t": 40, "b": 60})
    stack_when_narrow(fig)
    return fig


def lattice_stats(pre: pd.DataFrame, post: pd.DataFrame) -> pd.DataFrame:
    """Per lattice (its small-particle domain as the evaluated or target domain): Dice of its
    own pretrained model (mean over seeds), of the other lattices' pretrained models on it and
    after transfer learning to it, each a mean over source lattices (every source averaged
    over seeds and freezing options first) with a 95 % t interval over sources. Sorted by
    the Dice after TL, lattices without it first."""
    rows = []
    for d in sorted(set(pre["eval_domain"])):
        own = pre[(pre["pretrain_domain"] == d) & (pre["eval_domain"] == d)]["dice"]
        others = pre[(pre["pretrain_domain"] != d) & (pre["eval_domain"] == d)].groupby("pretrain_domain")["dice"].mean()
        after = post[post["target_domain"] == d].groupby("pretrain_domain")["dice"].mean()
        row = {"domain": d, "lattice": parse_structure_domain(d)[0], "own model": own.mean()}
        for name, values in (("other models", others), ("after TL", after)):
            st = S.paired(values.to_numpy())
            row |= {name: st["estimate"], f"{name} lo": st["lo"], f"{name} hi": st["hi"], f"{name} sources": st["n"]}
        rows.append(row)
    return pd.DataFrame(rows).sort_values("after TL", na_position="first").reset_index(drop=True)


def lattice_figure(stats: pd.DataFrame):
    """Dots with 95 % intervals per lattice (rows, sorted by Dice after TL): the other
    lattices' pretrained models on it, the same after transfer learning to it, and its own
    pretrained model (no interval: a mean over seeds)."""
    import plotly.graph_objects as go

    y = [formula(v) for v in stats["lattice"]]
    fig = go.Figure()
    for name, label, symbol in (("other models", "other lattices' pretrained models", "circle"),
                                ("after TL", "after transfer learning to it", "diamond")):
        fig.add_trace(go.Scatter(
            x=stats[name], y=y, mode="markers", name=label, marker={"size": 10, "symbol": symbol},
            error_x={"type": "data", "symmetric": False, "array": stats[f"{name} hi"] - stats[name],
                     "arrayminus": stats[name] - stats[f"{name} lo"], "thickness": 1.5},
            customdata=np.stack([stats[f"{name} lo"], stats[f"{name} hi"], stats[f"{name} sources"]], axis=1),
            hovertemplate="%{y}: Dice %{x:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}] over "
                          "%{customdata[2]} source lattices<extra>" + label + "</extra>"))
    fig.add_trace(go.Scatter(x=stats["own model"], y=y, mode="markers", name="its own pretrained model",
                             marker={"size": 11, "symbol": "x-thin", "line": {"width": 2.5}},
                             hovertemplate="%{y}: own model, Dice %{x:.3f}<extra></extra>"))
    fig.update_xaxes(title_text="Dice on the lattice's test images")
    fig.update_layout(height=130 + 36 * len(y), template="plotly_white", margin={"l": 70, "r": 10, "t": 10, "b": 50},
                      legend={"orientation": "h", "x": 0, "y": -0.18, "yanchor": "top"})
    return fig
