"""Scale profiles: one typed settings object per profile, read from ``profiles.toml``.

Lengths are in Angstrom. A profile is immutable; stages receive it as an argument
and never read global state.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

PROFILE_FILE = resources.files("hrtem_tl") / "profiles.toml"


@dataclass(frozen=True)
class SimulationSettings:
    """Multislice and imaging settings.

    field_of_view : side of the square cell [Å]
    sampling : multislice grid spacing [Å]
    pixel_size : image pixel size after downsampling [Å]
    phonon_configs : frozen-phonon configurations averaged per image
    slice_thickness : multislice slice thickness [Å]
    film_thickness : range of the carbon film thickness [Å]
    max_particles : particles per scene are drawn from 1 .. max_particles
    calibration_steps : coarse and fine defocus steps of the zero-defocus search [Å]
    """

    field_of_view: float
    sampling: float
    pixel_size: float
    phonon_configs: int
    slice_thickness: float
    film_thickness: tuple[float, float]
    max_particles: int
    calibration_steps: tuple[float, float]
    energy: float = 300e3  # [eV]
    focal_spread: float = 10.0  # 1/e width of the defocus spread [Å]
    defocus_sigma: float = 15.0  # per-image defocus scatter around the domain value [Å]
    phonon_sigma: float = 0.1  # rms thermal displacement [Å]

    @property
    def image_size(self) -> int:
        """Image side in pixels."""
        return int(round(self.field_of_view / self.pixel_size))


@dataclass(frozen=True)
class DataSettings:
    """Scenes per scene set and split.

    train_images : pretraining scenes
    val_images : model-selection scenes (best epoch of each stage)
    test_images : scenes every reported evaluation uses
    The transfer split's size follows from the transfer-set sizes (see
    :meth:`hrtem_tl.series.Series.split_counts`).
    """

    train_images: int
    val_images: int
    test_images: int


@dataclass(frozen=True)
class TrainingSettings:
    """Training settings; an epoch is ``*_steps`` mini-batches of random crops."""

    crop: int
    batch_size: int
    pretrain_epochs: int
    pretrain_steps: int
    transfer_epochs: int
    transfer_steps: int
    transfer_images: int
    lr_pretrain: float
    lr_transfer: float
    seeds: tuple[int, ...]
    lr_decay: float = 0.99  # per epoch
    mixed_precision: bool = True
    # batch-norm running statistics during transfer learning: "adapt" (updated from the
    # target's batches, PyTorch's training mode) or "fixed" (kept from pretraining)
    transfer_batchnorm: str = "adapt"


@dataclass(frozen=True)
class StudySettings:
    """Per-series scaling of the study grid."""

    structure_domains: tuple[str, ...] | None = None
    structure_pairs: str = "all"  # "all" ordered pairs, or "reduced" (see series.py)
    structure_train_images: int | None = None
    structure_val_images: int | None = None
    structure_test_images: int | None = None
    structure_seeds: tuple[int, ...] | None = None
    structure_transfer_eval: str = "all"  # "all" domains, or "related" (see Series.transfer_eval_domains)
    defocus_domains: tuple[str, ...] | None = None
    tlsize_sizes: tuple[int, ...] | None = None  # transfer-set sizes [images] of the tlsize series
    tlsize_seeds: tuple[int, ...] | None = None
    # the mixture baseline: single-stage models on a mixture of a major and a minor
    # defocus domain (pairs of domain names), with these numbers of minor-domain images
    baseline_pairs: tuple[tuple[str, str], ...] | None = None
    baseline_minor: tuple[int, ...] | None = None
    baseline_seeds: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.baseline_pairs is not None:
            object.__setattr__(self, "baseline_pairs", tuple(tuple(p) for p in self.baseline_pairs))
            if not self.baseline_pairs or any(len(p) != 2 or p[0] == p[1] for p in self.baseline_pairs):
                raise ValueError(f"baseline_pairs must be pairs of two different defocus domains, "
                                 f"got {[list(p) for p in self.baseline_pairs]!r}")
        if self.baseline_minor is not None and (not self.baseline_minor or any(
                isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.baseline_minor)):
            raise ValueError(f"baseline_minor must be positive whole numbers of images, got {list(self.baseline_minor)!r}")
        if self.tlsize_sizes is not None and (not self.tlsize_sizes or any(
                not isinstance(n, int) or n < 1 for n in self.tlsize_sizes)):
            raise ValueError(f"tlsize_sizes must be positive whole numbers of images, got {list(self.tlsize_sizes)!r}")
        if self.structure_pairs not in ("all", "reduced"):
            raise ValueError(f"structure_pairs must be 'all' or 'reduced', got {self.structure_pairs!r}")
        if self.structure_transfer_eval not in ("all", "related"):
            raise ValueError(f"structure_transfer_eval must be 'all' or 'related', got {self.structure_transfer_eval!r}")
        for name in ("structure_train_images", "structure_val_images", "structure_test_images"):
            _check_count(name, getattr(self, name), allow_none=True)

    def for_series(self, series: str) -> dict:
        """The settings that apply to ``series`` (those named ``<series>_...``; the baseline
        series, imaged at the defocus domains, also ``defocus_domains``)."""
        return {k: v for k, v in asdict(self).items()
                if k.startswith(f"{series}_") or (series == "baseline" and k == "defocus_domains")}


@dataclass(frozen=True)
class Profile:
    """A named scale profile."""

    name: str
    description: str
    simulation: SimulationSettings
    data: DataSettings
    training: TrainingSettings
    study: StudySettings = field(default_factory=StudySettings)

    def to_dict(self) -> dict:
        return asdict(self)

    def pretrain_hash(self, series: str, *parts: str) -> str:
        """:meth:`config_hash` without the transfer stage's settings (:data:`TRANSFER_FIELDS`):
        the key of a pretrained model, shared by profiles that differ only in how they transfer."""
        training = {k: v for k, v in asdict(self.training).items() if k not in TRANSFER_FIELDS + GRID_FIELDS}
        return self.config_hash(series, json.dumps(training, sort_keys=True), *parts, training=False)

    def config_hash(self, series: str, *parts: str, training: bool = True) -> str:
        """A short stable hash of the settings that ``series``' runs depend on (plus ``parts``).

        Left out: study settings of other series (scaling one series does not
        invalidate the datasets, models and results of another), the description, and
        the grid settings (:data:`GRID_FIELDS`: which seeds, pairs and set sizes a sweep
        runs), which choose runs but change none.
        """
        settings = {**self.to_dict(), "study": self.study.for_series(series)}
        del settings["description"]
        if not training:
            del settings["training"]  # the caller passes the training settings it depends on in parts
        for section in ("training", "study"):
            for name in GRID_FIELDS:
                settings.get(section, {}).pop(name, None)
        text = json.dumps(settings, sort_keys=True) + "|".join((series, *parts))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


#: Settings that choose which runs a sweep makes, not what any run computes.
GRID_FIELDS = ("seeds", "structure_seeds", "tlsize_seeds", "tlsize_sizes", "structure_pairs", "baseline_pairs",
               "baseline_minor", "baseline_seeds")


def _check_count(name: str, value, *, allow_none: bool = False, minimum: int = 1) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _validate(profile: "Profile") -> None:
    """Types and ranges of every setting; raises ``ValueError`` naming the key."""
    sim, data, t = profile.simulation, profile.data, profile.training
    for name in ("field_of_view", "sampling", "pixel_size", "slice_thickness", "energy"):
        _check_positive(f"simulation.{name}", getattr(sim, name))
    for name in ("focal_spread", "defocus_sigma", "phonon_sigma"):
        value = getattr(sim, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"simulation.{name} must be a number >= 0, got {value!r}")
    if sim.pixel_size < sim.sampling:
        raise ValueError(f"simulation.pixel_size ({sim.pixel_size}) must not be finer than simulation.sampling "
                         f"({sim.sampling})")
    _check_count("simulation.phonon_configs", sim.phonon_configs)
    _check_count("simulation.max_particles", sim.max_particles)
    for name in ("film_thickness", "calibration_steps"):
        pair = getattr(sim, name)
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise ValueError(f"simulation.{name} must be a pair of numbers, got {pair!r}")
        for v in pair:
            _check_positive(f"simulation.{name}", v)
    for name in ("train_images", "val_images", "test_images"):
        _check_count(f"data.{name}", getattr(data, name))
    for name in ("crop", "batch_size", "pretrain_epochs", "pretrain_steps", "transfer_epochs", "transfer_steps",
                 "transfer_images"):
        _check_count(f"training.{name}", getattr(t, name))
    for name in ("lr_pretrain", "lr_transfer", "lr_decay"):
        _check_positive(f"training.{name}", getattr(t, name))
    if not isinstance(t.seeds, tuple) or not t.seeds:
        raise ValueError(f"training.seeds must be a non-empty list of whole numbers, got {t.seeds!r}")
    for seed in t.seeds:
        _check_count("training.seeds", seed, minimum=0)
    if t.transfer_batchnorm not in ("adapt", "fixed"):
        raise ValueError(f"training.transfer_batchnorm must be 'adapt' or 'fixed', got {t.transfer_batchnorm!r}")
    if not isinstance(t.mixed_precision, bool):
        raise ValueError(f"training.mixed_precision must be true or false, got {t.mixed_precision!r}")


#: Training settings of the transfer stage only: a pretrained model does not depend on them.
TRANSFER_FIELDS = ("transfer_epochs", "transfer_steps", "transfer_images", "lr_transfer", "transfer_batchnorm")


def _tuples(section: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}


def available_profiles(path: Path | None = None) -> list[str]:
    """Names of the profiles in the profile file."""
    with open(path or PROFILE_FILE, "rb") as fh:
        return list(tomllib.load(fh))


def load_profile(name: str, path: Path | None = None) -> Profile:
    """Read profile ``name``; raises ``ValueError`` naming the known profiles."""
    with open(path or PROFILE_FILE, "rb") as fh:
        table = tomllib.load(fh)
    if name not in table:
        raise ValueError(f"unknown profile {name!r}; known profiles: {', '.join(table)}")
    raw = table[name]
    try:
        profile = Profile(
            name=name,
            description=raw.get("description", ""),
            simulation=SimulationSettings(**_tuples(raw["simulation"])),
            data=DataSettings(**raw["data"]),
            training=TrainingSettings(**_tuples(raw["training"])),
            study=StudySettings(**_tuples(raw.get("study", {}))),
        )
        _validate(profile)
    except KeyError as err:
        raise ValueError(f"profile {name!r} is malformed: missing section or key {err}") from None
    except (TypeError, ValueError) as err:
        raise ValueError(f"profile {name!r} is malformed: {err}") from None
    return profile
