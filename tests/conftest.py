"""Shared fixtures: a tiny profile (as a TOML file), one tiny simulated series, threads.

Everything the tests write goes to pytest's temporary folders; nothing touches
``cache/`` or ``data/results/`` of the repository.

The tiny profile images a 64 Å field at 0.5 Å (128 px), 2 training and 1 validation
scene per scene set, and trains 1 step of 2 crops of 32 px per stage. Its defocus
series is cut to two domains (``df-5``, ``df0``), so its grid has 2 transfer pairs
and all of them share one simulated CdSe scene set.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def profiles_file(tmp_path_factory) -> Path:
    """A profiles TOML holding the ``tiny`` profile (for subprocesses and the CLI)."""
    return write_profiles(tmp_path_factory.mktemp("profiles") / "profiles.toml", {"tiny": TINY})


@pytest.fixture(scope="session")
def tiny_profile(profiles_file):
    from hrtem_tl.config import load_profile

    return load_profile("tiny", path=profiles_file)


@pytest.fixture(scope="session")
def tiny_series(tiny_profile):
    from hrtem_tl.series import Series

    return Series("defocus", tiny_profile)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, tiny_series) -> Path:
    """The tiny defocus series simulated once per session; returns its dataset root.

    Treat it as read-only; tests that run stages writing into a dataset root copy it
    first (``data_copy``).
    """
    from hrtem_tl.datasets import simulate_series

    root = tmp_path_factory.mktemp("datasets")
    simulate_series(tiny_series, root, workers=1, progress=False)
    return root


@pytest.fixture
def data_copy(tiny_data, tmp_path) -> Path:
    """A private copy of the tiny dataset root."""
    dest = tmp_path / "datasets"
    shutil.copytree(tiny_data, dest)
    return dest
