"""The nine crystal lattices of the study, built by ase from space groups.

Lattice parameters are in Angstrom. Wyckoff positions use the origin choice that
``ase.spacegroup.crystal`` calls ``setting=1`` unless stated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.spacegroup import crystal


@dataclass(frozen=True)
class Lattice:
    """A crystal lattice: formula, structure type, space group number, parameters [Å] and basis.

    ``structure_type`` is the symmetry class the study compares (wurtzite, fcc, diamond,
    spinel, bcc); diamond and spinel share space group 227 but are different types.
    """

    formula: str
    structure_type: str
    spacegroup: int
    a: float
    c: float | None
    symbols: tuple[str, ...]
    basis: tuple[tuple[float, float, float], ...]
    setting: int = 1
    label_sigma: float = 1.6  # Gaussian width [Å] used to smooth its labels

    @property
    def is_wurtzite(self) -> bool:
        return self.spacegroup == 186

    def unit_cell(self) -> Atoms:
        """The conventional unit cell as ase Atoms."""
        if self.c is None:
            cellpar = [self.a, self.a, self.a, 90, 90, 90]
        else:
            cellpar = [self.a, self.a, self.c, 90, 90, 120]
        return crystal(
            self.symbols,
            basis=self.basis,
            spacegroup=self.spacegroup,
            cellpar=cellpar,
            setting=self.setting,
            primitive_cell=False,
        )

    def plane_spacing(self, hkl: tuple[int, int, int]) -> float:
        """Spacing [Å] of lattice planes (hkl) from the reciprocal cell."""
        reciprocal = self.unit_cell().cell.reciprocal()
        g = np.asarray(hkl, dtype=float) @ reciprocal
        return float(1.0 / np.linalg.norm(g))


# Wurtzite: anion at z = u with the ideal u = 3/8.
_WURTZITE = ((1 / 3, 2 / 3, 0.0), (1 / 3, 2 / 3, 0.375))
# Spinel AB2O4 in origin choice 2: A on 8a, B on 16d, O on 32e (x, x, x).
_SPINEL_A, _SPINEL_B = (0.125, 0.125, 0.125), (0.5, 0.5, 0.5)

LATTICES: dict[str, Lattice] = {
    lat.formula: lat
    for lat in (
        Lattice("ZnS", "wurtzite", 186, 3.8227, 6.2607, ("Zn", "S"), _WURTZITE),
        Lattice("CdSe", "wurtzite", 186, 4.2985, 7.0152, ("Cd", "Se"), _WURTZITE),
        Lattice("Cu", "fcc", 225, 3.6157, None, ("Cu",), ((0, 0, 0),)),
        Lattice("Ag", "fcc", 225, 4.0782, None, ("Ag",), ((0, 0, 0),)),
        Lattice("C", "diamond", 227, 3.5673, None, ("C",), ((0, 0, 0),), label_sigma=1.0),
        Lattice("Si", "diamond", 227, 5.430, None, ("Si",), ((0, 0, 0),)),
        Lattice(
            "Fe3O4", "spinel", 227, 8.394, None, ("Fe", "Fe", "O"),
            (_SPINEL_A, _SPINEL_B, (0.2549, 0.2549, 0.2549)), setting=2,
        ),
        Lattice(
            "Co3O4", "spinel", 227, 8.065, None, ("Co", "Co", "O"),
            (_SPINEL_A, _SPINEL_B, (0.2632, 0.2632, 0.2632)), setting=2, label_sigma=1.0,
        ),
        Lattice("Fe", "bcc", 229, 2.866, None, ("Fe",), ((0, 0, 0),), label_sigma=1.0),
    )
}


def get_lattice(formula: str) -> Lattice:
    """Look up a lattice by formula; raises ``ValueError`` naming the known ones."""
    try:
        return LATTICES[formula]
    except KeyError:
        known = ", ".join(LATTICES)
        raise ValueError(f"unknown lattice {formula!r}; known lattices: {known}") from None
