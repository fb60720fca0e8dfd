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
