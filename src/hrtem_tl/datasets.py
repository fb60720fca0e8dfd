"""On-disk datasets: simulated scenes, imaged domains, manifests and example montages.

Layout under the dataset root (default ``cache/datasets``), all plain ``.npz`` files
that numpy opens without this package::

    <profile>/scenes-<simulation key>/<scene set>/<split>_<index>.npz
        waves (configs, n, n) complex64   exit waves of particles + film [vacuum = 1]
        particle_wave (1, n, n) complex64 exit wave of the particles alone (labels come from it)
        zero_defocus ()                   calibrated minimum-contrast defocus [Å]
        layout (str)                      JSON: particles, film thickness, seed
    <profile>/<series>/<domain>_<split>.npz
        images (N, n, n) float32          Poisson counts per pixel
        masks (N, n, n) uint8
        defocus (N,) float32              defocus applied to each image [Å, abTEM sign]
        pixel_size ()                     [Å]
        version ()                        DATASET_VERSION that made the file
        key ()                            hash of everything that made the file (:func:`domain_key`)
        scenes (N,) str                   the scene of each image: <scene set>/<split>_<index>
    <profile>/<series>/manifest.json      settings, seeds, versions, files

Splits: ``train`` (pretraining), ``transfer`` (transfer sets, where the domains of a
series share one scene set), ``val`` (best-epoch selection only) and ``test`` (every
reported evaluation). Each split's scenes are seeded by its name, so the four scene
sets are disjoint; every domain of a series images the same test scenes (paired).

The simulation key (a hash of the simulation settings) is part of the scene folder,
and every domain file records the key of what made it, so changing a setting makes
new files instead of trusting old ones. Every file is written to a temporary name and
renamed, so an interrupted run never leaves a file that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from .config import Profile
from .series import Domain, SceneSet, Series
from .simulate import apply_dose, calibrate_zero_defocus, exit_waves, image_intensity, label_mask
from .structures import make_scene
from .writers import remove_dead_temps, replacing

SPLITS = ("train", "transfer", "val", "test")
# Bump when the imaging or labelling rules change: domain files and pretrained models
# made by another version are remade instead of trusted. 2: labels from |psi - 1|.
# 3: four disjoint splits (train, transfer, val, test).
DATASET_VERSION = 3
DEFAULT_ROOT = Path("cache/datasets")


def _seed(*parts: str | int) -> np.random.SeedSequence:
    """A seed sequence from names and numbers (names hashed with CRC32)."""
    return np.random.SeedSequence([zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts])


def save_npz(path: Path, **arrays) -> None:
    """Write ``arrays`` to ``path`` atomically (temporary file, then rename; a failed
    write removes its temporary file)."""
    with replacing(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


def simulation_key(profile: Profile) -> str:
    """Hash of the simulation settings and DATASET_VERSION: names the scene folder."""
    return _digest([asdict(profile.simulation), DATASET_VERSION])


def domain_key(series: Series, domain: Domain, split: str) -> str:
    """Hash of what makes a domain file: simulation settings, domain, split and scene count."""
    return _digest([simulation_key(series.profile), asdict(domain), split, series.split_counts[split]])


def scene_path(root: Path, profile: Profile, scene_set: SceneSet, split: str, index: int) -> Path:
    return Path(root) / profile.name / f"scenes-{simulation_key(profile)}" / scene_set.name / f"{split}_{index:05d}.npz"


def domain_path(root: Path, series: Series, domain: Domain, split: str) -> Path:
    return Path(root) / series.profile.name / series.name / f"{domain.name}_{split}.npz"


def simulate_scene(profile: Profile, scene_set: SceneSet, split: str, index: int, path: Path) -> Path:
    """Build, simulate and store one scene; returns its path."""
    sim = profile.simulation
    seq = _seed("scene", scene_set.name, split, index)
    rng = np.random.default_rng(seq)
    scene = make_scene(
        scene_set.lattice, scene_set.radius_range, sim.field_of_view, sim.film_thickness, rng, sim.max_particles
    )
    phonon_seed = int(rng.integers(2**31))
    waves = exit_waves(scene.atoms(with_film=True), sim, seed=phonon_seed)
    particle_wave = exit_waves(scene.atoms(with_film=False), sim, seed=None, phonons=False)
    zero = calibrate_zero_defocus(particle_wave, sim, search=scene.cell[2])
    layout = {
        "particles": [asdict(p) for p in scene.layout],
        "film_thickness": scene.film_thickness,
        "cell": scene.cell,
        "atoms": len(scene.particles) + len(scene.carbon),
        "phonon_seed": phonon_seed,
    }
    save_npz(path, waves=waves, particle_wave=particle_wave, zero_defocus=np.float64(zero),
             layout=np.array(json.dumps(layout)))
    return path


def _simulate_task(args) -> Path:
    profile, scene_set, split, index, path = args
    return simulate_scene(profile, scene_set, split, index, path)


def image_domain(series: Series, domain: Domain, split: str, scene_files: list[Path]) -> dict[str, np.ndarray]:
    """Image every scene of ``split`` under the domain's defocus and dose, with its labels."""
    sim = series.profile.simulation
    sigma = domain.scene_set.lattice.label_sigma
    images, masks, defoci = [], [], []
    for index, path in enumerate(scene_files):
        rng = np.random.default_rng(_seed("image", domain.name, split, index))
        with np.load(path) as scene:
            defocus = float(scene["zero_defocus"]) + 10.0 * domain.defocus + rng.normal(0, sim.defocus_sigma)
            intensity = image_intensity(scene["waves"], defocus, sim)
            images.append(apply_dose(intensity, domain.dose, sim.pixel_size, rng))
            masks.append(label_mask(scene["particle_wave"], sim.pixel_size, sigma))
        defoci.append(defocus)
    return {
        "images": np.stack(images),
        "masks": np.stack(masks).astype(np.uint8),
        "defocus": np.asarray(defoci, np.float32),
        "pixel_size": np.float64(sim.pixel_size),
        "version": np.int64(DATASET_VERSION),
        "key": np.array(domain_key(series, domain, split)),
        "scenes": np.array([f"{domain.scene_set.name}/{Path(f).stem}" for f in scene_files]),
    }


def manifest(series: Series) -> dict:
    """Everything needed to regenerate a series' datasets."""
    return {
        "series": series.name,
        "profile": series.profile.to_dict(),
        "config_hash": series.profile.config_hash(series.name),
        "simulation_key": simulation_key(series.profile),
        "images_per_scene_set": series.split_counts,
        "transfer_split": series.transfer_split,
        "domains": [
            {"name": d.name, "scene_set": d.scene_set.name, "formula": d.scene_set.formula,
             "radius_range": d.scene_set.radius_range, "defocus_nm": d.defocus, "dose": d.dose}
            for d in series.domains
        ],
        "dataset_version": DATASET_VERSION,
        "seeding": "numpy SeedSequence of CRC32(names) and indices; see hrtem_tl.datasets",
        "software": {pkg: version(pkg) for pkg in ("hrtem-tl", "abtem", "ase", "numpy")}
        | {"python": platform.python_version()},
    }


def simulate_series(series: Series, root: Path = DEFAULT_ROOT, workers: int = 1, progress: bool = True) -> Path:
    """Simulate every missing scene of a series, then image every missing domain file.

    Finished scenes and domain files are skipped, so an interrupted run resumes; the
    temporary files of dead writers under the profile's folder are removed first.
    Returns the series folder.
    """
    root = Path(root)
    out = root / series.profile.name / series.name
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise PermissionError(f"dataset folder {out} is not writable")
    remove_dead_temps(root / series.profile.name)
    counts = series.split_counts
    tasks = [
        (series.profile, s, split, i, scene_path(root, series.profile, s, split, i))
        for s in series.scene_sets
        for split in SPLITS
        for i in range(counts[split])
    ]
    todo = [t for t in tasks if not t[-1].exists()]
    # bars in with-blocks: closed (ending their line) before an error is reported
    with tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc=f"simulate {series.name} scenes",
              unit="scene", disable=not progress) as bar:
        if workers > 1 and todo:
            with ProcessPoolExecutor(max_workers=workers, initializer=_single_thread) as pool:
                for future in as_completed([pool.submit(_simulate_task, t) for t in todo]):
                    future.result()
                    bar.update()
        else:
            for t in todo:
                _simulate_task(t)
                bar.update()
    with tqdm(series.domains, desc=f"image {series.name} domains", unit="domain", disable=not progress) as bar:
        for domain in bar:
            for split in SPLITS:
                if not counts[split]:
                    continue
                path = domain_path(root, series, domain, split)
                if path.exists() and _stored_key(path) == domain_key(series, domain, split):
                    continue
                files = [scene_path(root, series.profile, domain.scene_set, split, i) for i in range(counts[split])]
                save_npz(path, **image_domain(series, domain, split, files))
    write_text_atomic(out / "manifest.json", json.dumps(manifest(series), indent=2))
    return out


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    with replacing(path) as tmp:
        tmp.write_text(text)


def _stored_key(path: Path) -> str | None:
    """The :func:`domain_key` recorded in a domain file (``None`` for older files)."""
    try:
        with np.load(path) as data:
            return str(data["key"]) if "key" in data.files else None
    except (OSError, ValueError, zipfile.BadZipFile):
        return None  # unreadable: remade


def _single_thread() -> None:
    """Worker initializer: one thread per process so workers do not compete."""
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass


def load_domain(series: Series, domain: str, split: str, root: Path = DEFAULT_ROOT) -> dict[str, np.ndarray]:
    """Load one domain split; raises ``FileNotFoundError`` saying how to make it."""
    d = series.domain(domain)
    path = domain_path(root, series, d, split)
    data = None
    if path.exists():
        try:
            with np.load(path) as stored:  # read once; the key it records says whether to trust it
                data = {k: stored[k] for k in stored.files}
        except (OSError, ValueError, zipfile.BadZipFile):
            data = {}  # unreadable: as untrusted as a file made with other settings
    if data is None or str(data.get("key")) != domain_key(series, d, split):
        why = "is missing" if data is None else "was made with other settings"
        raise FileNotFoundError(
            f"dataset {path} {why}; make it with: hrtem-tl simulate {series.name} --profile {series.profile.name}"
        )
    return data


def write_montage(series: Series, path: Path, root: Path = DEFAULT_ROOT, per_domain: int = 3) -> Path:
    """A PNG grid: for each domain, ``per_domain`` test images with mask outlines."""
    from PIL import Image

    rows = []
    for domain in series.domains:
        data = load_domain(series, domain.name, "test", root)
        tiles = []
        for img, mask in zip(data["images"][:per_domain], data["masks"][:per_domain]):
            lo, hi = np.percentile(img, [1, 99])
            grey = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
            rgb = np.repeat(grey[..., None], 3, axis=2)
            edge = mask.astype(bool) & ~ndimage.binary_erosion(mask, iterations=2)
            rgb[edge] = (1.0, 0.6, 0.0)
            tiles.append((rgb * 255).astype(np.uint8))
        rows.append(np.concatenate(tiles, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path


def export_examples(series: Series, out: Path, root: Path = DEFAULT_ROOT, per_domain: int = 2) -> Path:
    """Small committed example set for the site: ``per_domain`` test images per domain.

    Simulates only the scenes it needs (the first test scenes of each scene set,
    the same files a full run makes). Writes ``<out>/<profile>/<series>.npz`` with
    ``images`` (domains, k, n, n) uint8 scaled between the 0.5th and 99.5th
    percentiles, ``masks`` (domains, k, n, n) uint8, ``domains``, ``dose``,
    ``defocus_nm`` and ``pixel_size`` [Å].
    """
    if per_domain < 1:
        raise ValueError(f"per_domain must be at least 1 image, got {per_domain}")
    profile = series.profile
    images, masks = [], []
    with tqdm(series.domains, desc=f"examples {series.name}", unit="domain") as bar:
        for domain in bar:
            files = []
            for i in range(per_domain):
                path = scene_path(root, profile, domain.scene_set, "test", i)
                if not path.exists():
                    simulate_scene(profile, domain.scene_set, "test", i, path)
                files.append(path)
            data = image_domain(series, domain, "test", files)
            lo, hi = np.percentile(data["images"], [0.5, 99.5], axis=(1, 2), keepdims=True)
            scaled = np.clip((data["images"] - lo) / np.maximum(hi - lo, 1e-6), 0, 1)
            images.append((scaled * 255).round().astype(np.uint8))
            masks.append(data["masks"])
    path = Path(out) / profile.name / f"{series.name}.npz"
    save_npz(path, images=np.stack(images), masks=np.stack(masks),
             domains=np.array([d.name for d in series.domains]),
             dose=np.array([d.dose for d in series.domains]), defocus_nm=np.array([d.defocus for d in series.domains]),
             pixel_size=np.float64(profile.simulation.pixel_size))
    return path
