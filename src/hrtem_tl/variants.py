"""Kernel-free explorers over precomputed figure variants.

An explorer is one base Plotly figure, a list of :class:`Control` (drop-down menus) and,
for every combination of control values that has data, the trace properties and layout
entries that differ from the base (a *variant*). :func:`variant_html` embeds all of it
as JSON beside ``variants.js``, which redraws the figure with ``window.Plotly`` when a
menu changes and greys out options that have no variant with the other choices (a
metric a data source lacks, say). No kernel is needed.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

SCRIPT = Path(__file__).with_name("variants.js")


@dataclass(frozen=True)
class Control:
    """A drop-down menu: ``options`` are (value, title) pairs; ``default`` a value."""

    name: str
    label: str
    options: tuple[tuple[str, str], ...]
    default: str

    def __post_init__(self):
        if self.default not in {v for v, _ in self.options}:
            raise ValueError(f"control {self.name!r}: default {self.default!r} is not among its options")


def compact(value, digits: int = 4):
    """Numbers to ``digits`` significant digits, NaN and inf to ``None``, arrays to lists."""
    if isinstance(value, dict):
        return {k: compact(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [compact(v, digits) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else float(f"{value:.{digits}g}")
    if isinstance(value, np.integer):
        return int(value)
    return value


def variant_payload(figure: go.Figure, controls: list[Control], variants: dict[tuple, dict], note: str = "") -> dict:
    """The explorer's JSON payload; ``variants`` maps control-value tuples to
    ``{"traces": [props per trace], "layout": {dotted.path: value}, "note": str}``."""
    if not variants:
        raise ValueError("an explorer needs at least one variant")
    names = [c.name for c in controls]
    table = {}
    for key, variant in variants.items():
        if len(key) != len(controls):
            raise ValueError(f"variant key {key!r} does not give one value per control ({', '.join(names)})")
        table["|".join(map(str, key))] = compact(variant)
    first = "|".join(c.default for c in controls)
    if first not in table:
        raise ValueError(f"no variant for the default choice {first!r}")
    base = json.loads(figure.to_json())
    base.pop("config", None)
    return {"controls": [{"name": c.name, "label": c.label, "options": [list(o) for o in c.options],
                          "default": c.default} for c in controls],
            "figure": {"data": base["data"], "layout": base["layout"]}, "variants": table, "note": note}


def variant_html(element_id: str, payload: dict, caption: str = "") -> str:
    """A self-contained HTML fragment (controls, data, script) for a static page."""
    from .explore import STYLE, TOOLS

    data = json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    uid = html.escape(element_id)
    head = f'<p class="hrtem-note">{html.escape(caption)}</p>' if caption else ""
    return (f'{STYLE}<div class="hrtem-explorer" id="{uid}">{head}</div>\n'
            f'<script type="application/json" id="{uid}-data">{data}</script>\n'
            f"<script>{TOOLS.read_text()}{SCRIPT.read_text()}\nhrtemVariants({json.dumps(element_id)});</script>")
