"""Lattices, particles, carbon films and scene layouts (no multislice)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from hrtem_tl import structures
from hrtem_tl.lattices import LATTICES, get_lattice
from hrtem_tl.structures import (
    CARBON_DENSITY,
    CARBON_MIN_DISTANCE,
    PARTICLE_GAP,
    VACUUM_PAD,
    amorphous_carbon,
    layout_particles,
    make_particle,
    make_scene,
)

# Atoms in the conventional cell, by structure type.
CELL_ATOMS = {"ZnS": 4, "CdSe": 4, "Cu": 4, "Ag": 4, "C": 8, "Si": 8, "Fe3O4": 56, "Co3O4": 56, "Fe": 2}
# Nearest-neighbour distance as a multiple of a.
NEAREST = {"Cu": np.sqrt(2) / 2, "Ag": np.sqrt(2) / 2, "C": np.sqrt(3) / 4, "Si": np.sqrt(3) / 4,
           "Fe": np.sqrt(3) / 2}


def min_distance(atoms) -> float:
    """Shortest interatomic distance, periodic in the atoms' cell."""
    pos = atoms.get_scaled_positions(wrap=True) @ atoms.cell.array
    tree = cKDTree(pos, boxsize=np.diag(atoms.cell.array)) if atoms.cell.orthorhombic else None
    if tree is not None:
        d, _ = tree.query(pos, k=2)
        return float(d[:, 1].min())
    big = atoms.repeat((3, 3, 3))
    d, _ = cKDTree(big.positions).query(big.positions, k=2)
    return float(d[:, 1].min())


def test_nine_lattices():
    assert len(LATTICES) == 9
    assert set(LATTICES) == set(CELL_ATOMS)


@pytest.mark.parametrize("formula", list(CELL_ATOMS))
def test_unit_cell_atom_counts_and_distances(formula):
    lat = get_lattice(formula)
    cell = lat.unit_cell()
    assert len(cell) == CELL_ATOMS[formula]
    # no two atoms closer than a chemical bond: a wrong Wyckoff setting would overlap atoms
    assert min_distance(cell) > 1.5
    if formula in NEAREST:
        assert min_distance(cell) == pytest.approx(NEAREST[formula] * lat.a, rel=1e-3)


@pytest.mark.parametrize("formula,metal", [("Fe3O4", "Fe"), ("Co3O4", "Co")])
def test_spinel_stoichiometry(formula, metal):
    symbols = get_lattice(formula).unit_cell().get_chemical_symbols()
    assert symbols.count(metal) == 24 and symbols.count("O") == 32


def test_wurtzite_bond_length():
    lat = get_lattice("CdSe")
    # CdSe is close to ideal wurtzite (c/a = 1.632): the bond along c, u c with u = 3/8,
    # and the three inclined bonds are all about 2.63 Å
    assert min_distance(lat.unit_cell()) == pytest.approx(0.375 * lat.c, rel=1e-2)


def test_plane_spacings():
    cu = get_lattice("Cu")
    assert cu.plane_spacing((1, 1, 1)) == pytest.approx(cu.a / np.sqrt(3), rel=1e-9)
    assert cu.plane_spacing((2, 0, 0)) == pytest.approx(cu.a / 2, rel=1e-9)
    cdse = get_lattice("CdSe")
    assert cdse.plane_spacing((1, 0, 0)) == pytest.approx(cdse.a * np.sqrt(3) / 2, rel=1e-9)
    assert cdse.plane_spacing((0, 0, 2)) == pytest.approx(cdse.c / 2, rel=1e-9)


def test_unknown_lattice_raises():
    with pytest.raises(ValueError, match="Au"):
        get_lattice("Au")


@pytest.mark.parametrize("formula", ["Cu", "CdSe", "Fe3O4"])
def test_particle_is_a_sphere_of_the_lattice(formula):
    lat = get_lattice(formula)
    rng = np.random.default_rng(3)
    atoms, faults = make_particle(lat, 12.0, rng)
    r = np.linalg.norm(atoms.positions, axis=1)
    assert r.max() <= 12.0 + 1e-9
    assert r.max() > 11.0  # filled out to its surface
    # the interior is dense: atom count close to the sphere volume times the cell's number density
    density = CELL_ATOMS[formula] / lat.unit_cell().get_volume()
    expected = 4 / 3 * np.pi * 12.0**3 * density
    assert len(atoms) == pytest.approx(expected, rel=0.15)
    d, _ = cKDTree(atoms.positions).query(atoms.positions, k=2)
    assert d[:, 1].min() == pytest.approx(min_distance(lat.unit_cell()), rel=0.02)
    if not lat.is_wurtzite:
        assert faults == 0


def test_wurtzite_fault_counts():
    lat = get_lattice("CdSe")
    counts = [make_particle(lat, 8.0, np.random.default_rng(seed))[1] for seed in range(30)]
    assert set(counts) == {0, 1, 2}
    assert all(make_particle(get_lattice("Cu"), 8.0, np.random.default_rng(s))[1] == 0 for s in range(5))


def _stacking_faults_seen(atoms, lattice) -> int:
    """Faults visible in an unrotated wurtzite particle: layers k whose site differs from k-2."""
    cation = np.array(atoms.get_chemical_symbols()) == lattice.symbols[0]
    pos = atoms.positions[cation]
    layer = np.round((pos[:, 2] - pos[:, 2].min()) / (lattice.c / 2)).astype(int)
    a1, a2 = np.array([lattice.a, 0.0]), np.array([-lattice.a / 2, lattice.a * np.sqrt(3) / 2])
    frac = pos[:, :2] @ np.linalg.inv(np.array([a1, a2]))
    ref = frac[0]
    site = np.round(3 * (frac[:, 0] - ref[0])).astype(int) % 3
    sites = {}
    for k, s in zip(layer, site):
        sites.setdefault(k, set()).add(s)
    assert all(len(s) == 1 for s in sites.values()), "each bilayer sits on one site"
    seq = [sites[k].pop() for k in sorted(sites)]
    return sum(seq[k] != seq[k - 2] for k in range(2, len(seq)))


def test_reported_stacking_faults_are_in_the_structure(monkeypatch):
    class NoRotation:
        @staticmethod
        def random(random_state=None):
            return Rotation.identity()

    monkeypatch.setattr(structures, "Rotation", NoRotation)
    lat = get_lattice("CdSe")
    reported = []
    for seed in range(16):
        atoms, faults = make_particle(lat, 14.0, np.random.default_rng(seed))
        assert _stacking_faults_seen(atoms, lat) == faults, f"seed {seed}"
        reported.append(faults)
    assert set(reported) >= {0, 1}


@pytest.mark.parametrize("thickness", [10.0, 25.0])
def test_amorphous_carbon_density_and_spacing(thickness):
    rng = np.random.default_rng(7)
    film = amorphous_carbon((40.0, 40.0), thickness, rng)
    pos = film.positions
    extent_z = pos[:, 2].max() - pos[:, 2].min()
    assert extent_z <= thickness + 1e-9
    grams = len(film) * 12.011 / 6.02214076e23
    density = grams / (40.0 * 40.0 * extent_z * 1e-24)
    assert density == pytest.approx(CARBON_DENSITY, rel=0.05)
    tree = cKDTree(np.column_stack([pos[:, :2] % 40.0, pos[:, 2]]), boxsize=[40.0, 40.0, 1e6])
    d, _ = tree.query(tree.data, k=2)
    nearest = d[:, 1]
    assert nearest.min() >= 0.9 * CARBON_MIN_DISTANCE
    assert np.median(nearest) < 2.5 * CARBON_MIN_DISTANCE  # a film, not a sparse gas
    # amorphous: no long-range order, the x positions fill the film evenly
    hist, _ = np.histogram(pos[:, 0], bins=8, range=(0, 40))
    assert hist.min() > 0.7 * hist.mean()


def test_carbon_film_of_zero_thickness_is_empty():
    assert len(amorphous_carbon((20.0, 20.0), 0.0, np.random.default_rng(0))) == 0


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 6),
    r_lo=st.floats(3.0, 20.0),
    r_span=st.floats(0.0, 10.0),
    fov=st.floats(50.0, 160.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_layout_particles_never_overlap_and_stay_in_field(n, r_lo, r_span, fov, seed):
    radius_range = (r_lo, r_lo + r_span)
    if 2 * radius_range[1] + 2 > fov:
        return
    spots = layout_particles(n, radius_range, fov, np.random.default_rng(seed))
    assert 1 <= len(spots) <= n
    for i, (x, y, r) in enumerate(spots):
        assert radius_range[0] <= r <= radius_range[1]
        assert r <= x <= fov - r and r <= y <= fov - r
        for px, py, pr in spots[:i]:
            assert np.hypot(x - px, y - py) - r - pr >= PARTICLE_GAP - 1e-9


def test_layout_rejects_a_particle_larger_than_the_field():
    with pytest.raises(ValueError, match="does not fit"):
        layout_particles(1, (30.0, 30.0), 50.0, np.random.default_rng(0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scene_geometry(seed):
    lat = get_lattice("Cu")
    fov = 80.0
    scene = make_scene(lat, (8.0, 14.0), fov, (10.0, 20.0), np.random.default_rng(seed), max_particles=4)
    assert 10.0 <= scene.film_thickness <= 20.0
    film_bottom = VACUUM_PAD + scene.film_thickness
    depth = scene.cell[2]
    pos = scene.particles.positions
    # each particle atom belongs to one particle of the layout, inside its sphere
    centres = np.array([p.center for p in scene.layout])
    radii = np.array([p.radius for p in scene.layout])
    dist = np.linalg.norm(pos[:, None, :] - centres[None], axis=2)
    assert np.all((dist <= radii[None] + 1e-6).sum(axis=1) == 1)
    # in the field and below the film, with vacuum to the exit plane
    assert pos[:, :2].min() >= 0 and pos[:, :2].max() <= fov
    assert pos[:, 2].min() > film_bottom
    assert pos[:, 2].max() <= depth - VACUUM_PAD + 1e-6
    carbon = scene.carbon.positions
    assert carbon[:, 2].min() >= VACUUM_PAD - 1e-9 and carbon[:, 2].max() <= film_bottom + 1e-9
    # no two particles overlap (gap between spheres)
    for i in range(len(radii)):
        for j in range(i):
            gap = np.hypot(*(centres[i, :2] - centres[j, :2])) - radii[i] - radii[j]
            assert gap >= PARTICLE_GAP - 1e-9
    assert len(scene.atoms(with_film=True)) == len(scene.particles) + len(scene.carbon)
    assert len(scene.atoms(with_film=False)) == len(scene.particles)


def test_scene_is_reproducible_from_its_seed():
    lat = get_lattice("CdSe")
    a = make_scene(lat, (8.0, 12.0), 60.0, (10.0, 15.0), np.random.default_rng(11), max_particles=3)
    b = make_scene(lat, (8.0, 12.0), 60.0, (10.0, 15.0), np.random.default_rng(11), max_particles=3)
    c = make_scene(lat, (8.0, 12.0), 60.0, (10.0, 15.0), np.random.default_rng(12), max_particles=3)
    assert np.array_equal(a.atoms().positions, b.atoms().positions)
    assert a.layout == b.layout
    assert not (len(a.atoms()) == len(c.atoms()) and np.allclose(a.atoms().positions, c.atoms().positions))
