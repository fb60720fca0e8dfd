"""The study's dataset series: their domains, scene sets and run grids.

A *scene set* is a family of atomic scenes (lattice and particle size); a *domain*
is a scene set imaged under one condition (defocus [nm], dose [e-/Å²]). The noise,
defocus and tlsize series share the CdSe scene set, so they share simulations. The
tlsize series repeats the noise series' transfers with several transfer-set sizes
(full fine-tuning only), to measure what more transfer data buys.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

from .config import Profile
from .lattices import LATTICES, get_lattice

FREEZING = ("none", "encoder", "decoder")
DOSES = (30, 75, 150, 300, 600)  # noise series [e-/Å²]
DEFOCI = tuple(range(-25, 30, 5))  # defocus series [nm]
DEFOCUS_PRETRAIN = tuple(range(-10, 15, 5))  # defocus-series pretraining domains [nm]
SIZE_RADII = {"small": (10.0, 20.0), "large": (25.0, 35.0)}  # particle radius [Å]


@dataclass(frozen=True)
class SceneSet:
    """Scenes of one lattice with particle radii drawn from ``radius_range`` [Å]."""

    name: str
    formula: str
    radius_range: tuple[float, float]

    @property
    def lattice(self):
        return get_lattice(self.formula)


@dataclass(frozen=True)
class Domain:
    """A scene set imaged at ``defocus`` [nm] and ``dose`` [e-/Å²]."""

    name: str
    scene_set: SceneSet
    defocus: float
    dose: float

    def __post_init__(self):
        if self.dose <= 0:
            raise ValueError(f"domain {self.name!r}: dose must be positive, got {self.dose}")


def parse_structure_domain(domain: str) -> tuple[str, str]:
    """``'Fe3O4_small'`` -> ``('Fe3O4', 'small')``: the lattice and particle size of a
    structure-series domain name."""
    lattice, _, size = domain.rpartition("_")
    return lattice, size


CDSE_SCENES = SceneSet("CdSe_3-5nm", "CdSe", (15.0, 25.0))


def _noise_domains() -> list[Domain]:
    return [Domain(f"dose{d}", CDSE_SCENES, -10.0, float(d)) for d in DOSES]


def _defocus_domains() -> list[Domain]:
    return [Domain(f"df{f}", CDSE_SCENES, float(f), 400.0) for f in DEFOCI]


def _structure_domains() -> list[Domain]:
    return [
        Domain(f"{formula}_{size}", SceneSet(f"{formula}_{size}", formula, radii), -10.0, 300.0)
        for formula in LATTICES
        for size, radii in SIZE_RADII.items()
    ]


SERIES_DOMAINS = {"noise": _noise_domains, "structure": _structure_domains, "defocus": _defocus_domains,
                  "tlsize": _noise_domains, "baseline": _defocus_domains}
#: the mixture baseline's (major, minor) pair where a profile names none (the original's pair)
BASELINE_PAIRS = (("df-10", "df5"),)


@dataclass(frozen=True)
class Series:
    """A dataset series scaled by a profile: its domains, image counts and run grid."""

    name: str
    profile: Profile

    def __post_init__(self):
        if self.name not in SERIES_DOMAINS:
            raise ValueError(f"unknown series {self.name!r}; known series: {', '.join(SERIES_DOMAINS)}")
        key = f"{'defocus' if self.name == 'baseline' else self.name}_domains"
        keep = getattr(self.profile.study, key, None)
        if keep is not None:
            known = [d.name for d in SERIES_DOMAINS[self.name]()]
            unknown = [k for k in keep if k not in known]
            if unknown or len(keep) < 2:
                raise ValueError(f"profile {self.profile.name}: study.{key} must name at least two of "
                                 f"{', '.join(known)}; got {list(keep)!r}")

    @property
    def domains(self) -> list[Domain]:
        every = SERIES_DOMAINS[self.name]()
        keep = {
            "structure": self.profile.study.structure_domains,
            "defocus": self.profile.study.defocus_domains,
            "baseline": self.profile.study.defocus_domains,
        }.get(self.name)
        return [d for d in every if keep is None or d.name in keep]

    def domain(self, name: str) -> Domain:
        for d in self.domains:
            if d.name == name:
                return d
        known = ", ".join(d.name for d in self.domains)
        raise ValueError(f"unknown domain {name!r} for series {self.name!r} (profile {self.profile.name}); known: {known}")

    @property
    def scene_sets(self) -> list[SceneSet]:
        return list(dict.fromkeys(d.scene_set for d in self.domains))

    @property
    def shares_scenes(self) -> bool:
        """Whether the domains image one scene set under several conditions (noise,
        defocus, tlsize), rather than each domain having scenes of its own (structure)."""
        return len(self.scene_sets) < len(self.domains)

    @property
    def transfer_split(self) -> str:
        """The split a transfer set is drawn from: scenes no pretrained model saw.

        Where domains share one scene set, the ``transfer`` split (scenes apart from
        the pretraining ``train`` scenes); where each domain has scenes of its own, the
        target's ``train`` split, which a model pretrained on another domain never saw.
        """
        return "transfer" if self.shares_scenes else "train"

    @property
    def split_counts(self) -> dict[str, int]:
        """Scenes per scene set and split (``train``, ``transfer``, ``val``, ``test``)."""
        study, data = self.profile.study, self.profile.data
        if self.name == "structure":
            counts = {"train": study.structure_train_images or data.train_images,
                      "val": study.structure_val_images or data.val_images,
                      "test": study.structure_test_images or data.test_images}
        else:
            counts = {"train": data.train_images, "val": data.val_images, "test": data.test_images}
        largest = max(n or self.profile.training.transfer_images for n in self.transfer_sizes)
        counts["transfer"] = largest if self.transfer_split == "transfer" else 0
        if self.transfer_split == "train" and largest > counts["train"]:
            raise ValueError(f"profile {self.profile.name}: a transfer set of {largest} images needs at least as many "
                             f"training scenes per domain in series {self.name!r}, which has {counts['train']}")
        return {split: counts[split] for split in ("train", "transfer", "val", "test")}

    @property
    def seeds(self) -> tuple[int, ...]:
        chosen = {"structure": self.profile.study.structure_seeds, "tlsize": self.profile.study.tlsize_seeds,
                  "baseline": self.profile.study.baseline_seeds}
        return chosen.get(self.name) or self.profile.training.seeds

    @property
    def transfer_sizes(self) -> tuple[int | None, ...]:
        """Transfer-set sizes of the grid; ``None`` is the profile's one size
        (``training.transfer_images``), left out of run ids."""
        if self.name == "tlsize":
            return self.profile.study.tlsize_sizes or (self.profile.training.transfer_images,)
        if self.name == "baseline":  # minor-domain images of each mixture
            return self.profile.study.baseline_minor or (self.profile.training.transfer_images,)
        return (None,)

    @property
    def freezing_modes(self) -> tuple[str, ...]:
        """Weight-freezing modes of the grid (the tlsize series fine-tunes every weight; a
        baseline model is trained in one stage)."""
        return ("none",) if self.name in ("tlsize", "baseline") else FREEZING

    @property
    def pretrain_domains(self) -> list[str]:
        names = [d.name for d in self.domains]
        if self.name == "defocus":
            return [n for n in names if int(n[2:]) in DEFOCUS_PRETRAIN]
        if self.name == "baseline":  # the major domains of the mixtures
            return list(dict.fromkeys(a for a, _ in self.transfer_pairs()))
        return names

    def early_pairs(self) -> list[tuple[str, str]]:
        """Transfer pairs a sweep runs before the rest of its grid.

        Structure series: the transfers between the two particle sizes of each lattice.
        They need every pretrained model, so the whole after-pretraining matrix and the
        size comparison exist after a small share of the sweep's time. Other series: none.
        """
        if self.name != "structure":
            return []
        formula = {d.name: d.scene_set.formula for d in self.domains}
        return [(a, b) for a, b in self.transfer_pairs() if formula[a] == formula[b]]

    @property
    def has_controls(self) -> bool:
        """Whether the grid holds control runs: each pretrained model trained further on
        its own domain (``pretrain_domain == target_domain``) with the transfer stage's
        settings, the baseline for what transfer learning does elsewhere. The tlsize
        series, which only varies the transfer-set size, has none."""
        return self.name not in ("tlsize", "baseline")

    def transfer_eval_domains(self, pretrain_domain: str, target_domain: str) -> list[str]:
        """Domains a transferred model is evaluated on.

        Every domain, unless the structure series has ``structure_transfer_eval =
        "related"``: then the target, the pretraining domain and the other particle
        size of the target's lattice (what the figures and the forgetting analysis use).
        """
        formula = {d.name: d.scene_set.formula for d in self.domains}
        if self.name != "structure" or self.profile.study.structure_transfer_eval == "all":
            return list(formula)
        lattice = self.domain(target_domain).scene_set.formula  # a clear error for an unknown target
        return [n for n, f in formula.items() if n == pretrain_domain or f == lattice]

    def transfer_pairs(self) -> list[tuple[str, str]]:
        """Ordered (pretraining domain, target domain) pairs of the transfer grid.

        ``structure_pairs = "reduced"`` keeps all pairs of different lattices among
        small particles plus small-to-large and large-to-small of each lattice.
        """
        names = [d.name for d in self.domains]
        if self.name == "baseline":  # (major, minor) domains of the mixtures
            pairs = list(self.profile.study.baseline_pairs or BASELINE_PAIRS)
            unknown = sorted({d for p in pairs for d in p} - set(names))
            if unknown:
                raise ValueError(f"profile {self.profile.name}: study.baseline_pairs names {', '.join(unknown)}, "
                                 f"not among the defocus domains {', '.join(names)}")
            return pairs
        pairs = [(a, b) for a, b in permutations(names, 2) if a in self.pretrain_domains]
        if self.name == "structure" and self.profile.study.structure_pairs == "reduced":
            def keep(a: str, b: str) -> bool:
                (fa, sa), (fb, sb) = parse_structure_domain(a), parse_structure_domain(b)
                return (sa == sb == "small") or (fa == fb)
            pairs = [(a, b) for a, b in pairs if keep(a, b)]
        return pairs
