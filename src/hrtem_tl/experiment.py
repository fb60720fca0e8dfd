"""One study run: pretrain (cached), transfer-learn with freezing, evaluate everywhere.

A run is keyed by (series, pretraining domain, target domain, freezing, seed, and the
transfer-set size where a series varies it). Its pretrained model is shared by every
run with the same series, pretraining domain and seed: it is trained once, saved as a
checkpoint (with its evaluations on every domain) and reused. A *control* run has the
target equal to the pretraining domain: the transfer stage's training (same steps and
learning rate) on the model's own pretraining scenes, against which what transfer
learning does elsewhere is measured.

Protocol (:data:`PROTOCOL`): each stage picks its best epoch on the ``val`` split of
its own training domain; every reported evaluation is on the ``test`` split; transfer
sets come from :attr:`Series.transfer_split`, scenes the pretrained model never saw.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .config import Profile
from .datasets import DATASET_VERSION, DEFAULT_ROOT, load_domain
from .model import FREEZE_MODES, apply_freezing, build_unet, count_parameters, load_checkpoint, save_checkpoint
from .series import Series
from .train import Precision, StageResult, TrainingDiverged, evaluate, standardize, train_stage

DEFAULT_CHECKPOINTS = Path("cache/checkpoints")
#: Version of the study protocol (splits, selection, evaluation). 1: selection and
#: evaluation on one validation split, transfer sets from pretraining scenes.
#: 2: disjoint train / transfer / val / test scenes, evaluations on test, controls.
PROTOCOL = 2
SELECTION_SPLIT, REPORT_SPLIT = "val", "test"


@dataclass(frozen=True)
class RunSpec:
    """The key of one transfer-learning run."""

    series: str
    pretrain_domain: str
    target_domain: str
    freezing: str
    seed: int
    transfer_images: int | None = None  # None: the profile's transfer-set size

    @property
    def run_id(self) -> str:
        size = "" if self.transfer_images is None else f"|n{self.transfer_images}"
        return f"{self.series}|{self.pretrain_domain}>{self.target_domain}|{self.freezing}|s{self.seed}{size}"

    @property
    def pretrain_id(self) -> str:
        """The pretrained model the run starts from; a baseline run trains its own model."""
        return self.run_id if self.kind == "baseline" else pretrain_id(self.series, self.pretrain_domain, self.seed)

    @property
    def kind(self) -> str:
        """``"baseline"`` in the baseline series (one stage on a mixture of two domains),
        ``"control"`` when the target is the pretraining domain, else ``"transfer"``."""
        if self.series == "baseline":
            return "baseline"
        return "control" if self.pretrain_domain == self.target_domain else "transfer"


def run_config_hash(profile: Profile, series: str, precision: Precision) -> str:
    """The ``config_hash`` of a series' runs: its settings, dataset version, protocol and
    precision. A stored run counts as finished only if its hash equals this."""
    return profile.config_hash(series, f"data-v{DATASET_VERSION}", f"protocol-{PROTOCOL}", precision.name)


def pretrain_id(series: str, domain: str, seed: int) -> str:
    """The id of a pretrained model: ``<series>|<domain>|s<seed>``."""
    return f"{series}|{domain}|s{seed}"


@dataclass
class RunRecords:
    """Rows for the results tables produced by one run."""

    run: dict
    evaluations: list[dict]
    histories: list[dict]


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=64)
def _domain_split(profile: Profile, series: str, domain: str, split: str, root: str):
    data = load_domain(Series(series, profile), domain, split, Path(root))
    return standardize(data["images"]), data["masks"]


def domain_data(profile: Profile, series: str, domain: str, split: str, root: Path = DEFAULT_ROOT, limit: int | None = None):
    """Standardised (images, masks) of a domain split, cached per process."""
    images, masks = _domain_split(profile, series, domain, split, str(root))
    return (images[:limit], masks[:limit]) if limit else (images, masks)


def evaluate_domains(model, series: Series, precision: Precision, root: Path,
                     domains: list[str] | None = None) -> dict[str, dict]:
    """Metrics of ``model`` on the test split of ``domains`` (default: every domain of ``series``)."""
    names = domains if domains is not None else [d.name for d in series.domains]
    return {name: evaluate(model, *domain_data(series.profile, series.name, name, REPORT_SPLIT, root), precision)
            for name in names}


def check_spec(series: Series, spec: RunSpec) -> None:
    """Raise ``ValueError`` with a clear message for an impossible run."""
    series.domain(spec.pretrain_domain)
    series.domain(spec.target_domain)
    if spec.freezing not in FREEZE_MODES:
        raise ValueError(f"unknown freezing mode {spec.freezing!r}; choose one of {', '.join(FREEZE_MODES)}")
    if spec.kind == "control" and not series.has_controls:
        raise ValueError(f"target domain {spec.target_domain!r} equals the pretraining domain, and series "
                         f"{series.name!r} has no control runs; choose another target")
    if spec.kind == "control" and spec.freezing != "none":
        raise ValueError("a control run (target = pretraining domain) trains every weight: use --freeze none")
    if spec.kind == "baseline" and (spec.pretrain_domain, spec.target_domain) not in series.transfer_pairs():
        raise ValueError(f"({spec.pretrain_domain}, {spec.target_domain}) is not a mixture pair of the baseline "
                         f"series at profile {series.profile.name}: {series.transfer_pairs()}")
    if spec.kind == "baseline" and spec.freezing != "none":
        raise ValueError("a baseline model is trained in one stage with every weight: use --freeze none")
    if spec.kind == "baseline" and not 1 <= (spec.transfer_images or 0) < series.split_counts["train"]:
        raise ValueError(f"a mixture needs fewer minor-domain images than the {series.split_counts['train']} training "
                         f"images of a domain, got {spec.transfer_images}")
    available = series.split_counts[series.transfer_split]
    if spec.transfer_images is not None and not 1 <= spec.transfer_images <= available:
        raise ValueError(f"a transfer set of {spec.transfer_images} images is impossible: domain "
                         f"{spec.target_domain!r} has {available} training images at profile {series.profile.name}")


def transfer_split(series: Series, spec: RunSpec) -> str:
    """The split of the target domain that the transfer stage trains on: scenes the
    pretrained model never saw (:attr:`Series.transfer_split`), except for a control
    run, which trains further on its own pretraining scenes."""
    return "train" if spec.kind == "control" else series.transfer_split


def pretrained(series: Series, domain: str, seed: int, *, data_root: Path = DEFAULT_ROOT,
               checkpoints: Path = DEFAULT_CHECKPOINTS, precision: Precision | None = None):
    """The model pretrained on ``domain`` with ``seed``: loaded if cached, else trained.

    Returns (model, metadata) where metadata holds the stage result and evaluations.
    Raises :class:`TrainingDiverged` (stage ``"pretrain"``) if training diverges.
    """
    profile = series.profile
    precision = precision or Precision.choose(profile.training.mixed_precision)
    key = profile.pretrain_hash(series.name, domain, str(seed), "pretrain", f"data-v{DATASET_VERSION}",
                                f"protocol-{PROTOCOL}", precision.name)
    path = Path(checkpoints) / profile.name / series.name / f"pretrain_{domain}_s{seed}_{key}.safetensors"
    if path.exists():
        try:
            return load_checkpoint(path, precision.device)
        except Exception as err:  # a truncated or foreign file: retrain rather than trust it
            print(f"hrtem-tl: checkpoint {path} is unreadable ({type(err).__name__}); retraining it", file=sys.stderr)
            path.unlink(missing_ok=True)
    t = profile.training
    torch.manual_seed(seed)  # the initial weights belong to the seed, not to what ran before
    model = build_unet()
    try:
        result = train_stage(
            model, domain_data(profile, series.name, domain, "train", data_root),
            domain_data(profile, series.name, domain, SELECTION_SPLIT, data_root),
            epochs=t.pretrain_epochs, steps=t.pretrain_steps, lr=t.lr_pretrain, batch_size=t.batch_size,
            crop=t.crop, seed=seed, lr_decay=t.lr_decay, precision=precision,
        )
    except TrainingDiverged as err:
        raise TrainingDiverged(f"pretraining on {domain} (seed {seed}): {err}", stage="pretrain") from None
    meta = {"stage": asdict(result), "evaluations": evaluate_domains(model, series, precision, data_root),
            "precision": precision.name, "device": precision.device, "config_hash": key}
    save_checkpoint(model, path, meta)
    return model, meta


def _history_rows(run_id: str, profile: str, stage: str, result: dict) -> list[dict]:
    return [{"run_id": run_id, "profile": profile, "stage": stage, **h} for h in result["history"]]


def _eval_rows(run_id: str, profile: str, stage: str, evaluations: dict[str, dict]) -> list[dict]:
    return [{"run_id": run_id, "profile": profile, "stage": stage, "eval_domain": d, "split": REPORT_SPLIT, **m}
            for d, m in evaluations.items()]


def transfer_stage(series: Series, spec: RunSpec, model, *, data_root: Path, precision: Precision):
    """Train the pretrained ``model`` in place on the target domain of ``spec``.

    Returns (stage result, transfer set). Raises :class:`TrainingDiverged` (stage ``"transfer"``).
    """
    profile, t = series.profile, series.profile.training
    train_set = domain_data(profile, series.name, spec.target_domain, transfer_split(series, spec), data_root,
                            limit=spec.transfer_images or t.transfer_images)
    try:
        result: StageResult = train_stage(
            model, train_set, domain_data(profile, series.name, spec.target_domain, SELECTION_SPLIT, data_root),
            epochs=t.transfer_epochs, steps=t.transfer_steps, lr=t.lr_transfer, batch_size=t.batch_size,
            crop=t.crop, seed=spec.seed + 1000, freeze=spec.freezing, batchnorm=t.transfer_batchnorm,
            lr_decay=t.lr_decay, precision=precision,
        )
    except TrainingDiverged as err:
        raise TrainingDiverged(f"transfer {spec.run_id}: {err}", stage="transfer") from None
    return result, train_set


def _run_row(profile: Profile, series: Series, spec: RunSpec, precision: Precision) -> dict:
    """The columns of a ``runs`` row that every kind of run fills the same way."""
    t, counts = profile.training, series.split_counts
    return {
        "run_id": spec.run_id, "pretrain_id": spec.pretrain_id, "series": spec.series, "profile": profile.name,
        "kind": spec.kind, "protocol": PROTOCOL,
        "pretrain_domain": spec.pretrain_domain, "target_domain": spec.target_domain,
        "freezing": spec.freezing, "seed": spec.seed, "transfer_batchnorm": t.transfer_batchnorm,
        "lr_pretrain": t.lr_pretrain, "lr_transfer": t.lr_transfer,
        "pretrain_images": counts["train"], "val_images": counts["val"], "test_images": counts["test"],
        "pretrain_epochs": t.pretrain_epochs, "transfer_epochs": t.transfer_epochs,
        "pretrain_steps": t.pretrain_steps, "transfer_steps": t.transfer_steps,
        "batch_size": t.batch_size, "crop": t.crop,
        "device": precision.device, "precision": precision.name,
        "package_version": __version__, "git_commit": git_commit(),
        "config_hash": run_config_hash(profile, spec.series, precision), "finished_at": time.time(),
    }


def run_baseline(profile: Profile, spec: RunSpec, *, data_root: Path = DEFAULT_ROOT,
                 precision: Precision | None = None) -> RunRecords:
    """One mixture-baseline model: a single stage, with the pretraining settings, on the
    major domain's training images with ``spec.transfer_images`` of them replaced by
    minor-domain images from the transfer split (the scenes a transfer to the minor domain
    trains on), selected on both domains' validation images, evaluated on every domain.

    Recorded as ``kind = "baseline"`` with ``major_images`` and ``minor_images``; its
    evaluations are stage ``"pretrain"`` (there is one stage), as in the original's table.
    Raises :class:`TrainingDiverged` (stage ``"pretrain"``).
    """
    series = Series(spec.series, profile)
    check_spec(series, spec)
    t = profile.training
    precision = precision or Precision.choose(t.mixed_precision)
    minor = spec.transfer_images
    major_set = domain_data(profile, series.name, spec.pretrain_domain, "train", data_root)
    major = len(major_set[0]) - minor
    minor_set = domain_data(profile, series.name, spec.target_domain, series.transfer_split, data_root, limit=minor)
    train = tuple(np.concatenate([a[:major], b]) for a, b in zip(major_set, minor_set))
    val = tuple(np.concatenate(parts) for parts in zip(
        domain_data(profile, series.name, spec.pretrain_domain, SELECTION_SPLIT, data_root),
        domain_data(profile, series.name, spec.target_domain, SELECTION_SPLIT, data_root)))
    torch.manual_seed(spec.seed)
    model = build_unet()
    try:
        result = train_stage(model, train, val, epochs=t.pretrain_epochs, steps=t.pretrain_steps, lr=t.lr_pretrain,
                             batch_size=t.batch_size, crop=t.crop, seed=spec.seed, lr_decay=t.lr_decay,
                             precision=precision)
    except TrainingDiverged as err:
        raise TrainingDiverged(f"baseline {spec.run_id}: {err}", stage="pretrain") from None
    evaluations = evaluate_domains(model, series, precision, data_root)
    run = _run_row(profile, series, spec, precision) | {
        "lr_transfer": float("nan"), "transfer_images": 0, "transfer_epochs": 0, "transfer_steps": 0,
        "major_images": major, "minor_images": minor,
        "best_epoch_pretrain": result.best_epoch, "best_epoch_transfer": 0,
        "params_total": count_parameters(model), "params_trainable": count_parameters(model, trainable_only=True),
        "wall_pretrain_s": result.wall_time, "wall_transfer_s": 0.0,
    }
    return RunRecords(run=run, evaluations=_eval_rows(spec.run_id, profile.name, "pretrain", evaluations),
                      histories=_history_rows(spec.run_id, profile.name, "pretrain", asdict(result)))


def run_transfer(profile: Profile, spec: RunSpec, *, data_root: Path = DEFAULT_ROOT,
                 checkpoints: Path = DEFAULT_CHECKPOINTS, precision: Precision | None = None) -> RunRecords:
    """Pretrain (or reuse), transfer-learn on the target domain, evaluate after each stage.

    Raises :class:`TrainingDiverged` naming the stage that diverged.
    """
    series = Series(spec.series, profile)
    check_spec(series, spec)
    t = profile.training
    precision = precision or Precision.choose(t.mixed_precision)
    model, meta = pretrained(series, spec.pretrain_domain, spec.seed, data_root=data_root,
                             checkpoints=checkpoints, precision=precision)
    result, train_set = transfer_stage(series, spec, model, data_root=data_root, precision=precision)
    transfer_evals = evaluate_domains(model, series, precision, data_root,
                                      series.transfer_eval_domains(spec.pretrain_domain, spec.target_domain))
    apply_freezing(model, spec.freezing)
    trainable = count_parameters(model, trainable_only=True)
    apply_freezing(model, "none")
    run = _run_row(profile, series, spec, precision) | {
        "transfer_images": len(train_set[0]),
        "best_epoch_pretrain": meta["stage"]["best_epoch"], "best_epoch_transfer": result.best_epoch,
        "params_total": count_parameters(model), "params_trainable": trainable,
        "wall_pretrain_s": meta["stage"]["wall_time"], "wall_transfer_s": result.wall_time,
    }
    rid, name = spec.run_id, profile.name
    evaluations = _eval_rows(rid, name, "pretrain", meta["evaluations"]) + _eval_rows(rid, name, "transfer", transfer_evals)
    histories = _history_rows(rid, name, "pretrain", meta["stage"]) + _history_rows(rid, name, "transfer", asdict(result))
    return RunRecords(run=run, evaluations=evaluations, histories=histories)
