"""Atomic scenes: randomly oriented nanoparticles on an amorphous carbon film.

Lengths are in Angstrom. The beam travels along +z (abTEM's convention); the film
sits on the entrance side and the particles hang below it, so the particles' exit
surface is close to the exit plane of the cell and the particles-only simulation
used for labels has no free propagation behind the particles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from .lattices import Lattice

CARBON_DENSITY = 2.0  # [g/cm³]
CARBON_MIN_DISTANCE = 1.3  # [Å]
PARTICLE_GAP = 10.0  # minimum surface-to-surface distance between particles [Å]
VACUUM_PAD = 4.0  # vacuum above and below the atoms along z [Å]

_AVOGADRO = 6.02214076e23


@dataclass(frozen=True)
class Particle:
    """One spherical particle: lattice, centre (x, y, z) [Å], radius [Å], faults."""

    formula: str
    center: tuple[float, float, float]
    radius: float
    stacking_faults: int = 0


@dataclass
class Scene:
    """A simulation cell holding particles and, optionally, a carbon film."""

    particles: Atoms
    carbon: Atoms
    cell: tuple[float, float, float]
    film_thickness: float
    layout: list[Particle] = field(default_factory=list)

    def atoms(self, with_film: bool = True) -> Atoms:
        """All atoms of the scene, or the particles alone in vacuum."""
        atoms = self.particles.copy()
        if with_film:
            atoms += self.carbon
        atoms.set_cell(self.cell)
        atoms.set_pbc(True)
        return atoms


def _wurtzite_block(
    lattice: Lattice, radius: float, faults: int, rng: np.random.Generator
) -> tuple[Atoms, list[tuple[float, float]]]:
    """A wurtzite block covering a sphere of ``radius``, with ``faults`` stacking faults.

    Bilayers stack along c as ABAB...; a fault puts the next bilayer on the third
    site (ABAB|CBCB), the intrinsic I1 fault of wurtzite. Returns the block and, per
    fault, the heights [Å] of the cation planes of the faulted bilayer and of the
    bilayer two below it (the pair whose sites differ).
    """
    a, c = lattice.a, lattice.c
    half_layers = int(np.ceil(2 * radius / (c / 2))) + 4
    sites = [(0.0, 0.0), (1 / 3, 2 / 3), (2 / 3, 1 / 3)]
    fault_layers = set(rng.choice(np.arange(2, half_layers - 2), size=faults, replace=False).tolist())
    stack = [0, 1]
    for k in range(2, half_layers):
        stack.append(3 - stack[-1] - stack[-2] if k in fault_layers else stack[-2])
    n = int(np.ceil(2 * radius / a)) + 3
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    a1, a2 = np.array([a, 0.0]), np.array([-a / 2, a * np.sqrt(3) / 2])
    positions, symbols = [], []
    cation, anion = lattice.symbols
    z0 = -half_layers * c / 4
    for k, site in enumerate(stack):
        fx, fy = i.ravel() + sites[site][0], j.ravel() + sites[site][1]
        xy = np.outer(fx, a1) + np.outer(fy, a2)
        for symbol, dz in ((cation, 0.0), (anion, 0.375 * c)):
            z = np.full(len(xy), z0 + k * c / 2 + dz)
            positions.append(np.column_stack([xy, z]))
            symbols += [symbol] * len(xy)
    planes = [(z0 + k * c / 2, z0 + (k - 2) * c / 2) for k in sorted(fault_layers)]
    return Atoms(symbols=symbols, positions=np.concatenate(positions)), planes


def _cubic_block(lattice: Lattice, radius: float) -> Atoms:
    """A block of unit cells centred on the origin that covers a sphere of ``radius``."""
    cell = lattice.unit_cell()
    reps = int(np.ceil(2 * radius / lattice.a)) + 2
    block = cell.repeat((reps, reps, reps))
    block.translate(-block.cell.sum(axis=0) / 2)
    return block


def make_particle(
    lattice: Lattice, radius: float, rng: np.random.Generator, max_faults: int = 2
) -> tuple[Atoms, int]:
    """A sphere of ``radius`` [Å] cut from a randomly rotated crystal, centred at 0.

    Returns the atoms and the number of stacking faults that cut through the sphere
    (wurtzite only; faults drawn in the block outside the sphere are not counted).
    """
    faults = int(rng.integers(0, max_faults + 1)) if lattice.is_wurtzite else 0
    planes = []
    if lattice.is_wurtzite:
        block, planes = _wurtzite_block(lattice, radius, faults, rng)
    else:
        block = _cubic_block(lattice, radius)
    # A random offset picks which atom sits near the centre; then a random rotation.
    offset = rng.uniform(-0.5, 0.5, size=3) * lattice.a
    positions = block.positions + offset
    rotation = Rotation.random(random_state=rng)
    positions = rotation.apply(positions)
    inside = np.linalg.norm(positions, axis=1) <= radius
    heights = block.positions[inside, 2]
    faults = int(sum(np.isclose(heights, z).any() and np.isclose(heights, z2).any() for z, z2 in planes))
    particle = Atoms(symbols=np.array(block.get_chemical_symbols())[inside], positions=positions[inside])
    return particle, faults


def amorphous_carbon(
    extent: tuple[float, float],
    thickness: float,
    rng: np.random.Generator,
    density: float = CARBON_DENSITY,
    min_distance: float = CARBON_MIN_DISTANCE,
    iterations: int = 10,
) -> Atoms:
    """A random carbon film [Å] of ``density`` [g/cm³], periodic in x and y.

    Uniform random positions are relaxed by pushing apart every pair closer than
    ``min_distance`` (aiming 10 % beyond it, which converges in a few sweeps) until no
    pair is left too close or ``iterations`` runs out.
    """
    if thickness <= 0:
        return Atoms(cell=[extent[0], extent[1], 0.0])
    number_density = density / 12.011 * _AVOGADRO * 1e-24  # atoms per Å³
    count = int(round(number_density * extent[0] * extent[1] * thickness))
    box = np.array([extent[0], extent[1], thickness + 10 * min_distance])
    pos = rng.uniform(0, 1, size=(count, 3)) * [extent[0], extent[1], thickness]
    target = 1.1 * min_distance
    for _ in range(iterations):
        tree = cKDTree(pos, boxsize=box)
        pairs = tree.query_pairs(target, output_type="ndarray")
        if not tree.query_pairs(min_distance):
            break
        delta = pos[pairs[:, 1]] - pos[pairs[:, 0]]
        delta -= box * np.round(delta / box)
        dist = np.linalg.norm(delta, axis=1, keepdims=True)
        push = delta / np.maximum(dist, 1e-6) * (target - dist) * 0.55
        np.add.at(pos, pairs[:, 1], push)
        np.add.at(pos, pairs[:, 0], -push)
        pos[:, :2] %= box[:2]
        pos[:, 2] = np.clip(pos[:, 2], 0, thickness)
    return Atoms("C" * count, positions=pos)


def layout_particles(
    n_particles: int,
    radius_range: tuple[float, float],
    field_of_view: float,
    rng: np.random.Generator,
    gap: float = PARTICLE_GAP,
    tries: int = 200,
) -> list[tuple[float, float, float]]:
    """Draw up to ``n_particles`` (x, y, radius) [Å] inside the field, ``gap`` apart.

    Each particle lies wholly inside the field. A particle that finds no free place
    in ``tries`` draws is dropped; at least one particle is always placed.
    """
    placed: list[tuple[float, float, float]] = []
    for _ in range(n_particles):
        for _ in range(tries):
            r = rng.uniform(*radius_range)
            if 2 * r + 2 > field_of_view:
                raise ValueError(
                    f"particle radius {r:.1f} Å does not fit a field of view of {field_of_view:.1f} Å"
                )
            x, y = rng.uniform(r + 1, field_of_view - r - 1, size=2)
            if all(np.hypot(x - px, y - py) >= r + pr + gap for px, py, pr in placed):
                placed.append((float(x), float(y), float(r)))
                break
    return placed


def make_scene(
    lattice: Lattice,
    radius_range: tuple[float, float],
    field_of_view: float,
    film_range: tuple[float, float],
    rng: np.random.Generator,
    max_particles: int = 5,
) -> Scene:
    """A scene of 1 to ``max_particles`` particles under a carbon film [Å]."""
    n = int(rng.integers(1, max_particles + 1))
    spots = layout_particles(n, radius_range, field_of_view, rng)
    film = float(rng.uniform(*film_range))
    r_max = max(r for _, _, r in spots)
    film_bottom = VACUUM_PAD + film
    depth = film_bottom + 2 * r_max + 1.0 + VACUUM_PAD
    particles = Atoms()
    layout = []
    for x, y, r in spots:
        atoms, faults = make_particle(lattice, r, rng)
        z = film_bottom + 1.0 + r
        atoms.translate((x, y, z))
        particles += atoms
        layout.append(Particle(lattice.formula, (x, y, z), r, faults))
    carbon = amorphous_carbon((field_of_view, field_of_view), film, rng)
    carbon.translate((0, 0, VACUUM_PAD))
    cell = (field_of_view, field_of_view, depth)
    return Scene(particles=particles, carbon=carbon, cell=cell, film_thickness=film, layout=layout)
