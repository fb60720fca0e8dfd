"""The general model: its scale profile, the fp16 check, and (slow) the whole recipe."""

from __future__ import annotations

import pytest
import torch

from hrtem_testutils import set_torch_threads

from hrtem_tl.general import SERIES, general_profile, mask_changes, train_general
from hrtem_tl.model import build_unet
from hrtem_tl.models import read_card
from hrtem_tl.series import Series
from hrtem_tl.train import Precision


def test_general_profile_has_its_own_name_and_scene_counts():
    p = general_profile("cpu", train=6, val=2, test=3, epochs=5, steps=7)
    assert p.name == "cpu-general"  # its scenes and domain files never mix with the cpu study's
    for name in SERIES:
        counts = Series(name, p).split_counts
        assert (counts["train"], counts["val"], counts["test"]) == (6, 2, 3), name
    assert len(Series("structure", p).domains) == 18 and len(Series("defocus", p).domains) == 11
    assert (p.training.pretrain_epochs, p.training.pretrain_steps) == (5, 7)


def test_mask_changes_counts_pixels_that_change_class():
    set_torch_threads()
    torch.manual_seed(0)
    a = build_unet().eval()
    images = torch.randn(2, 64, 64).numpy()
    assert mask_changes(a, a, images, Precision("cpu", None)) == 0.0
    b = build_unet().eval()  # other random weights: many pixels differ
    assert mask_changes(a, b, images, Precision("cpu", None)) > 0.01


@pytest.mark.slow
def test_train_general_writes_a_card_with_every_domain(tmp_path):
    set_torch_threads()
    folder = train_general(tmp_path / "general-smoke", base="smoke", train=2, val=1, test=1, epochs=1, steps=1,
                           data_root=tmp_path / "data", progress=lambda *_: None)
    card = read_card(folder)
    assert card["weights"] == "fp16" and len(card["test_scores"]) == 34
    assert all(0 <= s["dice"] <= 1 for s in card["test_scores"].values())
    assert 0 <= card["fp16_mask_changes"] < 0.01
