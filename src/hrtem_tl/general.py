"""The shipped general model: one training stage on a mixture of every study domain.

Domains: the five doses (noise series), the eleven defocus values (defocus series; both
image the same CdSe scenes) and the nine lattices at both particle sizes (structure
series). The scale is a profile (``cpu`` by default) with fewer scenes per domain
(``--train``, ``--val``, ``--test``) under its own name ``<profile>-general``, so its
scenes and domain files never mix with a study's. Training batches draw images
uniformly from the whole mixture; the epoch with the lowest loss on the pooled
validation images is kept; every domain's test split is scored and the scores go into
the model card. Weights are stored in 16 bits (``fp16``); the card records how many
test pixels change class against the fp32 weights.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .config import load_profile
from .datasets import DEFAULT_ROOT, simulate_series
from .experiment import domain_data
from .model import build_unet
from .models import load_model, save_model
from .series import Series
from .train import Precision, evaluate, train_stage

SERIES = ("noise", "defocus", "structure")


def general_profile(base: str = "cpu", train: int = 6, val: int = 2, test: int = 3, epochs: int = 10, steps: int = 16):
    """``base`` with ``train``/``val``/``test`` scenes per domain and ``epochs`` x ``steps`` of training."""
    p = load_profile(base)
    counts = {"train_images": train, "val_images": val, "test_images": test}
    study = replace(p.study, structure_train_images=train, structure_val_images=val, structure_test_images=test,
                    structure_domains=None, defocus_domains=None)
    training = replace(p.training, pretrain_epochs=epochs, pretrain_steps=steps, transfer_images=1, seeds=(0,))
    return replace(p, name=f"{base}-general", data=replace(p.data, **counts), study=study, training=training)


def mixture(profile, split: str, root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{series/domain: (standardised images, masks)}`` of ``split`` for every domain."""
    out = {}
    for name in SERIES:
        series = Series(name, profile)
        for d in series.domains:
            out[f"{name}/{d.name}"] = domain_data(profile, name, d.name, split, root)
    return out


def _pooled(parts: dict) -> tuple[np.ndarray, np.ndarray]:
    return (np.concatenate([x for x, _ in parts.values()]), np.concatenate([y for _, y in parts.values()]))


def mask_changes(a, b, images: np.ndarray, precision: Precision) -> float:
    """Fraction of pixels whose predicted class differs between models ``a`` and ``b``."""
    changed = total = 0
    with torch.no_grad():
        for start in range(0, len(images), 4):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + 4, None]))
            pa, pb = a(x).argmax(1), b(x).argmax(1)
            changed += int((pa != pb).sum())
            total += pa.numel()
    return changed / total


def train_general(out: Path, *, base: str = "cpu", train: int = 6, val: int = 2, test: int = 3, epochs: int = 10,
                  steps: int = 16, seed: int = 0, data_root: Path = DEFAULT_ROOT, workers: int = 1,
                  progress=print) -> Path:
    """Simulate, train, score and save the general model as folder ``out``."""
    profile = general_profile(base, train, val, test, epochs, steps)
    start = time.perf_counter()
    for name in SERIES:
        simulate_series(Series(name, profile), data_root, workers=workers)
    sim_s = time.perf_counter() - start
    precision = Precision.choose(profile.training.mixed_precision)
    t = profile.training
    torch.manual_seed(seed)
    model = build_unet()
    train_parts, val_parts = mixture(profile, "train", data_root), mixture(profile, "val", data_root)
    result = train_stage(model, _pooled(train_parts), _pooled(val_parts), epochs=t.pretrain_epochs,
                         steps=t.pretrain_steps, lr=t.lr_pretrain, batch_size=t.batch_size, crop=t.crop, seed=seed,
                         lr_decay=t.lr_decay, precision=precision,
                         progress=lambda e, h: progress(f"epoch {e}/{t.pretrain_epochs}: val loss {h['val_loss']:.4f}, "
                                                        f"val Dice {h['val_dice']:.3f}"))
    test_parts = mixture(profile, "test", data_root)
    scores = {k: {m: evaluate(model, x, y, precision)[m] for m in ("dice", "loss")} for k, (x, y) in test_parts.items()}
    card = {"name": Path(out).name, "pixel_size": profile.simulation.pixel_size, "crop": t.crop,
            "domains": list(test_parts), "profile": profile.name, "settings": profile.to_dict(),
            "precision": precision.name, "test_scores": scores, "test_split": "test",
            "test_images_per_domain": {k: len(x) for k, (x, _) in test_parts.items()},
            "made_by": (f"one training stage on a mixture of {len(train_parts)} domains "
                        f"({sum(len(x) for x, _ in train_parts.values())} training images; "
                        f"best epoch {result.best_epoch} of {t.pretrain_epochs} by pooled validation loss)"),
            "seed": seed, "simulation_s": round(sim_s, 1), "training_s": round(result.wall_time, 1),
            "created": datetime.date.today().isoformat()}
    folder = save_model(model, Path(out), card, weights="fp16")
    half, _ = load_model(folder)
    card["fp16_mask_changes"] = mask_changes(model.float().eval(), half.eval(), _pooled(test_parts)[0], precision)
    return save_model(model, Path(out), card, weights="fp16")
