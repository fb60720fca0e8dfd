"""What the models predict, for the site: input, true mask and predicted masks before and after transfer.

For a few transfer pairs of a series (:data:`CASES`: a representative one and ones
the study names as hard), the pretrained model (from the checkpoint cache, trained
if missing) and the same model after the run's transfer stage (retrained: the sweep
keeps no transfer checkpoints; same seed and settings as the run in the store)
segment the first test images of the target domain. Written once, by
``hrtem-tl examples SERIES --predictions``, to ``<out>/<profile>/<series>-predictions.npz``;
the site only reads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .datasets import DEFAULT_ROOT, save_npz
from .experiment import (DEFAULT_CHECKPOINTS, REPORT_SPLIT, RunSpec, check_spec, domain_data, pretrained,
                         run_config_hash, transfer_stage)
from .metrics import ConfusionCounts
from .results import DEFAULT_RESULTS
from .series import Series
from .train import Precision, predict

# (pretraining domain, target domain) per series: for noise the model of the cleanest
# images on the noisiest (the largest cost of the wrong dose) and a neighbour pair; for
# structure carbon particles on the carbon film (the hardest target) and a metal pair
CASES = {
    "noise": [("dose600", "dose30"), ("dose150", "dose75")],
    "structure": [("Cu_small", "C_small"), ("Cu_small", "Ag_small")],
}


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    counts = ConfusionCounts()
    counts.update(pred, truth)
    return counts.metrics()["dice"]


def export_predictions(series: Series, out: Path, *, data_root: Path = DEFAULT_ROOT,
                       checkpoints: Path = DEFAULT_CHECKPOINTS, cases: list[tuple[str, str]] | None = None,
                       images: int = 2, seed: int = 0, freezing: str = "none",
                       precision: Precision | None = None, results_root: Path = DEFAULT_RESULTS) -> Path:
    """Write the predictions file of ``series`` and return its path.

    Arrays (cases c, images k, pixels n): ``images`` (c, k, n, n) uint8 scaled between
    the 0.5th and 99.5th percentiles, ``masks``, ``before``, ``after`` (c, k, n, n)
    uint8 (1 = particle), ``dice_before``, ``dice_after`` (c, k) per image, and
    ``pretrain``, ``target``, ``freezing``, ``seed``, ``pixel_size`` [Å], and the
    ``precision`` and ``config_hash`` of the runs these models repeat (the site says
    whether stored runs carry that hash). ``precision`` defaults to that of the series'
    stored runs in ``results_root`` (:func:`hrtem_tl.study.sweep_precision`), so the
    models are those runs' models; bf16 is refused on a CPU that would emulate it.
    """
    cases = CASES.get(series.name, []) if cases is None else cases
    if not cases:
        raise ValueError(f"no prediction cases for series {series.name!r}; choose from {', '.join(CASES)}")
    if images < 1:
        raise ValueError(f"images must be at least 1, got {images}")
    profile = series.profile
    if precision is None:
        from .study import check_runs_fast, sweep_precision

        precision = sweep_precision(series, results_root)
        check_runs_fast(precision)
    specs = [RunSpec(series.name, pre, target, freezing, seed) for pre, target in cases]
    for spec in specs:
        check_spec(series, spec)
    rows = {key: [] for key in ("images", "masks", "before", "after", "dice_before", "dice_after")}
    for spec in tqdm(specs, desc=f"predictions {series.name}", unit="case"):
        x, y = domain_data(profile, series.name, spec.target_domain, REPORT_SPLIT, data_root, limit=images)
        model, _ = pretrained(series, spec.pretrain_domain, seed, data_root=data_root, checkpoints=checkpoints,
                              precision=precision)
        before = predict(model, x, precision)
        transfer_stage(series, spec, model, data_root=data_root, precision=precision)
        after = predict(model, x, precision)
        lo, hi = np.percentile(x, [0.5, 99.5], axis=(1, 2), keepdims=True)
        rows["images"].append((np.clip((x - lo) / np.maximum(hi - lo, 1e-6), 0, 1) * 255).round().astype(np.uint8))
        rows["masks"].append(y.astype(np.uint8))
        rows["before"].append(before)
        rows["after"].append(after)
        rows["dice_before"].append([_dice(p, t) for p, t in zip(before, y)])
        rows["dice_after"].append([_dice(p, t) for p, t in zip(after, y)])
    path = Path(out) / profile.name / f"{series.name}-predictions.npz"
    save_npz(path, **{k: np.asarray(v) for k, v in rows.items()},
             pretrain=np.array([s.pretrain_domain for s in specs]), target=np.array([s.target_domain for s in specs]),
             freezing=np.array(freezing), seed=np.int64(seed), pixel_size=np.float64(profile.simulation.pixel_size),
             precision=np.array(precision.name), config_hash=np.array(run_config_hash(profile, series.name, precision)))
    return path
