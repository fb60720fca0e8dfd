"""Import the original study's released result tables into our results store.

The original study (L. Rangel DaCosta, H. Oill, M. Scott, *Strategies for effective
transfer learning for HRTEM analysis with neural networks*, Elemental Microscopy 2025,
DOI 10.69761/kjte5358, CC-BY-4.0; :data:`ATTRIBUTION`) released four pandas pickles
of its results. :func:`import_original` converts them (:mod:`hrtem_tl.original_tables`) into
``<out>/<series>/{runs,evaluations,histories}.parquet`` in the schema of
:mod:`hrtem_tl.results` (``results.SCHEMA``), one folder per series:

============  ========================  =======  ===================================
series        source file               runs     evaluated domains per stage
============  ========================  =======  ===================================
noise         ``tl_noise_models.pkl``   180      5 doses (``dose<D>``)
structure     ``mini_size_df.pkl``      2,457    18 (``<Formula>_<small|large>``)
defocus       ``mini_df.pkl``           7,200    11 (``df<nm>``)
baseline      ``mini_baseline_df.pkl``  720      2 (the mixture's major and minor)
============  ========================  =======  ===================================

Safety
------
A pickle can run code when it is loaded. Each file is read once into memory, its
SHA-256 is checked against :data:`SHA256` (a mismatch raises ``ValueError`` naming the
file and both hashes) and only then are those same bytes unpickled, by
:class:`hrtem_tl.safe_pickle.SafeUnpickler`, whose ``find_class`` resolves exactly the classes of
:data:`hrtem_tl.safe_pickle.ALLOWED_CLASSES` (those a DataFrame of these files needs, as the source README
lists them; ``numpy.core.*`` and ``numpy._core.*`` are accepted as aliases of each other
and resolved to the installed numpy's module) and raises ``pickle.UnpicklingError``
for anything else. Neither ``pandas.read_pickle`` nor ``pickle.load`` is ever called.

Output
------
Byte-for-byte reproducible: rows sorted by pretraining domain, target domain (both in
our vocabulary's order), freezing (none, encoder, decoder), set size, learning rates and
repeat; evaluations by run, stage and domain; fixed column order (``results.SCHEMA``
then the extras); no timestamps. Each file carries the attribution in its parquet
key-value metadata (``hrtem_tl.source``: JSON of :data:`ATTRIBUTION`;
``hrtem_tl.source_file``: the file, its SHA-256 and the loss definition), and is
written to a temporary name and renamed (``runs.parquet`` last).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import results
from .original_tables import FILES, FLOOR_IN_SOURCE, LOSS_DEFINITION, SOURCE_COMMIT, SOURCE_REPOSITORY, convert
from .safe_pickle import safe_frame
from .writers import replacing

ATTRIBUTION = {
    "authors": ["L. Rangel DaCosta", "H. Oill", "M. Scott"],
    "title": "Strategies for effective transfer learning for HRTEM analysis with neural networks",
    "journal": "Elemental Microscopy",
    "year": 2025,
    "doi": "10.69761/kjte5358",
    "license": "CC-BY-4.0",
    "repository": SOURCE_REPOSITORY,
    "path": "notebooks/",
    "commit": SOURCE_COMMIT,
    "url": f"https://github.com/{SOURCE_REPOSITORY}",
}

#: The pinned SHA-256 of each source file (from the source README).
SHA256 = {
    "tl_noise_models.pkl": "030c3f5ca4924957567d87b1a52eb642e98032b6b9a92c43beca91f4a069c09e",
    "mini_size_df.pkl": "29f5fbc2ae864517a4c16e73ec75bfa3b24696ff2969f67d2afd284ebee9d613",
    "mini_df.pkl": "f7e8cf9f0ec87a812b00eb53d8b19e0f3898e85c9345efacb87ca2844a19e8a0",
    "mini_baseline_df.pkl": "9f388ce097b333db193072aebec3d73eb127559f1d2b6d872840de0afd5f6860",
}
METADATA_KEY = b"hrtem_tl.source"
METADATA_FILE_KEY = b"hrtem_tl.source_file"
#: Runs per series in the source tables.
EXPECTED_RUNS = {"noise": 180, "structure": 2457, "defocus": 7200, "baseline": 720}

def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_source(path: Path, expected: str | None = None) -> pd.DataFrame:
    """Read ``path``, check its SHA-256 (``expected``, default the pin of its name), then unpickle it safely."""
    path = Path(path)
    if expected is None:
        if path.name not in SHA256:
            raise ValueError(f"{path}: no pinned SHA-256 for {path.name!r}; known files: {', '.join(SHA256)}")
        expected = SHA256[path.name]
    data = path.read_bytes()
    found = sha256_hex(data)
    if found != expected:
        raise ValueError(f"{path}: SHA-256 mismatch (expected {expected}, found {found}); refusing to unpickle it")
    return safe_frame(data)


# --- writing ----------------------------------------------------------------------

_ARROW = {"object": pa.string(), "int64": pa.int64(), "float64": pa.float64()}


def _arrow_table(frame: pd.DataFrame, metadata: dict[bytes, bytes]) -> pa.Table:
    schema = pa.schema([pa.field(c, _ARROW[str(frame[c].dtype)]) for c in frame.columns])
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})


def _write_parquet(table: pa.Table, path: Path) -> None:
    with replacing(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def import_original(source: Path, out: Path = Path("data/results/original")) -> dict[str, int]:
    """Convert the four released tables in ``source`` into ``out/<series>/*.parquet``.

    Checks every file's SHA-256 before unpickling it (all files are checked before any
    output is written) and returns the number of runs per series.
    """
    source, out = Path(source), Path(out)
    frames = {}
    for series, file in FILES.items():
        frames[series] = load_source(source / file, SHA256[file])
    counts = {}
    for series, frame in frames.items():
        file, sha = FILES[series], SHA256[FILES[series]]
        tables = convert(series, frame, sha)
        if len(tables["runs"]) != len(frame):
            raise ValueError(f"{series}: {len(tables['runs'])} runs from {len(frame)} source rows")
        metadata = {
            METADATA_KEY: json.dumps(ATTRIBUTION, sort_keys=True).encode(),
            METADATA_FILE_KEY: json.dumps({"file": file, "sha256": sha, "series": series,
                                           "loss_definition": LOSS_DEFINITION,
                                           "floor_in_source": FLOOR_IN_SOURCE[series],
                                           "converted_by": "hrtem_tl.original"}, sort_keys=True).encode(),
        }
        for table in results.TABLES:  # runs last
            _write_parquet(_arrow_table(tables[table], metadata), results.table_path(out, series, table))
        counts[series] = len(tables["runs"])
    return counts
