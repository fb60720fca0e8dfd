"""The U-Net (ResNet-18 encoder), its encoder/decoder split, freezing and checkpoints.

Split used for weight freezing (segmentation_models_pytorch names):

* ``encoder``: ``model.encoder``, the ResNet-18 stem (conv, batch norm, ReLU,
  max-pool) and its four stages of residual blocks (about 78 % of the weights);
* ``decoder``: ``model.decoder``, the upsampling blocks;
* the 3x3 segmentation head stays trainable in every mode.

A frozen part gets ``requires_grad = False`` *and* is held in eval mode during
training, so its batch-norm running statistics do not move either.

Checkpoints are safetensors files with a JSON sidecar; loading never unpickles.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from .writers import replacing

FREEZE_MODES = ("none", "encoder", "decoder")
ARCHITECTURE = {"arch": "Unet", "encoder_name": "resnet18", "encoder_weights": None, "in_channels": 1, "classes": 2}


def build_unet() -> nn.Module:
    """A freshly initialised U-Net with a ResNet-18 encoder: 1 input channel, 2 classes."""
    import segmentation_models_pytorch as smp

    kwargs = {k: v for k, v in ARCHITECTURE.items() if k != "arch"}
    return smp.Unet(**kwargs)


def frozen_part(model: nn.Module, mode: str) -> nn.Module | None:
    """The sub-module frozen by ``mode`` (``None`` for ``"none"``)."""
    if mode not in FREEZE_MODES:
        raise ValueError(f"unknown freezing mode {mode!r}; choose one of {', '.join(FREEZE_MODES)}")
    return {"none": None, "encoder": model.encoder, "decoder": model.decoder}[mode]


def apply_freezing(model: nn.Module, mode: str) -> None:
    """Stop gradients through the part that ``mode`` freezes (all else trainable)."""
    for p in model.parameters():
        p.requires_grad_(True)
    part = frozen_part(model, mode)
    if part is not None:
        for p in part.parameters():
            p.requires_grad_(False)


def set_train_mode(model: nn.Module, mode: str) -> None:
    """Training mode for the trainable part, eval mode for the frozen part."""
    model.train()
    part = frozen_part(model, mode)
    if part is not None:
        part.eval()


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def save_checkpoint(model: nn.Module, path: Path, meta: dict) -> None:
    """Weights and buffers to ``path`` (safetensors), ``meta`` + architecture to a .json beside it.

    Both go through temporary files that a failed write removes.
    """
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # the sidecar is renamed first, the weights last: their presence marks a complete checkpoint
    with replacing(path) as tmp, replacing(path.with_suffix(".json")) as tmp_json:
        save_file(state, str(tmp))
        tmp_json.write_text(json.dumps({"architecture": ARCHITECTURE, **meta}, indent=2))


def load_checkpoint(path: Path, device: str = "cpu") -> tuple[nn.Module, dict]:
    """A model and its metadata from a safetensors checkpoint and its JSON sidecar."""
    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    if meta.get("architecture") != ARCHITECTURE:
        raise ValueError(f"checkpoint {path} holds another architecture: {meta.get('architecture')}")
    model = build_unet()
    model.load_state_dict(load_file(str(path), device=device))
    return model.to(device), meta
