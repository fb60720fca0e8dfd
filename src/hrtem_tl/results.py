"""The parquet results store and the reductions the figures show.

Per series, in ``data/results/<series>/`` (schema in ``data/results/SCHEMA.md``):

* ``runs.parquet``: one row per transfer-learning run (a trained model);
* ``evaluations.parquet``: one row per run x stage (``pretrain``, ``transfer``) x
  evaluated domain, with every metric of :mod:`hrtem_tl.metrics`;
* ``histories.parquet``: one row per run x stage x epoch;
* ``failures.parquet``: one row per run whose training diverged (only once one has).

Rows are keyed (``KEYS``); appending replaces rows with the same key, so re-running
a run never duplicates it. Each file is written to a temporary name and renamed;
``runs.parquet`` is written last, so a run counts as finished only once all its rows
are stored. Only a sweep's coordinating process writes, holding the series folder's
lock (:class:`hrtem_tl.writers.WriterLock`).
"""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import METRICS
from .writers import replacing

DEFAULT_RESULTS = Path("data/results")
TABLES = ("evaluations", "histories", "runs")  # write order: runs last
FAILURES = "failures"  # not in TABLES: the file exists only once a run has failed
KEYS = {
    "runs": ["profile", "run_id"],
    "evaluations": ["profile", "run_id", "stage", "eval_domain", "split"],
    "histories": ["profile", "run_id", "stage", "epoch"],
    FAILURES: ["profile", "run_id"],
}
SCHEMA = {
    "runs": {
        "run_id": "object", "pretrain_id": "object", "series": "object", "profile": "object",
        "kind": "object", "protocol": "int64",
        "pretrain_domain": "object", "target_domain": "object", "freezing": "object", "seed": "int64",
        "transfer_batchnorm": "object", "lr_pretrain": "float64", "lr_transfer": "float64", "pretrain_images": "int64",
        "transfer_images": "int64", "val_images": "int64", "test_images": "int64", "pretrain_epochs": "int64",
        "transfer_epochs": "int64", "pretrain_steps": "int64", "transfer_steps": "int64",
        "batch_size": "int64", "crop": "int64", "best_epoch_pretrain": "int64",
        "best_epoch_transfer": "int64", "params_total": "int64", "params_trainable": "int64",
        "wall_pretrain_s": "float64", "wall_transfer_s": "float64", "device": "object",
        "precision": "object", "package_version": "object", "git_commit": "object",
        "config_hash": "object", "finished_at": "float64",
    },
    "evaluations": {"run_id": "object", "profile": "object", "stage": "object", "eval_domain": "object",
                    "split": "object"}
    | {m: "float64" for m in METRICS},
    "histories": {
        "run_id": "object", "profile": "object", "stage": "object", "epoch": "int64",
        "train_loss": "float64", "val_loss": "float64", "val_dice": "float64", "lr": "float64",
    },
    FAILURES: {
        "run_id": "object", "profile": "object", "stage": "object", "reason": "object", "config_hash": "object",
        "finished_at": "float64",
    },
}
REDUCTIONS = ("median", "mean", "min", "max")


class ResultsError(ValueError):
    """A results file is missing or does not match the schema."""


def table_path(root: Path, series: str, table: str) -> Path:
    return Path(root) / series / f"{table}.parquet"


def validate(frame: pd.DataFrame, table: str, source: str = "") -> pd.DataFrame:
    """Check columns and types against ``SCHEMA``; returns the frame with schema dtypes."""
    expected = SCHEMA[table]
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise ResultsError(f"{source or table}: missing columns {', '.join(missing)}")
    try:
        return frame.astype({c: t for c, t in expected.items()})
    except (ValueError, TypeError) as err:
        raise ResultsError(f"{source or table}: a column has the wrong type ({err})") from None


def read_table(root: Path, series: str, table: str) -> pd.DataFrame:
    """Read and validate one table; raises ``ResultsError`` if missing or malformed."""
    path = table_path(root, series, table)
    if not path.exists():
        raise ResultsError(f"results file {path} is missing; run: hrtem-tl study {series} --profile cpu")
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise ResultsError(f"results file {path} cannot be read as parquet: {err}") from None
    return validate(frame, table, str(path))


def read_results(root: Path, series: str) -> dict[str, pd.DataFrame]:
    """All three tables of a series, validated."""
    return {t: read_table(root, series, t) for t in TABLES}


def check_store(root: Path, series: str) -> None:
    """Read every stored table of ``series``; raises ``ResultsError`` if one is unreadable or malformed."""
    for table in (*TABLES, FAILURES):
        if table_path(root, series, table).exists():
            read_table(root, series, table)


def _write_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to a temporary file and rename it to ``path``; a failed write removes the temporary file."""
    with replacing(path) as tmp:
        frame.to_parquet(tmp, index=False)


def append_records(root: Path, series: str, records: dict[str, list[dict]]) -> None:
    """Add rows to the series' tables (``TABLES`` in order, then ``failures``), replacing rows that share a key."""
    for table in (*TABLES, FAILURES):
        rows = records.get(table, [])
        if not rows:
            continue
        new = validate(pd.DataFrame(rows), table)
        path = table_path(root, series, table)
        if path.exists():
            old = read_table(root, series, table)
            new = pd.concat([old, new], ignore_index=True).drop_duplicates(KEYS[table], keep="last")
        _write_atomic(new.reset_index(drop=True), path)


class StaleResultsError(ResultsError):
    """Stored runs were made with other settings than the current ones."""


def finished_runs(root: Path, series: str, profile: str, config_hash: str | None = None) -> set[str]:
    """Run ids already stored for ``profile``.

    With ``config_hash``, every stored run of ``profile`` must carry it: runs made with
    other settings raise :class:`StaleResultsError`, which says how to move them aside
    (results are never deleted here), so old and new runs never mix in one table.
    """
    return _stored_ids(root, series, "runs", profile, config_hash)


def failed_runs(root: Path, series: str, profile: str, config_hash: str | None = None) -> set[str]:
    """Run ids of ``profile`` in ``failures.parquet``, checked against ``config_hash`` as :func:`finished_runs` does."""
    return _stored_ids(root, series, FAILURES, profile, config_hash)


def _stored_ids(root: Path, series: str, table: str, profile: str, config_hash: str | None) -> set[str]:
    path = table_path(root, series, table)
    if not path.exists():
        return set()
    rows = read_table(root, series, table)
    mine = rows[rows["profile"] == profile]
    if config_hash is not None:
        stale = mine[mine["config_hash"] != config_hash]
        if len(stale):
            hashes = ", ".join(sorted(set(stale["config_hash"])))
            what = "runs" if table == "runs" else "failed runs"
            raise StaleResultsError(
                f"{len(stale)} of {len(mine)} stored {profile} {what} in {path.parent} were made with other settings "
                f"(config_hash {hashes}; now {config_hash}): move the folder aside (for example "
                f"git mv {path.parent} {path.parent}-{hashes.split(',')[0]}) or pass another --results folder")
    return set(mine["run_id"])


def transfers(runs: pd.DataFrame) -> pd.DataFrame:
    """The transfer runs of a runs table (control runs left out)."""
    return runs[runs["kind"] == "transfer"]


def controls(runs: pd.DataFrame) -> pd.DataFrame:
    """The control runs: further training on the pretraining domain itself."""
    return runs[runs["kind"] == "control"]


def _reduce(frame: pd.DataFrame, rows: str, cols: str, metric: str, reduction: str, order: list[str]):
    """Per (row, column) cell: the reduction, the number of models and the quartiles.

    Vectorised over cells (sorted values per cell, linear-interpolated quantiles as
    pandas computes them); NaN values count as models but not in the statistics.
    """
    n = len(order)
    cells = {k: np.full(n * n, np.nan) for k in ("value", "count", "q25", "q75")}
    axis = pd.Index(order)
    r, c = axis.get_indexer(frame[rows]), axis.get_indexer(frame[cols])
    keep = (r >= 0) & (c >= 0)
    if keep.any():
        cell = (r * n + c)[keep]
        values = frame[metric].to_numpy(dtype=float)[keep]
        sort = np.lexsort((values, cell))  # by cell, then value; NaN last within a cell
        cell, values = cell[sort], values[sort]
        ids, start, size = np.unique(cell, return_index=True, return_counts=True)
        cells["count"][ids] = size
        finite = ~np.isnan(values)
        valid = np.add.reduceat(finite.astype(np.int64), start)
        sums = np.add.reduceat(np.where(finite, values, 0.0), start)
        ok = valid > 0
        ids, start, valid, sums = ids[ok], start[ok], valid[ok], sums[ok]

        def quantile(q: float) -> np.ndarray:
            pos = start + q * (valid - 1)
            lo = np.floor(pos).astype(np.int64)
            hi = np.minimum(lo + 1, start + valid - 1)
            return values[lo] + (values[hi] - values[lo]) * (pos - lo)

        cells["value"][ids] = {"median": lambda: quantile(0.5), "mean": lambda: sums / valid,
                               "min": lambda: values[start], "max": lambda: values[start + valid - 1]}[reduction]()
        cells["q25"][ids] = quantile(0.25)
        cells["q75"][ids] = quantile(0.75)
    out = {k: pd.DataFrame(v.reshape(n, n), index=pd.Index(order, name=rows), columns=pd.Index(order, name=cols))
           for k, v in cells.items()}
    if not np.isnan(cells["count"]).any():
        out["count"] = out["count"].astype("int64")
    return out


_JOINED: dict[tuple[int, int], tuple] = {}


def _joined(runs: pd.DataFrame, evaluations: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows every matrix draws from, whatever the metric, reduction or freezing.

    ``pre``: evaluations after pretraining, one row per pretrained model, evaluated
    domain and freezing mode of its runs. ``post``: each run evaluated on its target.
    The join is cached per pair of frames (held by weak reference, checked by identity
    and shape), so the explorers' many calls on one pair of tables join them once;
    treat the frames passed to :func:`matrices` as immutable.
    """
    key = (id(runs), id(evaluations))
    stamp = (runs.shape, evaluations.shape)
    hit = _JOINED.get(key)
    if hit is not None and hit[0]() is runs and hit[1]() is evaluations and hit[2] == stamp:
        return hit[3]
    columns = ["run_id", "profile", "pretrain_id", "pretrain_domain", "target_domain", "freezing"]
    chosen = transfers(runs)[columns]
    stage = evaluations["stage"].to_numpy()
    # pretraining rows repeat in every run of a model: read them through one run per
    # model and freezing mode
    models = chosen.drop_duplicates(["profile", "pretrain_id", "freezing"])
    pre = evaluations[(stage == "pretrain") & evaluations["run_id"].isin(models["run_id"]).to_numpy()]
    pre = pre.merge(models, on=["run_id", "profile"]).drop_duplicates(
        ["profile", "pretrain_id", "eval_domain", "freezing"])
    post = evaluations[stage == "transfer"].merge(chosen, left_on=["run_id", "profile", "eval_domain"],
                                                  right_on=["run_id", "profile", "target_domain"])
    if len(_JOINED) >= 8:
        _JOINED.clear()
    _JOINED[key] = (weakref.ref(runs), weakref.ref(evaluations), stamp, (pre, post))
    return pre, post


def matrices(
    runs: pd.DataFrame,
    evaluations: pd.DataFrame,
    *,
    freezing: set[str] | list[str] | tuple[str, ...],
    metric: str = "loss",
    reduction: str = "median",
    domains: list[str] | None = None,
) -> dict[str, dict[str, pd.DataFrame]]:
    """The pair of matrices of the explorers, rows = pretraining, columns = target domain.

    ``pretrain``: models pretrained on the row's domain, evaluated on the column's
    validation set; each pretrained model counts once however many runs share it.
    ``transfer``: models transferred from the row's to the column's domain,
    evaluated on the column's domain; the diagonal holds the pretraining value.
    Each holds ``value`` (the reduction), ``count`` (models) and ``q25``/``q75``.
    Only runs whose freezing mode is in ``freezing`` count.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}")
    if not freezing:
        raise ValueError("choose at least one freezing mode")
    pre, post = _joined(runs, evaluations)
    order = domains or sorted(set(runs["pretrain_domain"]) | set(runs["target_domain"]))
    chosen = list(freezing)
    # each pretrained model once, if any of its runs has a chosen freezing mode
    pre = pre[pre["freezing"].isin(chosen)].drop_duplicates(["profile", "pretrain_id", "eval_domain"])
    post = post[post["freezing"].isin(chosen)]
    diagonal = pre[pre["eval_domain"] == pre["pretrain_domain"]]
    post = pd.concat([post, diagonal], ignore_index=True)
    return {
        "pretrain": _reduce(pre, "pretrain_domain", "eval_domain", metric, reduction, order),
        "transfer": _reduce(post, "pretrain_domain", "eval_domain", metric, reduction, order),
    }


def as_array(frame: pd.DataFrame) -> list[list[float | None]]:
    """A matrix as nested lists with ``None`` for empty cells (JSON-friendly)."""
    values = frame.to_numpy(dtype=float)
    return [[None if np.isnan(v) else float(v) for v in row] for row in values]
