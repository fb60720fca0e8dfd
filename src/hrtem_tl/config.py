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
    """Images per domain: training and validation splits."""

    train_images: int
    val_images: int


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


@dataclass(frozen=True)
class StudySettings:
    """Per-series scaling of the study grid."""

    structure_domains: tuple[str, ...] | None = None
    structure_pairs: str = "all"  # "all" ordered pairs, or "reduced" (see series.py)
    structure_train_images: int | None = None
    structure_val_images: int | None = None
    structure_seeds: tuple[int, ...] | None = None
    structure_transfer_eval: str = "all"  # "all" domains, or "related" (see Series.transfer_eval_domains)
    defocus_domains: tuple[str, ...] | None = None
    tlsize_sizes: tuple[int, ...] | None = None  # transfer-set sizes [images] of the tlsize series
    tlsize_seeds: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.tlsize_sizes is not None and (not self.tlsize_sizes or any(
                not isinstance(n, int) or n < 1 for n in self.tlsize_sizes)):
            raise ValueError(f"tlsize_sizes must be positive whole numbers of images, got {list(self.tlsize_sizes)!r}")
        if self.structure_pairs not in ("all", "reduced"):
            raise ValueError(f"structure_pairs must be 'all' or 'reduced', got {self.structure_pairs!r}")
        if self.structure_transfer_eval not in ("all", "related"):
            raise ValueError(f"structure_transfer_eval must be 'all' or 'related', got {self.structure_transfer_eval!r}")

    def for_series(self, series: str) -> dict:
        """The settings that apply to ``series`` (those named ``<series>_...``)."""
        return {k: v for k, v in asdict(self).items() if k.startswith(f"{series}_")}


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

    def config_hash(self, series: str, *parts: str) -> str:
        """A short stable hash of the settings that ``series`` uses (plus any extra ``parts``).

        Study settings of other series are left out, so scaling one series does not
        invalidate the datasets, models and results of another; so is the description.
        """
        settings = {**self.to_dict(), "study": self.study.for_series(series)}
        del settings["description"]
        text = json.dumps(settings, sort_keys=True) + "|".join((series, *parts))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


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
        return Profile(
            name=name,
            description=raw.get("description", ""),
            simulation=SimulationSettings(**_tuples(raw["simulation"])),
            data=DataSettings(**raw["data"]),
            training=TrainingSettings(**_tuples(raw["training"])),
            study=StudySettings(**_tuples(raw.get("study", {}))),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"profile {name!r} is malformed: {err}") from None
