"""Models as folders: ``model.safetensors`` plus a ``config.json`` model card.

A model folder holds the U-Net's weights and buffers (safetensors; never unpickled)
and a card that says what the model is and how it was made::

    format          1
    name            folder name unless given
    architecture    model.ARCHITECTURE
    pixel_size      [Å] of the images it was trained on; inputs are resampled to it
    crop            [px] training crop: the smallest field the model can segment
    domains         training domains (names, or "user data")
    profile         scale profile and its settings, when made by the study
    weights         "fp32", "bf16" or "fp16": how the tensors are stored (loaded as fp32)
    test_scores     {domain: {"dice": ...}} when known
    made_by         how it was made ("study pretraining", "finetune", ...)
    parent          the model it was fine-tuned from, if any
    created         ISO date

Search path of :func:`list_models` and :func:`resolve_model`: every folder of
``$HRTEM_TL_MODELS`` (``os.pathsep``-separated), the user folder
``$XDG_DATA_HOME/hrtem-tl/models`` (default ``~/.local/share/hrtem-tl/models``), and
the repository's ``models/`` folder when it exists (the shipped models).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .model import ARCHITECTURE, build_unet
from .writers import replacing

MODEL_FILE, CARD_FILE = "model.safetensors", "config.json"
CARD_FORMAT = 1
WEIGHT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
REPO_MODELS = Path(__file__).resolve().parents[2] / "models"


def user_models_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "hrtem-tl" / "models"


def search_path() -> list[Path]:
    """Folders searched for models, in order: ``$HRTEM_TL_MODELS``, the user folder, ``models/``."""
    paths = [Path(p) for p in os.environ.get("HRTEM_TL_MODELS", "").split(os.pathsep) if p]
    paths.append(user_models_dir())
    if REPO_MODELS.is_dir():
        paths.append(REPO_MODELS)
    return paths


def save_model(model: nn.Module, folder: Path, card: dict, weights: str = "fp32") -> Path:
    """Write ``model`` and its ``card`` as a model folder; returns the folder.

    ``weights="bf16"`` or ``"fp16"`` stores floating-point tensors in 16 bits (half the
    size; for inference) and says so in the card. ``card`` needs ``pixel_size`` [Å] and
    ``crop`` [px].
    """
    if weights not in WEIGHT_DTYPES:
        raise ValueError(f"unknown weight precision {weights!r}; choose one of {', '.join(WEIGHT_DTYPES)}")
    for key in ("pixel_size", "crop"):
        if not isinstance(card.get(key), (int, float)) or not card[key] > 0:
            raise ValueError(f"a model card needs a positive {key!r}, got {card.get(key)!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = WEIGHT_DTYPES[weights]
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        state[k] = (v.to(dtype) if v.is_floating_point() else v).contiguous()
    full = {"format": CARD_FORMAT, "name": folder.name, "architecture": ARCHITECTURE,
            "created": datetime.date.today().isoformat(), **card, "weights": weights}
    path, card_path = folder / MODEL_FILE, folder / CARD_FILE
    # the weights are renamed first, the card last: its presence marks a complete folder
    with replacing(card_path) as tmp_card, replacing(path) as tmp:
        save_file(state, str(tmp))
        tmp_card.write_text(json.dumps(full, indent=2, default=str) + "\n")
    return folder


def read_card(folder: Path) -> dict:
    """The card of model folder ``folder``; ``ValueError`` (one line) if it is not a valid one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"model folder {folder} does not exist")
    card_path = folder / CARD_FILE
    if not card_path.is_file() or not (folder / MODEL_FILE).is_file():
        raise ValueError(f"{folder} is not a model folder: it needs {MODEL_FILE} and {CARD_FILE}")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{card_path} is not a valid model card: {err}") from None
    if not isinstance(card, dict):
        raise ValueError(f"{card_path} is not a valid model card: not a JSON object")
    if card.get("architecture") != ARCHITECTURE:
        raise ValueError(f"{card_path} describes another architecture: {card.get('architecture')}")
    for key in ("pixel_size", "crop"):
        if not isinstance(card.get(key), (int, float)) or not card[key] > 0:
            raise ValueError(f"{card_path} is not a valid model card: {key!r} must be a positive number")
    return card


def load_model(folder: Path, device: str = "cpu") -> tuple[nn.Module, dict]:
    """The model (fp32 weights, eval mode) and card of model folder ``folder``."""
    card = read_card(folder)
    path = Path(folder) / MODEL_FILE
    try:
        state = load_file(str(path), device=device)
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{path} is unreadable: {err}") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model = build_unet()
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit the architecture: {str(err).splitlines()[0]}") from None
    return model.to(device).eval(), card


def list_models(paths: list[Path] | None = None) -> list[tuple[Path, dict]]:
    """(folder, card) of every valid model folder directly under ``paths`` (default :func:`search_path`)."""
    found, seen = [], set()
    for root in paths if paths is not None else search_path():
        if not Path(root).is_dir():
            continue
        for folder in sorted(Path(root).iterdir()):
            if folder.resolve() in seen or not (folder / CARD_FILE).is_file():
                continue
            try:
                card = read_card(folder)
            except ValueError:
                continue
            seen.add(folder.resolve())
            found.append((folder, card))
    return found


def resolve_model(name: str | Path | None) -> Path:
    """The folder of model ``name``: a folder path, or a model name on the search path.

    ``None``: the only model installed, or the first one (there is an order). Raises a
    one-line ``ValueError`` that says how to get a model when none is installed.
    """
    if name is not None and (Path(name).is_dir() or os.sep in str(name)):
        read_card(Path(name))
        return Path(name)
    models = list_models()
    if not models:
        raise ValueError("no segmentation model is installed; make one with 'hrtem-tl finetune IMAGES --masks MASKS "
                         "--from MODEL', or train one with 'hrtem-tl train' and export its checkpoint with "
                         f"'hrtem-tl export-model CHECKPOINT {user_models_dir()}/NAME', then pass --model NAME|DIR")
    if name is None:
        return models[0][0]
    for folder, card in models:
        if name in (folder.name, card.get("name")):
            return folder
    raise ValueError(f"no model named {name!r}; installed: {', '.join(f.name for f, _ in models)} "
                     "(see 'hrtem-tl models')")


def describe(folder: Path, card: dict) -> str:
    """One line per model for ``hrtem-tl models``."""
    domains = card.get("domains") or []
    scores = card.get("test_scores") or {}
    dice = [s.get("dice") for s in scores.values() if isinstance(s, dict) and s.get("dice") is not None]
    score = f", test Dice {min(dice):.3f}-{max(dice):.3f} over {len(dice)} domains" if dice else ""
    return (f"{card.get('name', folder.name):20s} {card['pixel_size']:.3g} Å/px, {card.get('weights', 'fp32')}, "
            f"domains: {', '.join(map(str, domains)) or 'unknown'}{score}  [{folder}]")


def export_checkpoint(checkpoint: Path, out: Path, *, profiles: Path | None = None, weights: str = "fp32",
                      name: str | None = None) -> Path:
    """A study checkpoint (``<profile>/<series>/pretrain_<domain>_s<seed>_<key>.safetensors``
    under the checkpoint root) as a model folder ``out``.

    The profile, series and domain come from the checkpoint's path; the pixel size and
    crop from the profile (``profiles``: a profile file, default the packaged one); the
    test scores from the evaluations in its sidecar.
    """
    from .config import load_profile
    from .model import load_checkpoint

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file() or not checkpoint.with_suffix(".json").is_file():
        raise ValueError(f"checkpoint {checkpoint} does not exist or has no .json sidecar")
    model, meta = load_checkpoint(checkpoint)
    stem = checkpoint.stem.split("_")
    if len(stem) < 4 or stem[0] != "pretrain":
        raise ValueError(f"checkpoint {checkpoint}: name is not pretrain_<domain>_s<seed>_<key>.safetensors")
    domain, seed = "_".join(stem[1:-2]), stem[-2]
    series, profile_name = checkpoint.parent.name, checkpoint.parent.parent.name
    profile = load_profile(profile_name, path=profiles)
    scores = {d: {k: m[k] for k in ("dice", "loss") if k in m} for d, m in (meta.get("evaluations") or {}).items()}
    card = {"name": name or Path(out).name, "pixel_size": profile.simulation.pixel_size, "crop": profile.training.crop,
            "domains": [domain], "series": series, "seed": seed, "profile": profile.name,
            "settings": profile.to_dict(), "precision": meta.get("precision"), "test_scores": scores,
            "test_split": "test", "made_by": f"study pretraining on {series}/{domain} (exported from {checkpoint.name})",
            "config_hash": meta.get("config_hash")}
    return save_model(model, out, card, weights=weights)


def remove_model(folder: Path) -> None:
    """Delete a model folder (after checking that it is one)."""
    read_card(folder)
    shutil.rmtree(folder)
