"""The site's predicted masks are the study's models: before transfer the pretrained model of
the run, after it the same run's transfer stage (same seed and settings), so their pooled Dice
on the target's test images equals what the results store holds for that run."""

from __future__ import annotations

import numpy as np
import pytest

from hrtem_testutils import set_torch_threads
from hrtem_tl import experiment as E
from hrtem_tl.metrics import ConfusionCounts
from hrtem_tl.predictions import export_predictions
from hrtem_tl.series import Series
from hrtem_tl.train import Precision

set_torch_threads()
FP32 = Precision("cpu", None)


def _pooled_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    counts = ConfusionCounts()
    counts.update(pred, truth)
    return counts.metrics()["dice"]


def test_predictions_match_the_run_in_the_store(tiny_series, data_copy, tmp_path):
    n_test = tiny_series.split_counts["test"]
    path = export_predictions(tiny_series, tmp_path / "examples", data_root=data_copy, checkpoints=tmp_path / "ckpt",
                              cases=[("df-5", "df0")], images=n_test, precision=FP32)
    assert path == tmp_path / "examples" / tiny_series.profile.name / "defocus-predictions.npz"
    got = np.load(path)
    assert got["images"].shape == got["masks"].shape == got["before"].shape == got["after"].shape
    assert got["images"].shape[:2] == (1, n_test) and got["images"].dtype == np.uint8
    _, truth = E.domain_data(tiny_series.profile, "defocus", "df0", "test", data_copy)
    assert np.array_equal(got["masks"][0], truth)
    assert set(np.unique(got["before"])) <= {0, 1} and not np.array_equal(got["before"], got["after"])
    rec = E.run_transfer(tiny_series.profile, E.RunSpec("defocus", "df-5", "df0", "none", 0), data_root=data_copy,
                         checkpoints=tmp_path / "ckpt", precision=FP32)
    stored = {(e["stage"], e["eval_domain"]): e["dice"] for e in rec.evaluations}
    assert _pooled_dice(got["before"][0], truth) == pytest.approx(stored["pretrain", "df0"], abs=1e-9)
    assert _pooled_dice(got["after"][0], truth) == pytest.approx(stored["transfer", "df0"], abs=1e-9)
    assert got["dice_after"].shape == (1, n_test) and list(got["target"]) == ["df0"]
    assert str(got["config_hash"]) == rec.run["config_hash"] and str(got["precision"]) == rec.run["precision"]


def test_predictions_refuse_an_unknown_pair_or_series(tiny_series, tmp_path):
    with pytest.raises(ValueError, match="df99"):
        export_predictions(tiny_series, tmp_path, cases=[("df-5", "df99")])
    with pytest.raises(ValueError, match="no prediction cases for series 'tlsize'"):
        export_predictions(Series("tlsize", tiny_series.profile), tmp_path)
