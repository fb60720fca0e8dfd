"""Segmenting micrographs with a model folder: read, resample, tile, write mask, overlay, table.

Reading (:func:`read_micrograph`) goes through rosettasciio (TIFF, PNG/JPEG, DM3/DM4,
MRC, EMD, SER); the pixel size [Å] comes from the file's calibration of its two image
axes (nm, Å, pm, µm, mm, m). ImageJ TIFFs (whose length unit rosettasciio does not
report) and TIFFs with centimetre resolution tags are read with tifffile's tags. A
scale is never guessed: a file without a length calibration needs ``pixel_size``.

Segmenting (:func:`segment_image`): the image is resampled to the model's pixel size
(linear interpolation, Gaussian anti-aliasing when shrinking), standardised as in
training (:func:`hrtem_tl.train.standardize`), cut into overlapping tiles, and the
tiles' particle probabilities are blended with a raised-cosine window; the
probability map is resampled back to the input grid and thresholded at 1/2.
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .train import Precision, standardize

#: Length units and their size in Å (rosettasciio, ImageJ and DM spellings).
UNITS = {"m": 1e10, "mm": 1e7, "cm": 1e8, "µm": 1e4, "μm": 1e4, "um": 1e4, "micron": 1e4, "microns": 1e4,
         "nm": 10.0, "nanometer": 10.0, "nanometers": 10.0, "å": 1.0, "a": 1.0, "angstrom": 1.0,
         "angstroms": 1.0, "\\u00c5": 1.0, "pm": 0.01}
READERS = {".tif": "tiff", ".tiff": "tiff", ".png": "image", ".jpg": "image", ".jpeg": "image", ".bmp": "image",
           ".dm3": "digitalmicrograph", ".dm4": "digitalmicrograph", ".mrc": "mrc", ".emd": "emd", ".ser": "tia"}
TILE, OVERLAP = 256, 64


class InputError(ValueError):
    """A file that cannot be segmented; the message names the file and the problem."""


@dataclass
class Micrograph:
    image: np.ndarray  # (h, w) float32
    pixel_size: float | None  # [Å]


def _unit_size(unit, path: Path) -> float:
    key = str(unit).strip().lower().replace(" ", "")
    if key in UNITS:
        return UNITS[key]
    raise InputError(f"{path}: its calibration is in {unit!r}, not a length (nm, Å, pm, µm): "
                     "pass --pixel-size in Å to override it")


def _tiff_calibration(path: Path) -> float | None:
    """Pixel size [Å] from an ImageJ unit or centimetre resolution tags, else None."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        tags = page.tags
        xres = tags.get("XResolution")
        if xres is None:
            return None
        num, den = xres.value
        if not num:
            return None
        per_pixel = den / num  # units per pixel
        ij = tif.imagej_metadata or {}
        if "unit" in ij:
            unit = ij["unit"]
            if str(unit).lower() in ("pixel", "pixels", ""):
                return None
            return per_pixel * _unit_size(unit, path)
        unit_tag = tags.get("ResolutionUnit")
        if unit_tag is not None and int(unit_tag.value) == 3:  # centimetre (inch: a print setting, ignored)
            return per_pixel * 1e8
    return None


def read_micrograph(path: Path, frame: int | None = None) -> Micrograph:
    """A 2-D float32 image and its pixel size [Å] (``None`` when the file has no calibration).

    Raises :class:`InputError` for an unreadable file, a stack without ``frame``, a
    colour image or a calibration that is not a length.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"{path}: unknown file type {path.suffix!r}; readable: {', '.join(sorted(READERS))}")
    import importlib

    reader = importlib.import_module(f"rsciio.{kind}").file_reader
    try:
        signals = reader(str(path))
    except Exception as err:  # each reader has its own failures for damaged files
        raise InputError(f"{path}: unreadable as {kind}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    images = [s for s in signals if np.asarray(s["data"]).ndim >= 2] if signals else []
    if not images:
        raise InputError(f"{path}: holds no image")
    signal = images[0]
    data = np.asarray(signal["data"])
    if data.dtype.names:  # rosettasciio's RGB(A) images are structured arrays
        raise InputError(f"{path}: is a colour ({'/'.join(data.dtype.names)}) image; save it as greyscale")
    axes = list(signal["axes"])
    if data.ndim == 3 and data.shape[-1] in (3, 4) and kind == "image":
        raise InputError(f"{path}: is a colour image; save it as greyscale")
    if data.ndim > 3 or (data.ndim == 3 and frame is None):
        if data.ndim == 3:
            raise InputError(f"{path}: is a stack of {data.shape[0]} images; choose one with --frame N (0..{data.shape[0] - 1})")
        raise InputError(f"{path}: has {data.ndim} dimensions {data.shape}; only single images and stacks are read")
    if data.ndim == 3:
        if not 0 <= frame < data.shape[0]:
            raise InputError(f"{path}: --frame {frame} is out of range 0..{data.shape[0] - 1}")
        data, axes = data[frame], axes[1:] if len(axes) == 3 else axes
    elif frame not in (None, 0):
        raise InputError(f"{path}: is a single image; --frame {frame} does not exist")
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise InputError(f"{path}: holds {data.dtype} data, not real intensities")
    image = data.astype(np.float32)
    if not np.isfinite(image).all():
        raise InputError(f"{path}: holds non-finite pixels (NaN or inf)")
    return Micrograph(image, _pixel_size(path, kind, axes[-2:]))


def _pixel_size(path: Path, kind: str, axes: list[dict]) -> float | None:
    units = [a.get("units") for a in axes]
    scales = [float(a.get("scale", 1.0)) for a in axes]
    if all(u in (None, "", "<undefined>", "px", "pixel", "pixels") for u in units):
        return _tiff_calibration(path) if kind == "tiff" else None
    sizes = []
    for unit, scale in zip(units, scales):
        if unit in (None, "", "<undefined>"):
            continue
        sizes.append(scale * _unit_size(unit, path))
    if not sizes or min(sizes) <= 0:
        raise InputError(f"{path}: its calibration gives a pixel size of {sizes}; pass --pixel-size in Å")
    if max(sizes) > 1.01 * min(sizes):
        raise InputError(f"{path}: its pixels are not square ({sizes[0]:.4g} x {sizes[-1]:.4g} Å)")
    return float(np.mean(sizes))


def resample(image: np.ndarray, factor: float, order: int = 1) -> np.ndarray:
    """``image`` zoomed by ``factor`` (>1: more pixels), anti-aliased when shrinking."""
    if abs(factor - 1) < 1e-6:
        return np.asarray(image, np.float32)
    from skimage.transform import rescale

    return rescale(np.asarray(image, np.float32), factor, order=order, anti_aliasing=factor < 1 and order > 0,
                   preserve_range=True, mode="reflect").astype(np.float32)


def _window(n: int, overlap: int) -> np.ndarray:
    """1-D raised-cosine ramp over ``overlap`` pixels at each end, 1 between (floor 1e-3)."""
    w = np.ones(n, np.float32)
    if overlap > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        w[:overlap], w[-overlap:] = ramp, ramp[::-1]
    return np.maximum(w, 1e-3)


def _starts(length: int, tile: int, step: int) -> list[int]:
    starts = list(range(0, max(length - tile, 0) + 1, step))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


@torch.no_grad()
def probabilities(model, image: np.ndarray, *, tile: int = TILE, overlap: int = OVERLAP, batch: int = 4,
                  precision: Precision | None = None) -> np.ndarray:
    """Particle probability of each pixel of a standardised image, by overlapping tiles.

    ``tile`` is rounded down to a multiple of 32 (the U-Net's stride); an image smaller
    than a tile is reflect-padded to one.
    """
    precision = precision or Precision.choose(mixed=False)
    tile = max(32, tile // 32 * 32)
    overlap = min(overlap, tile // 2)
    h, w = image.shape
    ph, pw = max(0, tile - h), max(0, tile - w)
    padded = np.pad(image, ((0, ph), (0, pw)), mode="reflect") if ph or pw else image
    H, W = padded.shape
    weight = np.outer(_window(tile, overlap), _window(tile, overlap))
    acc = np.zeros((H, W), np.float32)
    norm = np.zeros((H, W), np.float32)
    corners = [(y, x) for y in _starts(H, tile, tile - overlap) for x in _starts(W, tile, tile - overlap)]
    model = model.to(precision.device, memory_format=torch.channels_last).eval()
    for i in range(0, len(corners), batch):
        chunk = corners[i:i + batch]
        x = np.stack([padded[y:y + tile, c:c + tile] for y, c in chunk])[:, None]
        x = torch.from_numpy(np.ascontiguousarray(x)).to(precision.device).contiguous(memory_format=torch.channels_last)
        with precision.autocast():
            logits = model(x)
        prob = torch.softmax(logits.float(), dim=1)[:, 1].cpu().numpy()
        for (y, c), p in zip(chunk, prob):
            acc[y:y + tile, c:c + tile] += p * weight
            norm[y:y + tile, c:c + tile] += weight
    return (acc / norm)[:h, :w]


def segment_image(model, card: dict, image: np.ndarray, pixel_size: float, *, name: str = "image",
                  tile: int = TILE, overlap: int = OVERLAP, precision: Precision | None = None) -> np.ndarray:
    """Particle probability map of ``image`` (pixel size [Å]) on its own grid."""
    factor = pixel_size / float(card["pixel_size"])
    small = resample(image, factor)
    crop = int(card["crop"])
    if min(small.shape) < crop:
        raise InputError(f"{name}: at the model's {card['pixel_size']:g} Å/px it is {small.shape[1]} x {small.shape[0]} px, "
                         f"smaller than the model's field of {crop} px ({crop * card['pixel_size'] / 10:g} nm)")
    prob = probabilities(model, standardize(small), tile=max(tile, crop), overlap=overlap, precision=precision)
    if prob.shape != image.shape:
        from skimage.transform import resize

        prob = resize(prob, image.shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True)
    return prob.astype(np.float32)


def particle_table(mask: np.ndarray, pixel_size: float) -> list[dict]:
    """One row per connected particle (8-connected): area, equivalent diameter, centroid in nm."""
    from skimage.measure import label, regionprops

    nm = pixel_size / 10
    rows = []
    for r in regionprops(label(mask > 0, connectivity=2)):
        cy, cx = r.centroid
        rows.append({"label": r.label, "area_nm2": r.area * nm**2, "equivalent_diameter_nm": r.equivalent_diameter_area * nm,
                     "centroid_x_nm": cx * nm, "centroid_y_nm": cy * nm})
    return rows


def write_outputs(out: Path, stem: str, image: np.ndarray, mask: np.ndarray, pixel_size: float) -> dict[str, Path]:
    """``<stem>_mask.tif`` (uint8 0/255, ImageJ nm calibration), ``<stem>_overlay.png``, ``<stem>_particles.csv``."""
    import tifffile
    from PIL import Image
    from skimage.segmentation import find_boundaries

    out.mkdir(parents=True, exist_ok=True)
    paths = {"mask": out / f"{stem}_mask.tif", "overlay": out / f"{stem}_overlay.png", "table": out / f"{stem}_particles.csv"}
    nm = pixel_size / 10
    tifffile.imwrite(paths["mask"], (mask > 0).astype(np.uint8) * 255, imagej=True, resolution=(1 / nm, 1 / nm),
                     metadata={"unit": "nm"})
    lo, hi = np.percentile(image, [0.5, 99.5])
    grey = (np.clip((image - lo) / max(hi - lo, 1e-12), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb[find_boundaries(mask > 0, mode="inner")] = (255, 40, 40)
    Image.fromarray(rgb).save(paths["overlay"])
    rows = particle_table(mask, pixel_size)
    with open(paths["table"], "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["label", "area_nm2", "equivalent_diameter_nm", "centroid_x_nm", "centroid_y_nm"])
        writer.writeheader()
        writer.writerows(rows)
    return paths


def segment_file(path: Path, model, card: dict, out: Path, *, pixel_size: float | None = None, frame: int | None = None,
                 tile: int = TILE, overlap: int = OVERLAP, precision: Precision | None = None) -> dict:
    """Segment one file and write its outputs; returns a summary (raises :class:`InputError`)."""
    path = Path(path)
    micro = read_micrograph(path, frame)
    size = pixel_size if pixel_size is not None else micro.pixel_size
    if size is None:
        raise InputError(f"{path}: has no length calibration; pass --pixel-size in Å (a scale is never guessed)")
    if not size > 0:
        raise InputError(f"{path}: pixel size must be positive, got {size}")
    prob = segment_image(model, card, micro.image, size, name=str(path), tile=tile, overlap=overlap, precision=precision)
    mask = (prob > 0.5).astype(np.uint8)
    stem = path.stem if frame is None else f"{path.stem}_frame{frame}"
    paths = write_outputs(Path(out), stem, micro.image, mask, size)
    rows = particle_table(mask, size)
    diam = float(np.median([r["equivalent_diameter_nm"] for r in rows])) if rows else float("nan")
    return {"file": str(path), "pixel_size": size, "shape": mask.shape, "particles": len(rows),
            "covered": float(mask.mean()), "median_diameter_nm": diam, "mask": mask, "paths": paths}


def summary_line(s: dict) -> str:
    diam = "-" if not s["particles"] else f"{s['median_diameter_nm']:.2f} nm"
    return (f"{s['file']}: {s['particles']} particles, {100 * s['covered']:.1f} % covered, median diameter {diam} "
            f"({s['pixel_size']:.3g} Å/px) -> {s['paths']['mask'].parent}")


def segment_files(paths: list[Path], model_dir: Path, out: Path, *, pixel_size: float | None = None,
                  frame: int | None = None, tile: int = TILE, overlap: int = OVERLAP, precision: Precision | None = None,
                  progress: bool = True, stdout=None, stderr=None) -> tuple[list[dict], list[str]]:
    """Segment every file; a bad file gets a one-line error on ``stderr`` and the rest go on.

    Returns (summaries, error lines).
    """
    from tqdm.auto import tqdm

    from .models import load_model

    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    if pixel_size is not None and not pixel_size > 0:
        raise ValueError(f"--pixel-size must be positive, got {pixel_size}")
    precision = precision or Precision.choose(mixed=False)
    model, card = load_model(model_dir, precision.device)
    done, errors = [], []
    bar = tqdm(paths, desc="segment", unit="file", disable=not progress or len(paths) < 2, file=stderr)
    for path in bar:
        try:
            s = segment_file(path, model, card, out, pixel_size=pixel_size, frame=frame, tile=tile, overlap=overlap,
                             precision=precision)
        except (InputError, OSError, MemoryError) as err:
            line = f"hrtem-tl: error: {err}" if isinstance(err, InputError) else f"hrtem-tl: error: {path}: {err}"
            errors.append(line)
            bar.write(line, file=stderr)
            continue
        done.append(s)
        bar.write(summary_line(s), file=stdout)
    return done, errors


def default_threads() -> None:
    """Use every core for inference unless OMP_NUM_THREADS says otherwise."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)
