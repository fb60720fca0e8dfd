"""Helpers shared by the test modules (imported as a plain module; see conftest.py)."""

from __future__ import annotations

import itertools
import os
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from hrtem_tl.config import load_profile
from hrtem_tl.metrics import METRICS
from hrtem_tl.results import append_records
from hrtem_tl.series import FREEZING, Series

# One thread per process: the machine has 2 cores and often a study running beside
# the tests; two competing intra-op threads make torch many times slower here.
THREADS = int(os.environ.get("HRTEM_TEST_THREADS", "1"))
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))

TINY = {
    "description": "tests: 64 A field at 0.5 A, 2+1 scenes, 1-step training",
    "simulation": {
        "field_of_view": 64.0, "sampling": 0.5, "pixel_size": 0.5, "phonon_configs": 1,
        "slice_thickness": 4.0, "film_thickness": [10.0, 20.0], "max_particles": 2,
        "calibration_steps": [4.0, 1.0],
    },
    "data": {"train_images": 2, "val_images": 1, "test_images": 1},
    "training": {
        "crop": 32, "batch_size": 2, "pretrain_epochs": 1, "pretrain_steps": 1, "transfer_epochs": 1,
        "transfer_steps": 1, "transfer_images": 2, "lr_pretrain": 1e-3, "lr_transfer": 1e-4, "seeds": [0],
        "mixed_precision": False,
    },
    "study": {"defocus_domains": ["df-5", "df0"], "structure_domains": ["Cu_small", "Fe_small"]},
}


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def write_profiles(path: Path, profiles: dict[str, dict]) -> Path:
    """Write ``{name: {"description": ..., section: {key: value}}}`` as a profiles TOML."""
    lines = []
    for name, body in profiles.items():
        lines += [f"[{name}]", f"description = {_toml_value(body['description'])}"]
        for section, values in body.items():
            if section == "description":
                continue
            lines.append(f"[{name}.{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def set_torch_threads() -> None:
    import torch

    torch.set_num_threads(THREADS)


def synthetic_results(root: Path, series: str, seeds=(0, 1), profile: str = "cpu") -> None:
    """Runs and evaluations with random metric values over the series' real grid."""
    rng = np.random.default_rng(7)
    s = Series(series, load_profile(profile))
    pairs = s.transfer_pairs()
    runs, evals = [], []
    for seed, (a, b), f in itertools.product(seeds, pairs, FREEZING):
        rid = f"{series}|{a}>{b}|{f}|s{seed}"
        runs.append({"run_id": rid, "pretrain_id": f"{series}|{a}|s{seed}", "series": series, "profile": profile,
                     "pretrain_domain": a, "target_domain": b, "freezing": f, "seed": seed,
                     "lr_pretrain": 1e-3, "lr_transfer": 1e-4, "pretrain_images": 64, "transfer_images": 32,
                     "val_images": 16, "pretrain_epochs": 6, "transfer_epochs": 5, "pretrain_steps": 16,
                     "transfer_steps": 8, "batch_size": 16, "crop": 128, "best_epoch_pretrain": 3,
                     "best_epoch_transfer": 4, "params_total": 14322082, "params_trainable": 3151842,
                     "wall_pretrain_s": 100.0, "wall_transfer_s": 40.0, "device": "cpu", "precision": "fp32",
                     "package_version": "0", "git_commit": "x", "config_hash": "h", "finished_at": 0.0,
                     "kind": "transfer", "protocol": 2, "transfer_batchnorm": "adapt", "test_images": 16})
        pre_values = np.random.default_rng([zlib.crc32(f"{series}|{a}".encode()), seed])  # one model, one row
        after = set(s.transfer_eval_domains(a, b))  # as run_transfer evaluates
        for d in s.domains:
            evals.append({"run_id": rid, "profile": profile, "stage": "pretrain", "eval_domain": d.name, "split": "test",
                          **{m: float(pre_values.uniform()) for m in METRICS}})
            if d.name in after:
                evals.append({"run_id": rid, "profile": profile, "stage": "transfer", "eval_domain": d.name, "split": "test",
                              **{m: float(rng.uniform()) for m in METRICS}})
    append_records(root, series, {"runs": runs, "evaluations": evals, "histories": []})
    empty_histories(root, series)


def empty_histories(root: Path, series: str) -> None:
    """An empty histories table, so that ``read_results`` finds all three tables."""
    pd.DataFrame(columns=["run_id", "profile", "stage", "epoch", "train_loss", "val_loss", "val_dice", "lr"]).astype(
        {"epoch": "int64"}).to_parquet(root / series / "histories.parquet")


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Run ``hrtem-tl`` in-process; returns (exit code, stdout, stderr)."""
    from hrtem_tl import cli

    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *names: str) -> None:
    """Exit code 2 and one ``hrtem-tl: error: ...`` line naming each of ``names``."""
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hrtem-tl: error: ")
    for name in names:
        assert name in lines[0], (name, lines[0])


def disk_scene(size: int, seed: int, rmin: float, rmax: float, count=(2, 6), noise: float = 0.5, gap: float = 4):
    """(image, mask, areas [px]) of non-overlapping bright disks on Gaussian noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    mask, areas, placed = np.zeros((size, size), np.uint8), [], []
    for _ in range(int(rng.integers(*count))):
        for _ in range(50):
            r = rng.uniform(rmin, rmax)
            cy, cx = rng.uniform(r + 2, size - r - 2, 2)
            if all((cy - y) ** 2 + (cx - x) ** 2 > (r + q + gap) ** 2 for y, x, q in placed):
                break
        else:
            continue
        placed.append((cy, cx, r))
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        mask[disk] = 1
        areas.append(int(disk.sum()))
    return (mask + rng.normal(0, noise, mask.shape)).astype(np.float32), mask, areas


def write_tiff(path: Path, image: np.ndarray, pixel_a: float = 1.0) -> Path:
    """An ImageJ TIFF calibrated in nm at ``pixel_a`` [Å] per pixel."""
    import tifffile

    tifffile.imwrite(path, image, imagej=True, resolution=(10 / pixel_a, 10 / pixel_a), metadata={"unit": "nm"})
    return path


def train_disk_model(folder: Path, pixel_size: float = 2.0) -> Path:
    """A model folder of a U-Net trained for 30 steps (3 epochs of 10 batches of 4 crops of 64 px,
    lr 1e-3, fp32) on disks of radius 6-12 px at ``pixel_size`` [Å]; about 15 s on one core."""
    import torch

    from hrtem_tl.model import build_unet
    from hrtem_tl.models import save_model
    from hrtem_tl.train import Precision, standardize, train_stage

    set_torch_threads()

    def stack(seeds):
        scenes = [disk_scene(128, s, 6, 12) for s in seeds]
        return standardize(np.stack([s[0] for s in scenes])), np.stack([s[1] for s in scenes])

    torch.manual_seed(0)
    model = build_unet()
    result = train_stage(model, stack(range(1, 9)), stack([100, 101]), epochs=3, steps=10, lr=1e-3, batch_size=4,
                         crop=64, seed=0, precision=Precision.choose(mixed=False))
    return save_model(model, folder, {"pixel_size": pixel_size, "crop": 64, "domains": ["synthetic disks"],
                                      "made_by": "tests (hrtem_testutils.train_disk_model)", "test_scores": {
                                          "synthetic disks": {"dice": result.history[result.best_epoch - 1]["val_dice"]}}})


def synthetic_defocus(root: Path, profile: str = "cpu", metrics=METRICS, sizes=(16, 32), seeds=(0, 1),
                      lrs=((1e-3, 1e-4), (1e-4, 1e-5)), device: str = "cpu") -> None:
    """Defocus transfer runs and a mixture baseline with random metric values.

    Pretraining on -5/0/5 nm, targets -10...10 nm, every freezing option, transfer-set
    size and learning-rate pair; each pretrained model is shared by its runs. The
    baseline mixes each ordered pair at 25/50/75 % target images of 64. Metrics not in
    ``metrics`` are NaN (the original released losses only).
    """
    rng = np.random.default_rng(11)
    pre_domains, domains = ["df-5", "df0", "df5"], ["df-10", "df-5", "df0", "df5", "df10"]
    common = {"series": "defocus", "profile": profile, "kind": "transfer", "protocol": 2, "seed": 0,
              "transfer_batchnorm": "fixed", "pretrain_images": 64, "val_images": 8, "test_images": 8,
              "pretrain_epochs": 6, "transfer_epochs": 4, "pretrain_steps": 16, "transfer_steps": 8,
              "batch_size": 16, "crop": 160, "best_epoch_pretrain": 3, "best_epoch_transfer": 2,
              "params_total": 14322082, "params_trainable": 14322082, "wall_pretrain_s": 100.0,
              "wall_transfer_s": 40.0, "device": device, "precision": "fp32", "package_version": "0",
              "git_commit": "x", "config_hash": "h", "finished_at": 0.0}

    def values() -> dict:
        return {m: (float(rng.uniform(0.01, 1.0)) if m in metrics else float("nan")) for m in METRICS}

    runs, evals, pre_rows = [], [], {}
    for seed, a, (lp, lt) in itertools.product(seeds, pre_domains, lrs):
        pid = f"defocus|{a}|s{seed}|lr{lp:g}"
        pre_rows[pid] = [{"stage": "pretrain", "eval_domain": d, **values()} for d in domains]
        for b, f, n in itertools.product([d for d in domains if d != a], FREEZING, sizes):
            rid = f"defocus|{a}>{b}|{f}|s{seed}|n{n}|lr{lp:g},{lt:g}"
            runs.append({**common, "run_id": rid, "pretrain_id": pid, "pretrain_domain": a, "target_domain": b,
                         "freezing": f, "seed": seed, "lr_pretrain": lp, "lr_transfer": lt, "transfer_images": n})
            evals += [{"run_id": rid, "profile": profile, "split": "test", **row} for row in pre_rows[pid]]
            evals += [{"run_id": rid, "profile": profile, "split": "test", "stage": "transfer", "eval_domain": d,
                       **values()} for d in domains]
    append_records(root, "defocus", {"runs": runs, "evaluations": evals, "histories": []})
    empty_histories(root, "defocus")
    base_runs, base_evals = [], []
    for seed, a, b, minor, (lp, _) in itertools.product(seeds, pre_domains, domains, (16, 32, 48), lrs):
        if a == b:
            continue
        rid = f"baseline|{a}>{b}|s{seed}|minor{minor}|lr{lp:g}"
        base_runs.append({**common, "series": "baseline", "kind": "baseline", "run_id": rid, "pretrain_id": rid,
                          "pretrain_domain": a, "target_domain": b, "freezing": "none", "seed": seed,
                          "lr_pretrain": lp, "lr_transfer": float("nan"), "transfer_images": 0,
                          "major_images": 64 - minor, "minor_images": minor})
        base_evals += [{"run_id": rid, "profile": profile, "split": "test", "stage": "pretrain", "eval_domain": d,
                        **values()} for d in (a, b)]
    append_records(root, "baseline", {"runs": base_runs, "evaluations": base_evals, "histories": []})
    empty_histories(root, "baseline")
