"""Helpers shared by the test modules (imported as a plain module; see conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

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
    "data": {"train_images": 2, "val_images": 1},
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
