"""The live explorer served by Voila: ipywidgets controls over the results store.

Beyond the static page's controls (freezing subset, metric, reduction, profile) it
filters by seed and by transfer-set size, recomputing the matrices on each change.
"""

from __future__ import annotations

from pathlib import Path

import ipywidgets as w
import pandas as pd
from IPython.display import display

from .explore import METRIC_TITLES, matrix_figure
from .metrics import METRICS
from .results import REDUCTIONS, ResultsError, read_results, transfers
from .series import FREEZING

ALL = "all"


class ExplorerApp:
    """Controls and an output area; ``widget`` is what the notebook displays."""

    def __init__(self, results_root: Path):
        self.root = Path(results_root)
        self.tables: dict[str, dict[str, pd.DataFrame]] = {}
        for series in ("noise", "structure"):
            try:
                self.tables[series] = read_results(self.root, series)
            except ResultsError:
                continue
        if not self.tables:
            raise ResultsError(f"no results under {self.root}; run hrtem-tl study noise --profile cpu")
        first = next(iter(self.tables))
        self.series = w.ToggleButtons(options=list(self.tables), value=first, description="series")
        self.profile = w.Dropdown(description="profile")
        self.freezing = [w.Checkbox(value=True, description=m, indent=False, layout={"width": "auto"}) for m in FREEZING]
        self.metric = w.Dropdown(options=[(METRIC_TITLES[m], m) for m in METRICS], value="loss", description="metric")
        self.reduction = w.Dropdown(options=REDUCTIONS, value="median", description="reduction")
        self.seed = w.Dropdown(description="seed")
        self.size = w.Dropdown(description="TL images")
        self.status = w.HTML()
        self.out = w.Output()
        self._busy = False
        self.series.observe(self._series_changed, "value")
        for control in [self.profile, self.metric, self.reduction, self.seed, self.size, *self.freezing]:
            control.observe(lambda _: self.redraw(), "value")
        frz = w.HBox([w.Label("frozen during transfer:"), *self.freezing])
        self.widget = w.VBox([self.series, w.HBox([self.profile, self.metric, self.reduction]),
                              w.HBox([frz, self.seed, self.size]), self.status, self.out])
        self._series_changed()

    def _filters(self):
        runs = self.tables[self.series.value]["runs"]
        return runs[runs["profile"] == self.profile.value] if self.profile.value else runs

    def _series_changed(self, *_):
        runs = self.tables[self.series.value]["runs"]
        self._busy = True  # one redraw for the whole change, not one per control
        for control, options in ((self.profile, sorted(runs["profile"].unique())),
                                 (self.seed, [ALL, *sorted(runs["seed"].unique().tolist())]),
                                 (self.size, [ALL, *sorted(runs["transfer_images"].unique().tolist())])):
            control.options = options
            control.value = options[0]
        self._busy = False
        self.redraw()

    def selection(self) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
        """Runs and evaluations matching every control, and the chosen freezing modes."""
        tables = self.tables[self.series.value]
        runs = self._filters()
        if self.seed.value not in (ALL, None):
            runs = runs[runs["seed"] == self.seed.value]
        if self.size.value not in (ALL, None):
            runs = runs[runs["transfer_images"] == self.size.value]
        freezing = [c.description for c in self.freezing if c.value]
        evals = tables["evaluations"][tables["evaluations"]["run_id"].isin(runs["run_id"])]
        return runs, evals, freezing

    def redraw(self):
        if self._busy:
            return
        runs, evals, freezing = self.selection()
        self.out.clear_output(wait=True)
        with self.out:
            if not freezing:
                self.status.value = "<b>Choose at least one freezing mode.</b>"
                return
            if runs.empty:
                self.status.value = "<b>No runs match these filters.</b>"
                return
            chosen = transfers(runs)
            self.status.value = f"{int(chosen['freezing'].isin(freezing).sum())} transfer runs match."
            fig = matrix_figure(runs, evals, self.series.value, freezing=freezing, metric=self.metric.value,
                                reduction=self.reduction.value, profile=self.profile.value)
            display(fig)

