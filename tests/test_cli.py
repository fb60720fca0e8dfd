"""Command line: bad input ends with exit code 2 and one line naming the problem."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hrtem_testutils import assert_one_line_error, run_cli


@pytest.fixture
def dirs(tmp_path):
    """--data, --results and --checkpoints in a temporary folder (never the repo's)."""
    paths = {k: tmp_path / k for k in ("data", "results", "checkpoints")}
    return paths


def _roots(dirs, *keys):
    out = []
    for k in keys:
        out += [f"--{k}", dirs[k]]
    return out


def test_unknown_series(capsys, dirs):
    code, _, err = run_cli(capsys, "simulate", "bogus", *_roots(dirs, "data"))
    assert_one_line_error(code, err, "unknown series", "'bogus'", "noise")
    assert not dirs["data"].exists()


def test_unknown_profile(capsys, dirs):
    code, _, err = run_cli(capsys, "study", "noise", "--profile", "huge", *_roots(dirs, "data", "results"))
    assert_one_line_error(code, err, "unknown profile", "'huge'", "smoke")


def test_missing_profiles_file(capsys, dirs, tmp_path):
    code, _, err = run_cli(capsys, "simulate", "noise", "--profiles", tmp_path / "none.toml", *_roots(dirs, "data"))
    assert_one_line_error(code, err, "none.toml")


def test_custom_profiles_file(capsys, dirs, profiles_file):
    code, _, err = run_cli(capsys, "train", "defocus", "--profiles", profiles_file, "--profile", "tiny",
                           "--pretrain", "df-5", "--target", "df5", *_roots(dirs, "data", "checkpoints"))
    # df5 exists in the defocus series but not in the tiny profile's cut of it
    assert_one_line_error(code, err, "unknown domain", "'df5'", "df-5, df0")


@pytest.mark.parametrize(
    "pretrain,target,freeze,names",
    [
        ("Au_small", "Cu_small", "none", ("unknown domain", "'Au_small'")),  # unknown lattice
        ("Cu_small", "Cu_huge", "none", ("unknown domain", "'Cu_huge'")),
        ("Cu_small", "Cu_small", "encoder", ("control run", "--freeze none")),
        ("Cu_small", "CdSe_small", "middle", ("unknown freezing mode", "'middle'")),
    ],
)
def test_bad_training_runs(capsys, dirs, pretrain, target, freeze, names):
    code, _, err = run_cli(capsys, "train", "structure", "--pretrain", pretrain, "--target", target,
                           "--freeze", freeze, *_roots(dirs, "data", "checkpoints"))
    assert_one_line_error(code, err, *names)
    assert not dirs["checkpoints"].exists()


def test_missing_dataset_says_how_to_make_it(capsys, dirs):
    code, _, err = run_cli(capsys, "train", "noise", "--pretrain", "dose30", "--target", "dose600",
                           *_roots(dirs, "data", "checkpoints"))
    assert_one_line_error(code, err, "is missing", "hrtem-tl simulate noise --profile smoke")


@pytest.mark.parametrize("verb,workers", [("simulate", -1), ("simulate", 0), ("study", -3)])
def test_bad_worker_count(capsys, dirs, verb, workers):
    roots = _roots(dirs, "data") if verb == "simulate" else _roots(dirs, "data", "results", "checkpoints")
    code, _, err = run_cli(capsys, verb, "noise", "--workers", workers, *roots)
    assert_one_line_error(code, err, "--workers", str(workers))
    assert not dirs["data"].exists()


def test_unknown_executor_fails_before_simulating(capsys, dirs):
    code, _, err = run_cli(capsys, "study", "noise", "--executor", "slurm", *_roots(dirs, "data", "results", "checkpoints"))
    assert_one_line_error(code, err, "unknown executor", "'slurm'")
    assert not dirs["data"].exists()


def test_unwritable_out_folder(capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, _, err = run_cli(capsys, "simulate", "noise", "--out", blocker / "datasets")
    assert_one_line_error(code, err, str(blocker))


def test_profiles_lists_every_profile(capsys):
    code, out, _ = run_cli(capsys, "profiles")
    assert code == 0
    names = [line.split()[0] for line in out.strip().splitlines()]
    assert names == ["smoke", "cpu", "gpu", "paper"]


def test_console_script_exit_code(tmp_path):
    """The installed ``hrtem-tl`` entry point returns the code to the shell."""
    exe = os.path.join(os.path.dirname(sys.executable), "hrtem-tl")
    proc = subprocess.run([exe, "simulate", "bogus", "--data", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["hrtem-tl: error: unknown series 'bogus'; known series: "
                                                "noise, structure, defocus, tlsize, baseline"]
