"""Training stages and evaluation of the U-Net on image/mask arrays.

Inputs are standardised per image (mean 0, variance 1). A training step draws
``batch_size`` random crops of ``crop`` pixels, each with one of the eight dihedral
(D4) transforms applied to image and mask together. Losses are cross-entropy on
logits (floor 0).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .metrics import ConfusionCounts
from .model import apply_freezing, set_train_mode


def standardize(images: np.ndarray) -> np.ndarray:
    """Per-image standardisation to mean 0 and variance 1 (float32)."""
    images = np.asarray(images, np.float32)
    mean = images.mean(axis=(-2, -1), keepdims=True)
    std = images.std(axis=(-2, -1), keepdims=True)
    return (images - mean) / np.maximum(std, 1e-6)


def dihedral(array: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th (0..7) of the eight D4 transforms of the last two axes."""
    out = np.rot90(array, k % 4, axes=(-2, -1))
    return np.flip(out, axis=-1) if k >= 4 else out


def random_batch(images: np.ndarray, masks: np.ndarray, batch: int, crop: int, rng: np.random.Generator):
    """Random crops with a random D4 transform each; returns (x [B,1,c,c], y [B,c,c])."""
    n, h, w = images.shape
    crop = min(crop, h, w)
    idx = rng.integers(0, n, size=batch)
    ys, xs = rng.integers(0, h - crop + 1, size=batch), rng.integers(0, w - crop + 1, size=batch)
    ks = rng.integers(0, 8, size=batch)
    x = np.stack([dihedral(images[i, y:y + crop, c:c + crop], k) for i, y, c, k in zip(idx, ys, xs, ks)])
    y = np.stack([dihedral(masks[i, y_:y_ + crop, c:c + crop], k) for i, y_, c, k in zip(idx, ys, xs, ks)])
    return torch.from_numpy(np.ascontiguousarray(x[:, None])), torch.from_numpy(np.ascontiguousarray(y)).long()


def bf16_supported() -> bool:
    """Whether this CPU runs bf16 matrix maths natively (AMX or AVX512-BF16).

    Without it, bf16 autocast is emulated and many times slower than fp32. torch's
    ``get_cpu_capability`` names only the vector level of its own kernels ("AVX512" on
    an AMD EPYC with AVX512-BF16, where oneDNN still runs bf16 natively: 1.85x faster
    than fp32 there), so the CPU's features are asked directly.
    """
    cpu = torch.backends.cpu.get_cpu_capability()
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return cpu in ("AVX512_BF16", "AMX") or any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


@dataclass(frozen=True)
class Precision:
    """Device and autocast choice: bf16 on capable CPUs, fp16 AMP on CUDA, else fp32."""

    device: str
    dtype: torch.dtype | None

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @classmethod
    def choose(cls, mixed: bool = True, device: str | None = None) -> "Precision":
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if not mixed:
            return cls(device, None)
        if device.startswith("cuda"):
            return cls(device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        return cls(device, torch.bfloat16 if bf16_supported() else None)

    @classmethod
    def named(cls, name: str, device: str | None = None) -> "Precision":
        """The precision called ``name`` ("fp32", "bf16" or "fp16"), whether or not this machine runs it fast."""
        dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
        if name not in dtypes:
            raise ValueError(f"unknown precision {name!r}; choose from {', '.join(dtypes)}")
        return cls(device or ("cuda" if torch.cuda.is_available() else "cpu"), dtypes[name])

    def autocast(self):
        kind = "cuda" if self.device.startswith("cuda") else "cpu"
        return torch.autocast(kind, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)


def _prepare(model: nn.Module, precision: Precision) -> nn.Module:
    return model.to(precision.device, memory_format=torch.channels_last)


@torch.no_grad()
def _logits(model: nn.Module, images: np.ndarray, precision: Precision, batch: int):
    """(first index, fp32 logits) of ``model`` on whole (standardised) images, ``batch`` at a time."""
    model = _prepare(model, precision)
    model.eval()
    for start in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch, None])).to(precision.device)
        with precision.autocast():
            logits = model(x.contiguous(memory_format=torch.channels_last))
        yield start, logits.float()


def evaluate(model: nn.Module, images: np.ndarray, masks: np.ndarray, precision: Precision, batch: int = 4) -> dict:
    """Loss and pooled metrics of ``model`` on whole (standardised) images."""
    counts = ConfusionCounts()
    for start, logits in _logits(model, images, precision, batch):
        y = torch.from_numpy(np.ascontiguousarray(masks[start:start + len(logits)])).long().to(logits.device)
        loss = F.cross_entropy(logits, y, reduction="sum").item()
        counts.update(logits.argmax(1).cpu().numpy(), y.cpu().numpy(), loss)
    return counts.metrics()


def predict(model: nn.Module, images: np.ndarray, precision: Precision, batch: int = 4) -> np.ndarray:
    """Predicted masks (n, h, w) uint8 (1 = particle) of ``model`` on whole (standardised) images."""
    return np.concatenate([logits.argmax(1).cpu().numpy().astype(np.uint8)
                           for _, logits in _logits(model, images, precision, batch)])


class TrainingDiverged(ValueError):
    """A training stage ended without any epoch of finite validation loss.

    ``stage`` names the stage (``"pretrain"``, ``"transfer"``) once a caller knows it.
    """

    def __init__(self, message: str, stage: str | None = None):
        super().__init__(message)
        self.stage = stage

    def __reduce__(self):  # keep ``stage`` across processes (process pools, Dask)
        return type(self), (str(self), self.stage)


@dataclass
class StageResult:
    """Outcome of one stage: best epoch (1-based), per-epoch history, wall time [s]."""

    best_epoch: int
    history: list[dict] = field(default_factory=list)
    wall_time: float = 0.0


def train_stage(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int,
    steps: int,
    lr: float,
    batch_size: int,
    crop: int,
    seed: int,
    freeze: str = "none",
    batchnorm: str = "adapt",
    lr_decay: float = 0.99,
    precision: Precision | None = None,
    progress=None,
) -> StageResult:
    """Train ``model`` in place and restore the epoch with the lowest validation loss.

    ``train`` and ``val`` are (standardised images, masks). The learning rate decays
    by ``lr_decay`` after each epoch. ``batchnorm="fixed"`` keeps every batch-norm
    layer's running statistics as they are (eval mode; their scale and shift still
    train unless frozen); ``"adapt"`` updates them from the training batches.
    Raises :class:`TrainingDiverged` when no epoch has a finite validation loss.
    """
    if batchnorm not in ("adapt", "fixed"):
        raise ValueError(f"batchnorm must be 'adapt' or 'fixed', got {batchnorm!r}")
    precision = precision or Precision.choose()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = _prepare(model, precision)
    apply_freezing(model, freeze)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=lr_decay)
    best_loss, best_state, best_epoch = float("inf"), None, 0
    history = []
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        set_train_mode(model, freeze)
        if batchnorm == "fixed":
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        losses = []
        for _ in range(steps):
            x, y = random_batch(*train, batch_size, crop, rng)
            x = x.to(precision.device).contiguous(memory_format=torch.channels_last)
            with precision.autocast():
                loss = F.cross_entropy(model(x), y.to(precision.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        used_lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        val_metrics = evaluate(model, *val, precision)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_metrics["loss"],
                        "val_dice": val_metrics["dice"], "lr": used_lr})
        if val_metrics["loss"] < best_loss:
            best_loss, best_epoch = val_metrics["loss"], epoch
            best_state = copy.deepcopy(model.state_dict())
        if progress is not None:
            progress(epoch, history[-1])
    if best_state is None:
        apply_freezing(model, "none")
        raise TrainingDiverged(f"training diverged: no epoch of {epochs} had a finite validation loss "
                               f"(losses {[h['val_loss'] for h in history]}); lower the learning rate ({lr})")
    model.load_state_dict(best_state)
    apply_freezing(model, "none")
    return StageResult(best_epoch=best_epoch, history=history, wall_time=time.perf_counter() - start)
