"""Fine-tuning a model folder on the user's own images and masks (the study's transfer recipe).

Recipe (from the study's transfer stage): Adam at lr 1e-4 decaying 1 % per epoch,
random D4-augmented crops of the model's training crop, batch-norm statistics
adapted to the new data, best epoch by the loss on a held-out split of whole images
(20 %, at least one image), then a new model folder whose card names the parent,
the freezing, the data files (SHA-256) and the held-out Dice.

Default freezing: ``decoder``. Our noise and structure series found freezing the
decoder about as good as full fine-tuning, and faster than it on the CPU.
"""

from __future__ import annotations

import datetime
import hashlib
import sys
from pathlib import Path

import numpy as np

from .model import FREEZE_MODES
from .segment import InputError, read_micrograph, resample
from .train import Precision, evaluate, standardize, train_stage

DEFAULT_FREEZE = "decoder"
FREEZE_REASON = ("our noise and structure results found freezing the decoder about as good as full fine-tuning "
                 "and faster than it on the CPU")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pair(image_path: Path, mask_path: Path, model_pixel: float, pixel_size: float | None, frame: int | None):
    """(image, mask) at the model's pixel size."""
    micro = read_micrograph(image_path, frame)
    size = pixel_size if pixel_size is not None else micro.pixel_size
    if size is None:
        raise InputError(f"{image_path}: has no length calibration; pass --pixel-size in Å (a scale is never guessed)")
    try:
        mask = read_micrograph(mask_path).image
    except InputError as err:
        if frame is None or "stack" not in str(err):
            raise
        mask = read_micrograph(mask_path, frame).image
    if mask.shape != micro.image.shape:
        raise InputError(f"{mask_path}: mask is {mask.shape[1]} x {mask.shape[0]} px but its image {image_path} is "
                         f"{micro.image.shape[1]} x {micro.image.shape[0]} px")
    factor = size / model_pixel
    image = resample(micro.image, factor)
    mask = resample((mask != 0).astype(np.float32), factor) > 0.5
    return image, mask.astype(np.uint8)


def _tiles(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[list, list]:
    """Square tiles of ``size`` covering the image (the last ones flush with its edges)."""
    from .segment import _starts

    xs, ys = [], []
    for y in _starts(image.shape[0], size, size):
        for x in _starts(image.shape[1], size, size):
            xs.append(image[y:y + size, x:x + size])
            ys.append(mask[y:y + size, x:x + size])
    return xs, ys


def finetune(images: list[Path], masks: list[Path], from_model: str | Path, out: Path, *, freeze: str | None = None,
             epochs: int = 4, steps: int = 8, batch_size: int = 8, lr: float = 1e-4, held_out: float = 0.2,
             tile: int = 256, seed: int = 0, pixel_size: float | None = None, frame: int | None = None,
             weights: str = "fp32", precision: Precision | None = None, log=None) -> dict:
    """Fine-tune model ``from_model`` (name or folder) on image/mask files; writes model folder ``out``.

    Returns the new card. ``freeze=None`` takes :data:`DEFAULT_FREEZE` and says why on ``log``.
    """
    from .models import load_model, resolve_model, save_model

    log = log or sys.stderr
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks: give one mask per image, in the same order")
    if len(images) < 2:
        raise ValueError("fine-tuning needs at least 2 images (one is held out to pick the best epoch)")
    if freeze is None:
        freeze = DEFAULT_FREEZE
        print(f"freezing: {freeze} (default: {FREEZE_REASON}; choose with --freeze none|encoder|decoder)", file=log)
    if freeze not in FREEZE_MODES:
        raise ValueError(f"unknown freezing mode {freeze!r}; choose one of {', '.join(FREEZE_MODES)}")
    for name, value in (("epochs", epochs), ("steps", steps), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if not 0 < held_out < 1:
        raise ValueError(f"the held-out fraction must be between 0 and 1, got {held_out}")
    parent_dir = resolve_model(from_model)
    precision = precision or Precision.choose(mixed=False)
    model, parent = load_model(parent_dir, precision.device)
    model_pixel, crop = float(parent["pixel_size"]), int(parent["crop"])
    pairs = [_pair(Path(i), Path(m), model_pixel, pixel_size, frame) for i, m in zip(images, masks)]
    side = min(min(im.shape) for im, _ in pairs)
    size = min(tile, side) // 32 * 32
    if size < crop:
        raise InputError(f"the smallest image is {side} px at the model's {model_pixel:g} Å/px, smaller than its "
                         f"field of {crop} px")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pairs))
    n_val = max(1, int(round(held_out * len(pairs))))
    val_idx, train_idx = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())

    def stack(idx):
        xs, ys = [], []
        for i in idx:
            x, y = _tiles(standardize(pairs[i][0]), pairs[i][1], size)
            xs += x
            ys += y
        return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.uint8)

    train, val = stack(train_idx), stack(val_idx)
    before = evaluate(model, *val, precision)["dice"]
    result = train_stage(model, train, val, epochs=epochs, steps=steps, lr=lr, batch_size=batch_size, crop=crop,
                         seed=seed, freeze=freeze, batchnorm="adapt", precision=precision)
    after = evaluate(model, *val, precision)
    files = [{"image": str(images[i]), "image_sha256": sha256(Path(images[i])), "mask": str(masks[i]),
              "mask_sha256": sha256(Path(masks[i])), "split": "held-out" if i in val_idx else "train"}
             for i in range(len(images))]
    card = {
        "name": Path(out).name, "pixel_size": model_pixel, "crop": crop,
        "domains": ["user data"] + [f"parent: {d}" for d in parent.get("domains", [])],
        "parent": {"name": parent.get("name", parent_dir.name), "path": str(parent_dir),
                   "created": parent.get("created")},
        "made_by": "hrtem-tl finetune", "freezing": freeze,
        "settings": {"epochs": epochs, "steps": steps, "batch_size": batch_size, "lr": lr, "lr_decay": 0.99,
                     "crop": crop, "tile": size, "held_out_fraction": held_out, "seed": seed,
                     "batchnorm": "adapt", "precision": precision.name},
        "data": files,
        "held_out": {"images": len(val_idx), "dice": after["dice"], "dice_before": before, "loss": after["loss"],
                     "best_epoch": result.best_epoch},
        "history": result.history, "test_scores": {}, "wall_time_s": result.wall_time,
        "created": datetime.date.today().isoformat(),
    }
    save_model(model, out, card, weights=weights)
    return card
