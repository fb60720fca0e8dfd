"""HRTEM physics: lattice fringes, defocus convention, zero-defocus calibration, dose, labels."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from hrtem_tl import simulate, structures
from hrtem_tl.datasets import SPLITS, scene_path, simulate_scene
from hrtem_tl.lattices import get_lattice
from hrtem_tl.series import SceneSet

ENERGY = 300e3


def wavelength(energy: float) -> float:
    """Relativistic electron wavelength [Å] (CODATA constants)."""
    h, c, m, e = 6.62607015e-34, 299792458.0, 9.1093837015e-31, 1.602176634e-19
    return h * c / np.sqrt(e * energy * (2 * m * c**2 + e * energy)) * 1e10


def fresnel(wave: np.ndarray, z: float, pixel: float, energy: float = ENERGY) -> np.ndarray:
    """Free-space propagation by ``z`` [Å] with the paraxial propagator exp(-i pi lambda z k^2)."""
    k = np.fft.fftfreq(wave.shape[-1], pixel)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    return np.fft.ifft2(np.fft.fft2(wave) * np.exp(-1j * np.pi * wavelength(energy) * z * k2))


def sim_settings(profile, **changes):
    return dataclasses.replace(profile.simulation, **changes)


def particle_in_vacuum(formula: str, radius: float, field: float, settings, seed=0):
    """Exit wave of one particle in the middle of a ``field`` x ``field`` cell."""
    atoms, _ = structures.make_particle(get_lattice(formula), radius, np.random.default_rng(seed))
    atoms.translate((field / 2, field / 2, radius + structures.VACUUM_PAD))
    atoms.set_cell((field, field, 2 * radius + 2 * structures.VACUUM_PAD))
    atoms.set_pbc(True)
    return simulate.exit_waves(atoms, settings, seed=None, phonons=False)


class _NoRotation:
    @staticmethod
    def random(random_state=None):
        return Rotation.identity()


# -- lattice fringes ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "formula,hkl,zone",
    [("Cu", (2, 0, 0), "[001]"), ("Ag", (2, 0, 0), "[001]"), ("CdSe", (1, 1, 0), "[0001]")],
)
def test_lattice_spacing_from_power_spectrum(formula, hkl, zone, tiny_profile, monkeypatch):
    """The strongest high-frequency peak of a zone-axis particle's image is its lattice's.

    Unrotated, make_particle's cubic blocks are viewed along [001] (strongest fringes
    {200}) and its wurtzite blocks along c (strongest fringes {110}, structure factor
    twice that of {100}).
    """
    monkeypatch.setattr(structures, "Rotation", _NoRotation)
    settings = sim_settings(tiny_profile, field_of_view=48.0, sampling=0.25, pixel_size=0.4, slice_thickness=2.0)
    wave = particle_in_vacuum(formula, 18.0, 48.0, settings)
    image = simulate.image_intensity(wave, 50.0, settings)
    assert image.shape == (120, 120)
    pad = 4 * image.shape[0]  # zero padding interpolates the spectrum of the finite particle
    power = np.abs(np.fft.fft2(image - image.mean(), s=(pad, pad))) ** 2
    k = np.fft.fftfreq(pad, settings.pixel_size)
    kk = np.hypot(*np.meshgrid(k, k, indexing="ij"))
    power[kk < 0.15] = 0  # the particle's outline, not its lattice
    measured = 1 / kk.flat[np.argmax(power)]
    expected = get_lattice(formula).plane_spacing(hkl)
    assert measured == pytest.approx(expected, rel=0.03), f"{formula} {zone}"


# -- imaging conventions -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def cu_wave(tiny_profile):
    settings = sim_settings(tiny_profile, field_of_view=48.0)
    return particle_in_vacuum("Cu", 10.0, 48.0, settings), settings


def test_vacuum_images_to_one(tiny_profile):
    settings = tiny_profile.simulation
    n = settings.image_size
    vacuum = np.ones((2, n, n), np.complex64)
    for defocus in (-100.0, 0.0, 250.0):
        assert np.allclose(simulate.image_intensity(vacuum, defocus, settings), 1.0, atol=1e-5)


@pytest.mark.parametrize("defocus", [-80.0, 30.0, 120.0])
def test_defocus_sign_matches_fresnel_propagation(cu_wave, defocus):
    """abTEM ``defocus = d`` is the exit wave propagated by ``-d`` (d > 0: underfocus)."""
    wave, settings = cu_wave
    abtem_image = simulate.image_intensity(wave, defocus, settings, focal_spread=0.0)
    upstream = np.abs(fresnel(wave[0], -defocus, settings.pixel_size)) ** 2
    downstream = np.abs(fresnel(wave[0], defocus, settings.pixel_size)) ** 2
    scale = np.ptp(upstream)
    assert np.abs(abtem_image - upstream).max() < 1e-3 * scale
    assert np.abs(abtem_image - downstream).max() > 0.2 * scale


def test_focal_spread_damps_contrast(cu_wave):
    wave, settings = cu_wave
    sharp = simulate.image_intensity(wave, 60.0, settings, focal_spread=0.0)
    blurred = simulate.image_intensity(wave, 60.0, settings, focal_spread=40.0)
    assert blurred.var() < 0.9 * sharp.var()
    assert blurred.mean() == pytest.approx(sharp.mean(), rel=1e-3)  # spread moves no electrons


def test_calibrated_zero_is_contrast_minimum(cu_wave):
    wave, settings = cu_wave
    depth = 2 * 10.0 + 2 * structures.VACUUM_PAD
    zero = simulate.calibrate_zero_defocus(wave, settings, search=depth)
    coarse, fine = settings.calibration_steps
    c0 = simulate.contrast(wave, np.array([zero]), settings)[0]
    for offset in (fine, 3.0, coarse, 2 * coarse, 10.0):
        around = simulate.contrast(wave, np.array([zero - offset, zero + offset]), settings)
        assert np.all(around >= c0), offset
    around = simulate.contrast(wave, np.array([zero - 10.0, zero + 10.0]), settings)
    assert np.all(around > 1.2 * c0)
    # The particle (radius 10 Å) sits with its centre 14 Å upstream of the exit plane:
    # minimum contrast lies inside it, i.e. at a positive (underfocus) defocus.
    assert structures.VACUUM_PAD < zero < depth - structures.VACUUM_PAD
    assert zero == pytest.approx(10.0 + structures.VACUUM_PAD, abs=4.0)


def test_contrast_is_image_variance(cu_wave):
    wave, settings = cu_wave
    image = simulate.image_intensity(wave, 35.0, settings, focal_spread=0.0)
    assert simulate.contrast(wave, np.array([35.0]), settings)[0] == pytest.approx(image.var(), rel=1e-3)


# -- dose ---------------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(dose=st.floats(5.0, 2000.0), level=st.floats(0.2, 2.0), pixel=st.floats(0.1, 0.5), seed=st.integers(0, 2**31))
def test_dose_gives_poisson_counts(dose, level, pixel, seed):
    rng = np.random.default_rng(seed)
    intensity = np.full((150, 150), level, np.float32)
    counts = simulate.apply_dose(intensity, dose, pixel, rng)
    lam = dose * pixel**2 * level
    n = counts.size
    assert counts.dtype == np.float32
    assert np.all(counts >= 0) and np.all(counts == np.round(counts))
    # mean: standard error sqrt(lam/n); variance: standard error ~ lam sqrt(2/n) (+ skew term)
    assert abs(counts.mean() - lam) < 5 * np.sqrt(lam / n)
    assert abs(counts.var() - lam) < 6 * np.sqrt((2 * lam**2 + lam) / n)


def test_dose_follows_the_intensity_pixel_by_pixel():
    rng = np.random.default_rng(1)
    intensity = rng.uniform(0.1, 3.0, size=(200, 200)).astype(np.float32)
    counts = simulate.apply_dose(intensity, 300.0, 0.4, rng)
    lam = intensity * 300.0 * 0.4**2
    z = (counts - lam) / np.sqrt(lam)
    assert abs(z.mean()) < 5 / 200 and abs(z.var() - 1) < 0.05


def test_negative_intensity_gives_no_counts():
    counts = simulate.apply_dose(np.full((10, 10), -0.5, np.float32), 100.0, 0.5, np.random.default_rng(0))
    assert np.all(counts == 0)


@pytest.mark.parametrize("dose", [0.0, -1.0, -300.0])
def test_non_positive_dose_raises(dose):
    with pytest.raises(ValueError, match="dose"):
        simulate.apply_dose(np.ones((4, 4), np.float32), dose, 0.5, np.random.default_rng(0))


# -- labels -------------------------------------------------------------------------------------

def _disk_wave(n: int, radius: float, phase: float) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    disk = np.hypot(yy - n / 2, xx - n / 2) < radius
    return np.exp(1j * phase * disk)[None].astype(np.complex64), disk


@pytest.mark.parametrize("phase", [0.05, 0.3, np.pi, 2 * np.pi - 0.1])
def test_label_of_a_phase_disk(phase):
    """A disk of any phase, weak or wrapped past pi, is labelled whole and alone."""
    wave, disk = _disk_wave(96, 20.0, phase)
    mask = simulate.label_mask(wave, 0.5, 1.6)
    assert mask.dtype == np.uint8
    assert mask.sum() == pytest.approx(disk.sum(), rel=0.05)
    assert (mask.astype(bool) & ~disk).sum() < 0.05 * disk.sum()


def test_label_survives_wrapped_heavy_columns():
    """Columns whose phase wraps to about 0 (2 pi) inside a particle do not punch holes."""
    wave, disk = _disk_wave(96, 20.0, 0.3)
    rng = np.random.default_rng(0)
    holes = disk & (rng.uniform(size=disk.shape) < 0.1)
    wave[0][holes] = np.exp(1j * (2 * np.pi - 0.005))
    mask = simulate.label_mask(wave, 0.5, 1.6)
    assert mask[disk].mean() > 0.93


def test_label_marks_amplitude_contrast_without_phase():
    """An exit wave damped without a phase shift (absorption) is the particle's too:
    the rule reads |psi - 1|, not the phase alone."""
    wave, disk = _disk_wave(96, 20.0, 0.3)
    wave[0][disk] = 0.9  # real: no phase, 10 % amplitude loss
    mask = simulate.label_mask(wave, 0.5, 1.6)
    assert mask[disk].mean() > 0.93 and mask[~disk].mean() < 0.05


def test_label_ignores_vacuum_noise():
    rng = np.random.default_rng(0)
    wave = np.exp(1j * rng.normal(0, 0.003, size=(1, 64, 64))).astype(np.complex64)
    assert simulate.label_mask(wave, 0.5, 1.6).sum() == 0


def _pixel_distance(layout: dict, n: int, pixel: float) -> np.ndarray:
    """Distance [Å] of each pixel centre from the nearest particle surface (<0 inside).

    abTEM arrays are indexed [x, y]: axis 0 runs along x.
    """
    x, y = (np.mgrid[:n, :n] + 0.5) * pixel
    return np.min([np.hypot(x - p["center"][0], y - p["center"][1]) - p["radius"] for p in layout["particles"]],
                  axis=0)


@pytest.fixture(scope="module")
def scenes(tiny_data, tiny_series, tmp_path_factory):
    """Scenes with their layouts and labels: the tiny series' CdSe scenes plus two Cu scenes."""
    profile = tiny_series.profile
    files = [scene_path(tiny_data, profile, s, split, i)
             for s in tiny_series.scene_sets for split, count in tiny_series.split_counts.items()
             for i in range(count)]
    cu = SceneSet("test_Cu_small", "Cu", (10.0, 16.0))
    folder = tmp_path_factory.mktemp("cu_scenes")
    files += [simulate_scene(profile, cu, "train", i, folder / f"cu_{i}.npz") for i in range(2)]
    out = []
    for f in files:
        with np.load(f) as data:
            scene = {k: data[k] for k in data.files} | {"layout_dict": json.loads(str(data["layout"]))}
        sigma = get_lattice(scene["layout_dict"]["particles"][0]["formula"]).label_sigma
        scene["sigma"] = sigma
        scene["mask"] = simulate.label_mask(scene["particle_wave"], profile.simulation.pixel_size, sigma)
        out.append(scene)
    return out


def test_mask_area_matches_projected_particle_area(scenes, tiny_profile):
    pixel = tiny_profile.simulation.pixel_size
    for scene in scenes:
        layout = scene["layout_dict"]
        projected = sum(np.pi * p["radius"] ** 2 for p in layout["particles"])
        area = scene["mask"].sum() * pixel**2
        assert area == pytest.approx(projected, rel=0.15), layout["particles"]


def test_masks_cover_no_carbon(scenes, tiny_profile):
    pixel = tiny_profile.simulation.pixel_size
    for scene in scenes:
        sigma = scene["sigma"]
        mask = scene["mask"]
        dist = _pixel_distance(scene["layout_dict"], mask.shape[0], pixel)
        far = dist > 2 * sigma + 1.0
        assert far.sum() > 0.3 * mask.size
        assert mask[far].sum() == 0
        assert mask[dist < -2.0].mean() > 0.97  # and the particles' interiors are labelled
        # the film is in the scene's waves: the same rule on them marks the film
        film_mask = simulate.label_mask(scene["waves"], pixel, sigma)
        assert film_mask[far].mean() > 0.5


def test_calibrated_zero_of_scenes_is_upstream(scenes):
    """Particles hang below the film: their minimum-contrast plane is upstream of the exit."""
    for scene in scenes:
        layout = scene["layout_dict"]
        depth = layout["cell"][2]
        above_exit = [depth - p["center"][2] for p in layout["particles"]]
        zero = float(scene["zero_defocus"])
        assert zero > 0
        assert min(above_exit) - max(p["radius"] for p in layout["particles"]) < zero < depth


def test_same_seed_same_scene(tiny_data, tiny_series, tmp_path):
    profile = tiny_series.profile
    scene_set = tiny_series.scene_sets[0]
    stored = scene_path(tiny_data, profile, scene_set, "train", 1)
    again = simulate_scene(profile, scene_set, "train", 1, tmp_path / "again.npz")
    other = simulate_scene(profile, scene_set, "train", 0, tmp_path / "other.npz")
    with np.load(stored) as a, np.load(again) as b, np.load(other) as c:
        assert set(a.files) == set(b.files)
        for key in a.files:
            assert np.array_equal(a[key], b[key]), key
        assert not np.array_equal(a["waves"], c["waves"])


def test_domain_masks_are_the_scene_labels(tiny_data, tiny_series):
    """Every domain file's masks are label_mask of its scenes' particles-only waves."""
    from hrtem_tl.datasets import domain_path, load_domain

    profile = tiny_series.profile
    for domain in tiny_series.domains:
        for split, count in tiny_series.split_counts.items():
            data = load_domain(tiny_series, domain.name, split, tiny_data)
            assert data["masks"].shape == (count, profile.simulation.image_size, profile.simulation.image_size)
            for i in range(count):
                with np.load(scene_path(tiny_data, profile, domain.scene_set, split, i)) as scene:
                    expected = simulate.label_mask(scene["particle_wave"], profile.simulation.pixel_size,
                                                   domain.scene_set.lattice.label_sigma)
                assert np.array_equal(data["masks"][i], expected)
            assert domain_path(tiny_data, tiny_series, domain, split).exists()
