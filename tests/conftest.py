"""Shared fixtures: a tiny profile (as a TOML file), one tiny simulated series, threads.

Everything the tests write goes to pytest's temporary folders; nothing touches
``cache/`` or ``data/results/`` of the repository.

The tiny profile images a 64 Å field at 0.5 Å (128 px), 2 training and 1 validation
scene per scene set, and trains 1 step of 2 crops of 32 px per stage. Its defocus
series is cut to two domains (``df-5``, ``df0``), so its grid has 2 transfer pairs
and all of them share one simulated CdSe scene set.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import settings

from hrtem_testutils import TINY, write_profiles  # noqa: E402

# No example database: hypothesis would otherwise leave a .hypothesis/ folder in the repo.
settings.register_profile("hrtem", database=None)
settings.load_profile("hrtem")


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
