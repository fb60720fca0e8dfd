"""How long a sweep of a series still has to run: pending runs timed from stored ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .experiment import run_config_hash
from .results import DEFAULT_RESULTS, StaleResultsError, failed_runs, finished_runs
from .series import Series
from .study import check_runs_fast, plan, sweep_precision


def projection(series: Series, results_root: Path = DEFAULT_RESULTS, workers: int = 1,
               freezing: tuple[str, ...] | None = None, precision: str = "auto",
               rates_from: tuple[Path, ...] = ()) -> dict:
    """What a sweep of ``series`` still has to do, and how long that should take.

    Counts: ``runs`` (planned), ``pending``, ``pretrained`` (models those need),
    ``controls``; ``precision`` (:func:`sweep_precision` of ``precision``); ``refused``: why
    :func:`run_study` would refuse that precision on this machine, or None; ``stale``: why
    the stored runs cannot be resumed (other settings), or None. Time [h]: pending pretrainings and transfers times the median stage
    wall times of stored runs of the same profile, crop and protocol in any series of
    ``results_root`` or of the folders ``rates_from`` (a sweep begun afresh in another
    folder takes its rates from the shipped results; measured with one thread per
    worker, as a sweep runs), divided by
    ``workers``; ``None`` without such runs. ``basis`` says which runs the rates come from.
    """
    from .experiment import PROTOCOL
    from .results import read_table

    profile = series.profile
    specs = plan(series, freezing)
    precision = sweep_precision(series, results_root, precision)
    stale, config_hash = None, run_config_hash(profile, series.name, precision)
    try:  # failed runs are not retried by a sweep (until their rows are deleted): not pending
        done = (finished_runs(results_root, series.name, profile.name, config_hash)
                | failed_runs(results_root, series.name, profile.name, config_hash))
    except StaleResultsError as err:
        done, stale = set(), str(err)  # stale runs do not count; the sweep itself stops on them
    pending = [s for s in specs if s.run_id not in done]
    models = {s.pretrain_id for s in pending}
    try:
        check_runs_fast(precision)
        refused = None
    except ValueError as err:
        refused = str(err)
    out = {"series": series.name, "profile": profile.name, "runs": len(specs), "pending": len(pending),
           "pretrained": len(models), "controls": sum(s.kind == "control" for s in pending), "hours": None,
           "stale": stale, "precision": precision.name, "refused": refused,
           "basis": f"no stored {precision.name} runs of this profile, crop and protocol to take rates from"}
    reference = []
    roots = list(dict.fromkeys(Path(r).resolve() for r in (results_root, *rates_from)))
    for root in roots:
        for path in sorted(root.glob("*/runs.parquet")):
            runs = read_table(root, path.parent.name, "runs")
            keep = (runs["profile"] == profile.name) & (runs["crop"] == profile.training.crop) & (
                runs["protocol"] == PROTOCOL) & (runs["precision"] == precision.name)
            if keep.any():
                folder = path.parent.name if root == roots[0] else f"{path.parent.name} in {root.name}"
                reference.append(runs[keep].assign(folder=folder))
    if reference:
        ref = pd.concat(reference, ignore_index=True)
        models_ref = ref.drop_duplicates("pretrain_id")
        staged_tl = ref[ref["kind"] != "baseline"]["wall_transfer_s"]  # a baseline run has one stage
        pre = float(models_ref["wall_pretrain_s"].median())
        tl = float(staged_tl.median()) if len(staged_tl) else 0.0  # only one-stage (baseline) runs stored
        transfers = sum(s.kind != "baseline" for s in pending)  # a baseline run is one pretraining-length stage
        if transfers and not len(staged_tl):
            out["basis"] = (f"the stored {precision.name} runs of this profile, crop and protocol have no transfer "
                            "stage to take a transfer rate from")
            return out
        overhead = elapsed_overhead(ref, workers, pause_s=10 * max(pre, tl))
        out["hours"] = overhead * (len(models) * pre + transfers * tl) / workers / 3600
        stages = f"pretraining {pre:.0f} s" + (f", transfer {tl:.0f} s" if len(staged_tl) else "")
        out["basis"] = (f"median stage times of {len(ref)} stored {precision.name} runs ({', '.join(sorted(set(ref['folder'])))}): "
                        f"{stages} per worker, times {overhead:.2f} for "
                        "evaluation and loading as those runs measured it; simulation not included")
    return out


def elapsed_overhead(runs: pd.DataFrame, workers: int, pause_s: float) -> float:
    """Real elapsed time of stored runs over the sum of their stage times per worker (at
    least 1): what evaluation, loading and anything else sharing the machine added.

    Elapsed time is summed series by series (``folder``) over the gaps between
    consecutive finished runs, leaving out gaps longer than ``pause_s`` [s]: a sweep
    stopped and resumed later, or series run on different days, adds no time. The
    stored runs do not record how many workers made them; the ratio assumes ``workers``,
    the number the projection is for.
    """
    elapsed, staged = 0.0, 0.0
    for _, part in runs.groupby("folder"):
        if len(part) < 5:
            continue
        gaps = np.diff(np.sort(part["finished_at"].to_numpy(float)))
        kept = gaps <= pause_s
        elapsed += float(gaps[kept].sum())
        stages = part.drop_duplicates("pretrain_id")["wall_pretrain_s"].sum() + part.loc[
            part["kind"] != "baseline", "wall_transfer_s"].sum()
        staged += float(stages) / workers * kept.sum() / len(part)  # the stage time of as many runs as gaps kept
    return max(1.0, elapsed / staged) if staged > 0 else 1.0
