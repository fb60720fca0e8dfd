"""Unpickle pandas DataFrames without letting the pickle run code.

A pickle names the callables that rebuild its objects, and loading it calls them: a
pickle from elsewhere can run anything. :class:`SafeUnpickler` resolves only
:data:`ALLOWED_CLASSES` (what a plain DataFrame of numbers and strings needs) and
refuses every other name, and persistent ids, with ``pickle.UnpicklingError``. Check a
file's hash before unpickling it (:func:`hrtem_tl.original.load_source` does).
"""

from __future__ import annotations

import importlib
import io
import pickle

import pandas as pd

#: The only (module, name) pairs the unpickler resolves.
ALLOWED_CLASSES = frozenset({
    ("pandas.core.frame", "DataFrame"),
    ("pandas.core.internals.managers", "BlockManager"),
    ("pandas._libs.internals", "_unpickle_block"),
    ("pandas.core.indexes.base", "_new_Index"),
    ("pandas.core.indexes.base", "Index"),
    ("pandas.core.indexes.range", "RangeIndex"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("builtins", "slice"),
})


def _canonical(module: str) -> str:
    """``numpy.core.*`` (numpy < 2) -> ``numpy._core.*``: both name the same modules."""
    return "numpy._core." + module[len("numpy.core."):] if module.startswith("numpy.core.") else module


def _installed(module: str) -> str:
    """The installed name of a canonical module: ``numpy._core.*`` falls back to ``numpy.core.*``."""
    if module.startswith("numpy._core."):
        try:
            importlib.import_module(module)
        except ImportError:
            return "numpy.core." + module[len("numpy._core."):]
    return module


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_CLASSES`."""

    def find_class(self, module, name):
        if (_canonical(module), name) not in ALLOWED_CLASSES:
            raise pickle.UnpicklingError(
                f"refused to unpickle {module}.{name}: only the pandas/numpy classes of a DataFrame are allowed")
        return super().find_class(_installed(_canonical(module)), name)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused to unpickle a persistent id")


def safe_frame(data: bytes) -> pd.DataFrame:
    """Unpickle ``data`` with :class:`SafeUnpickler`; the result must be a DataFrame."""
    frame = SafeUnpickler(io.BytesIO(data)).load()
    if not isinstance(frame, pd.DataFrame):
        raise pickle.UnpicklingError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    return frame
