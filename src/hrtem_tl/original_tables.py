"""Convert the original study's released tables into the schema of :mod:`hrtem_tl.results`.

What each table holds and how it maps onto runs, evaluations and histories; reading
and writing the files (checksums, safe unpickling, parquet) is :mod:`hrtem_tl.original`.

Every row carries its source
----------------------------
``profile = "original"``, ``kind = "transfer"`` (``"baseline"`` in the baseline series,
see below), ``protocol = 0`` (:data:`ORIGINAL_PROTOCOL`: the original's own protocol;
ours are 1 and 2), ``device = "NVIDIA A100 (NERSC)"``, ``precision = "amp"`` (mixed
precision, as published), ``package_version = "original"``, ``git_commit`` = the source
repository's commit (:data:`SOURCE_COMMIT`), ``config_hash`` = the first 16 hex digits
of SHA-256 of ``"original|<file's SHA-256>"``. Extra runs columns: ``source_file`` and
``source_index`` (the row's index label in the source table, so every row can be traced
back). Extra evaluations column: ``loss_definition``.

Run ids and repeats
-------------------
The original released no seeds. The repeats of one configuration are numbered 0, 1, 2
in the order of the source table, and that number is stored as ``seed`` and in the run
id (``s<n>``); it is a replicate number, not a random seed. Run ids follow ours:

* noise, structure: ``<series>|<pretrain>><target>|<freezing>|s<n>``;
* defocus (varies set size and learning rates):
  ``defocus|<pretrain>><target>|<freezing>|s<n>|n<images>|lr<pretrain>,<transfer>``,
  e.g. ``defocus|df-10>df15|none|s0|n128|lr1e-3,1e-4``;
* baseline: ``baseline|<major>><minor>|none|s<n>|major<N_major>|lr<lr>``.

Every row of the three two-stage tables has its own after-pretraining losses (all
distinct; the noise table's pretraining histories too): the original pretrained a
fresh model for each transfer run. So no two runs share a pretrained model and
``pretrain_id`` is ``<run_id>|pretrain``, one per run.

Domain names
------------
noise ``dose<D>``; structure ``<Formula>_<size>`` with the structure-type prefix
(``w_``, ``fcc_``, ``dc_``, ``spinel_``, ``bcc_``) stripped; defocus ``df<nm>`` from the
original's Å (-100 Å -> ``df-10``). Every name is checked against our vocabulary
(:data:`hrtem_tl.series.SERIES_DOMAINS`).

Losses
------
``evaluations.loss`` is the original's validation loss, a cross-entropy taken after a
softmax, with its floor ln(1 + 1/e) = 0.31326 (:data:`LOSS_FLOOR`) removed; the column
``loss_definition`` says so (:data:`LOSS_DEFINITION`). It is not the same quantity as
our cross-entropy of logits: compare ranks and directions, not values. What the tables
hold, checked on import (:data:`FLOOR_IN_SOURCE`; an import whose data contradict it
fails):

* ``tl_noise_models``: raw, floor included (smallest history value 0.3193): subtracted;
* ``mini_size_df``: raw, floor included (smallest 0.3170): subtracted;
* ``mini_df``: floor already removed (smallest 0.0101): taken as is;
* ``mini_baseline_df``: floor already removed (smallest 0.0104): taken as is.

Overlap metrics (dice, iou, precision, recall, accuracy) were not released: NaN.
``split = "val"``: the original's validation sets. Stages: ``pretrain`` rows hold the
after-pretraining losses on every domain of the series, ``transfer`` rows the
after-transfer losses on every domain.

* noise: the values at the epoch each stage kept, as the study states its protocol:
  the epoch (1-based, first of ties) with the lowest validation loss on the stage's own
  domain (pretraining dose, then target dose); it is stored as ``best_epoch_*``. (The
  original's own noise figure read transfer values at the best *pretraining* epoch;
  that is not repeated here.)
* structure and defocus: the tables' ``best_pretrain_*`` / ``best_transfer_*``
  columns as released (the tables do not say the epoch). ``mini_df``'s
  ``best_target_pretrain_performance`` is not used: it equals the pretraining-domain
  loss for 128, 256 and 512 transfer images but the target-domain loss for 64.

Histories
---------
Only the noise table has per-epoch histories: ``train_loss`` (its ``train`` list) and
``val_loss`` (``validation_<dose>`` of the stage's own domain), both with the floor
removed; ``val_dice`` NaN; ``lr`` = the stage's learning rate x ``schedule_rate`` **
(epoch - 1) (decay once per epoch, as ours). The other series get empty histories.

The baseline series
-------------------
A single training stage from random initialisation on a 512-image mixture of two
defocus domains: ``N_major`` images of ``major`` and 512 - ``N_major`` of ``minor``.
Stored as ``pretrain_domain = major``, ``target_domain = minor``, ``freezing = "none"``,
``kind = "baseline"`` (so :func:`hrtem_tl.results.transfers` leaves these runs out; they
are not transfer-learned), ``lr_pretrain = lr``, ``lr_transfer = NaN``,
``pretrain_images = 512``, ``transfer_images = 0``, ``transfer_epochs = 0``,
``transfer_steps = 0``, with extra columns ``major_images`` (= ``N_major``) and
``minor_images``. Its evaluations are ``stage = "pretrain"`` rows (the one stage) on the
major and the minor domain; there are no ``transfer`` rows. ``N_major`` takes 128, 256
and 384, and within the pretraining range each unordered pair appears once, so
"major" is just the first-named domain, not always the larger share.

Values the original does not report
-----------------------------------
Filled from the study (``STUDY.md``) where it states them: ``pretrain_images = 512``;
``transfer_images`` = 128 (noise, structure) or ``N_tl_training_points`` (defocus);
``pretrain_epochs = transfer_epochs = 10`` (the noise table's ``N_epochs``);
``batch_size = 16`` (the noise table's ``batch_size``; the study's mini-batch for the
others); learning rates from the tables,
1e-4 then 1e-5 for the structure series (not in its table); ``params_total =
14,322,082``; ``params_trainable`` = ``params_total`` without freezing. Unknown whole
numbers are -1: ``val_images``, ``test_images``, ``pretrain_steps``,
``transfer_steps``, ``crop``, ``best_epoch_*`` (except noise), ``params_trainable``
with freezing, and the baseline's ``pretrain_epochs`` and ``best_epoch_pretrain``.
Unknown floats are NaN: ``wall_pretrain_s``, ``wall_transfer_s``, ``finished_at``.
``transfer_batchnorm = "unknown"``.

Notes on the data
-----------------
The structure table is incomplete: 2,457 of the 2,754 runs of its 18 x 17 x 3 x 3 grid.
No run pretrains on ``Fe3O4_large`` (17 pairs x 9 missing) and none transfers to
``Co3O4_large`` (16 pairs x 9 missing), although both are evaluated on every run. Its
index labels run from 1 to 2,753 with 297 gaps, as if the rows were cut out of the full
grid. ``source_index`` keeps those labels.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd

from . import results
from .metrics import METRICS
from .series import SERIES_DOMAINS

SOURCE_REPOSITORY = "msa-em/hrtem-transfer-learning"
SOURCE_COMMIT = "8c2136d65f352013a626d1616400fd7d74ccf673"
#: Source file of each series.
FILES = {
    "noise": "tl_noise_models.pkl",
    "structure": "mini_size_df.pkl",
    "defocus": "mini_df.pkl",
    "baseline": "mini_baseline_df.pkl",
}

PROFILE = "original"
ORIGINAL_PROTOCOL = 0  #: protocol value of imported rows: the original's own protocol
DEVICE = "NVIDIA A100 (NERSC)"
PRECISION = "amp"
PACKAGE_VERSION = "original"
LOSS_FLOOR = math.log1p(math.exp(-1.0))  # ln(1 + 1/e) = 0.31326...
LOSS_DEFINITION = "softmax cross-entropy minus ln(1+1/e)"
#: Whether each source table's losses still include LOSS_FLOOR (checked on import).
FLOOR_IN_SOURCE = {"noise": True, "structure": True, "defocus": False, "baseline": False}
FREEZING = ("none", "encoder", "decoder")
PARAMS_TOTAL = 14_322_082
PRETRAIN_IMAGES = 512
TRANSFER_IMAGES = 128  # noise and structure series
EPOCHS = 10
BATCH_SIZE = 16
LR_NOISE_STRUCTURE = (1e-4, 1e-5)
UNKNOWN_INT = -1
STRUCTURE_PREFIXES = ("w", "fcc", "dc", "spinel", "bcc")
RUN_EXTRAS = {"source_file": "object", "source_index": "int64"}
BASELINE_EXTRAS = {"major_images": "int64", "minor_images": "int64"}
EVAL_EXTRAS = {"loss_definition": "object"}


# --- conversion ---------------------------------------------------------------------


def _vocabulary(series: str) -> list[str]:
    return [d.name for d in SERIES_DOMAINS["defocus" if series == "baseline" else series]()]


def _checked(names: pd.Series, series: str) -> pd.Series:
    known = set(_vocabulary(series))
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"{series}: domain names outside our vocabulary: {', '.join(map(str, unknown))}")
    return names


def dose_domain(dose) -> str:
    return f"dose{int(dose)}"


def defocus_domain(angstrom) -> str:
    """-100 (Å) -> ``'df-10'`` (nm)."""
    value = int(angstrom)
    if value % 10:
        raise ValueError(f"defocus {angstrom} Å is not a whole number of nm")
    return f"df{value // 10}"


def structure_domain(name: str) -> str:
    """``'w_CdSe_small'`` -> ``'CdSe_small'``: the structure-type prefix stripped."""
    prefix, _, rest = str(name).partition("_")
    if prefix not in STRUCTURE_PREFIXES or not rest:
        raise ValueError(f"structure name {name!r} lacks a known type prefix ({', '.join(STRUCTURE_PREFIXES)})")
    return rest


def lr_text(lr: float) -> str:
    """``0.001`` -> ``'1e-3'``; ``0.0005`` -> ``'5e-4'``."""
    mantissa, exponent = f"{float(lr):e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def _check_floor(series: str, values: np.ndarray) -> None:
    low = float(np.nanmin(values))
    if FLOOR_IN_SOURCE[series] and low < LOSS_FLOOR - 1e-9:
        raise ValueError(f"{series}: a loss {low:.4f} lies below the floor {LOSS_FLOOR:.4f} the table should include")
    if not FLOOR_IN_SOURCE[series] and low >= LOSS_FLOOR:
        raise ValueError(f"{series}: every loss is at least {LOSS_FLOOR:.4f}; the floor seems not removed")


def _losses(series: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values - LOSS_FLOOR if FLOOR_IN_SOURCE[series] else values


def _config_hash(sha: str) -> str:
    return hashlib.sha256(f"original|{sha}".encode()).hexdigest()[:16]


def _runs_frame(series: str, core: pd.DataFrame, file: str, sha: str) -> pd.DataFrame:
    """Runs rows from ``core``: one row per source row, with the configuration columns set.

    ``core`` holds pretrain_domain, target_domain, freezing, lr_pretrain, lr_transfer,
    transfer_images, source_index and whatever else the series sets, in table order.
    """
    core = core.reset_index(drop=True)
    config = ["pretrain_domain", "target_domain", "freezing", "transfer_images", "lr_pretrain", "lr_transfer",
              *(["major_images"] if "major_images" in core else [])]
    replicate = core.groupby(config, dropna=False, sort=False).cumcount()
    pair = core["pretrain_domain"] + ">" + core["target_domain"]
    run_id = series + "|" + pair + "|" + core["freezing"] + "|s" + replicate.astype(str)
    if series == "defocus":
        run_id = (run_id + "|n" + core["transfer_images"].astype(str) + "|lr" + core["lr_pretrain"].map(lr_text)
                  + "," + core["lr_transfer"].map(lr_text))
    elif series == "baseline":
        run_id = run_id + "|major" + core["major_images"].astype(str) + "|lr" + core["lr_pretrain"].map(lr_text)
    if run_id.duplicated().any():
        raise ValueError(f"{series}: run ids are not unique: {run_id[run_id.duplicated()].iloc[0]}")
    frame = pd.DataFrame({
        "run_id": run_id, "pretrain_id": run_id + "|pretrain", "series": series, "profile": PROFILE,
        "kind": "baseline" if series == "baseline" else "transfer", "protocol": ORIGINAL_PROTOCOL,
        "seed": replicate, "transfer_batchnorm": "unknown",
        "pretrain_images": PRETRAIN_IMAGES, "val_images": UNKNOWN_INT, "test_images": UNKNOWN_INT,
        "pretrain_epochs": EPOCHS, "transfer_epochs": EPOCHS,
        "pretrain_steps": UNKNOWN_INT, "transfer_steps": UNKNOWN_INT, "batch_size": BATCH_SIZE, "crop": UNKNOWN_INT,
        "best_epoch_pretrain": UNKNOWN_INT, "best_epoch_transfer": UNKNOWN_INT,
        "params_total": PARAMS_TOTAL,
        "params_trainable": np.where(core["freezing"] == "none", PARAMS_TOTAL, UNKNOWN_INT),
        "wall_pretrain_s": np.nan, "wall_transfer_s": np.nan, "device": DEVICE, "precision": PRECISION,
        "package_version": PACKAGE_VERSION, "git_commit": SOURCE_COMMIT, "config_hash": _config_hash(sha),
        "finished_at": np.nan, "source_file": file,
    })
    for column in core.columns:
        frame[column] = core[column].to_numpy()
    extras = {**RUN_EXTRAS, **(BASELINE_EXTRAS if series == "baseline" else {})}
    frame = results.validate(frame, "runs")
    return frame[[*results.SCHEMA["runs"], *extras]].astype(extras)


def _order(series: str, runs: pd.DataFrame) -> np.ndarray:
    """Positions of ``runs`` in the output order (see the module docstring)."""
    rank = {d: i for i, d in enumerate(_vocabulary(series))}
    keys = pd.DataFrame({
        "pre": runs["pretrain_domain"].map(rank), "tgt": runs["target_domain"].map(rank),
        "frz": runs["freezing"].map({f: i for i, f in enumerate(FREEZING)}),
        "n": runs["major_images"] if "major_images" in runs else runs["transfer_images"],
        "lrp": -runs["lr_pretrain"], "lrt": -runs["lr_transfer"].fillna(0.0), "rep": runs["seed"],
    })
    if keys.isna().any().any():
        raise ValueError(f"{series}: a run has an unknown domain or freezing mode")
    return np.lexsort([keys[c].to_numpy() for c in reversed(keys.columns)])


def _evaluations(run_ids: np.ndarray, blocks: list[tuple[str, list[str], np.ndarray]]) -> pd.DataFrame:
    """Evaluations rows: ``blocks`` of (stage, domains, losses[run, domain]), run-major."""
    parts = []
    for order, (stage, domains, losses) in enumerate(blocks):
        n, k = losses.shape
        parts.append(pd.DataFrame({
            "run_id": np.repeat(run_ids, k), "stage": stage, "eval_domain": np.tile(np.asarray(domains, object), n),
            "loss": losses.reshape(-1), "_run": np.repeat(np.arange(n), k), "_stage": order,
            "_domain": np.tile(np.arange(k), n),
        }))
    frame = pd.concat(parts, ignore_index=True).sort_values(["_run", "_stage", "_domain"], kind="stable")
    return _finish_evaluations(frame.drop(columns=["_run", "_stage", "_domain"]).reset_index(drop=True))


def _finish_evaluations(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the constant columns (overlap metrics NaN: not released), validate, fix the column order."""
    frame = frame.assign(profile=PROFILE, split="val", loss_definition=LOSS_DEFINITION,
                         **{m: np.nan for m in METRICS if m != "loss"})
    frame = results.validate(frame, "evaluations")
    return frame[[*results.SCHEMA["evaluations"], *EVAL_EXTRAS]].astype(EVAL_EXTRAS)


def _schedule(lr0: np.ndarray, rate: np.ndarray, epochs: int) -> np.ndarray:
    """Learning rate per run (rows) and epoch: ``lr0 * rate ** (epoch - 1)``, built by
    repeated multiplication so that every CPU gets the same bits (numpy's vectorised
    ``**`` rounds differently with AVX2 and AVX-512, and the import must be byte-stable)."""
    factors = np.ones((len(lr0), epochs))
    factors[:, 1:] = rate[:, None]
    return lr0[:, None] * np.cumprod(factors, axis=1)


def _empty_histories() -> pd.DataFrame:
    return results.validate(pd.DataFrame({c: [] for c in results.SCHEMA["histories"]}), "histories")


def convert_noise(frame: pd.DataFrame, sha: str) -> dict[str, pd.DataFrame]:
    series, file = "noise", FILES["noise"]
    doses = sorted({int(k.removeprefix("validation_")) for h in frame["pretrain_history"] for k in h
                    if k.startswith("validation_")})
    domains = [dose_domain(d) for d in doses]
    n = len(frame)

    def curves(column: str, key: str) -> np.ndarray:
        return np.array([[float(v) for v in h[key]] for h in frame[column]], dtype=np.float64)

    stages = {}
    for stage, column, own in (("pretrain", "pretrain_history", "pretrain_dose"),
                               ("transfer", "transfer_history", "transfer_dose")):
        val = np.stack([curves(column, f"validation_{d}") for d in doses], axis=1)  # run, domain, epoch
        train = curves(column, "train")
        _check_floor(series, val)
        _check_floor(series, train)
        own_index = np.array([doses.index(int(d)) for d in frame[own]])
        own_val = val[np.arange(n), own_index]  # run, epoch
        if np.isnan(own_val).all(axis=1).any():
            raise ValueError(f"{series}: a {stage} history has no finite validation loss")
        best = np.nanargmin(own_val, axis=1)  # first epoch of the minimum
        stages[stage] = {"val": val, "train": train, "own": own_val, "best": best,
                         "at_best": val[np.arange(n), :, best]}
    core = pd.DataFrame({
        "pretrain_domain": frame["pretrain_dose"].map(dose_domain),
        "target_domain": frame["transfer_dose"].map(dose_domain),
        "freezing": frame["freezing_mode"].astype(str), "lr_pretrain": frame["pretrain_lr"].astype(float),
        "lr_transfer": frame["transfer_lr"].astype(float), "transfer_images": TRANSFER_IMAGES,
        "source_index": frame.index.to_numpy(),
        "pretrain_epochs": frame["N_epochs"].astype(int), "transfer_epochs": frame["N_epochs"].astype(int),
        "batch_size": frame["batch_size"].astype(int),
        "best_epoch_pretrain": stages["pretrain"]["best"] + 1, "best_epoch_transfer": stages["transfer"]["best"] + 1,
    })
    _checked(core["pretrain_domain"], series), _checked(core["target_domain"], series)
    runs = _runs_frame(series, core, file, sha)
    order = _order(series, runs)
    runs = runs.iloc[order].reset_index(drop=True)
    ids = runs["run_id"].to_numpy()
    evaluations = _evaluations(ids, [(s, domains, _losses(series, stages[s]["at_best"][order]))
                                     for s in ("pretrain", "transfer")])
    history_parts = []
    for stage_order, stage in enumerate(("pretrain", "transfer")):
        st = stages[stage]
        epochs = st["train"].shape[1]
        lr0 = frame["pretrain_lr" if stage == "pretrain" else "transfer_lr"].to_numpy(float)[order]
        rate = frame["schedule_rate"].to_numpy(float)[order]
        history_parts.append(pd.DataFrame({
            "run_id": np.repeat(ids, epochs), "profile": PROFILE, "stage": stage,
            "epoch": np.tile(np.arange(1, epochs + 1), n),
            "train_loss": _losses(series, st["train"][order]).reshape(-1),
            "val_loss": _losses(series, st["own"][order]).reshape(-1), "val_dice": np.nan,
            "lr": _schedule(lr0, rate, epochs).reshape(-1),
            "_run": np.repeat(np.arange(n), epochs), "_stage": stage_order,
        }))
    histories = (pd.concat(history_parts, ignore_index=True).sort_values(["_run", "_stage", "epoch"], kind="stable")
                 .drop(columns=["_run", "_stage"]).reset_index(drop=True))
    histories = results.validate(histories, "histories")[list(results.SCHEMA["histories"])]
    return {"runs": runs, "evaluations": evaluations, "histories": histories}


def _wide(series: str, frame: pd.DataFrame, runs: pd.DataFrame, order: np.ndarray,
          stages: list[tuple[str, dict[str, str]]]) -> dict[str, pd.DataFrame]:
    """Tables of a series whose losses sit in one column per (stage, domain)."""
    blocks = []
    for stage, columns in stages:
        domains = [d for d in _vocabulary(series) if d in columns]
        values = frame[[columns[d] for d in domains]].to_numpy(dtype=np.float64)
        _check_floor(series, values)
        blocks.append((stage, domains, _losses(series, values[order])))
    runs = runs.iloc[order].reset_index(drop=True)
    return {"runs": runs, "evaluations": _evaluations(runs["run_id"].to_numpy(), blocks),
            "histories": _empty_histories()}


def _stage_columns(frame: pd.DataFrame, series: str, to_domain, pretrain: str, transfer: str) -> list:
    """[(stage, {domain: source column})] for the columns named ``<prefix><domain>``."""
    stages = []
    for stage, prefix in (("pretrain", pretrain), ("transfer", transfer)):
        columns = {to_domain(c.removeprefix(prefix)): c for c in frame.columns if c.startswith(prefix)}
        _checked(pd.Series(list(columns)), series)
        stages.append((stage, columns))
    return stages


def convert_structure(frame: pd.DataFrame, sha: str) -> dict[str, pd.DataFrame]:
    series = "structure"
    stages = _stage_columns(frame, series, structure_domain, "best_pretrain_performance_validation_",
                            "best_transfer_performance_validation_")
    core = pd.DataFrame({
        "pretrain_domain": frame["pretrain_structure"].map(structure_domain),
        "target_domain": frame["transfer_structure"].map(structure_domain),
        "freezing": frame["freezing_mode"].astype(str),
        "lr_pretrain": LR_NOISE_STRUCTURE[0], "lr_transfer": LR_NOISE_STRUCTURE[1], "transfer_images": TRANSFER_IMAGES,
        "source_index": frame.index.to_numpy(),
    })
    for column, size in (("pretrain_domain", "Pretrain Size"), ("target_domain", "Transfer Size")):
        _checked(core[column], series)
        if not (core[column].str.rpartition("_")[2] == frame[size].astype(str).str.lower().to_numpy()).all():
            raise ValueError(f"{series}: column {size!r} disagrees with the structure names")
    runs = _runs_frame(series, core, FILES[series], sha)
    return _wide(series, frame, runs, _order(series, runs), stages)


def convert_defocus(frame: pd.DataFrame, sha: str) -> dict[str, pd.DataFrame]:
    series = "defocus"
    stages = _stage_columns(frame, series, defocus_domain, "best_pretrain_val_", "best_transfer_performance_")
    core = pd.DataFrame({
        "pretrain_domain": frame["pretrain_defocus"].map(defocus_domain),
        "target_domain": frame["transfer_defocus"].map(defocus_domain),
        "freezing": frame["freeze_option"].astype(str), "lr_pretrain": frame["pretrain_lr"].astype(float),
        "lr_transfer": frame["transfer_lr"].astype(float), "transfer_images": frame["N_tl_training_points"].astype(int),
        "source_index": frame.index.to_numpy(),
    })
    _checked(core["pretrain_domain"], series), _checked(core["target_domain"], series)
    runs = _runs_frame(series, core, FILES[series], sha)
    return _wide(series, frame, runs, _order(series, runs), stages)


def convert_baseline(frame: pd.DataFrame, sha: str) -> dict[str, pd.DataFrame]:
    series = "baseline"
    major = frame["N_major"].astype(int)
    if ((major <= 0) | (major >= PRETRAIN_IMAGES)).any():
        raise ValueError(f"{series}: N_major outside 1..{PRETRAIN_IMAGES - 1}")
    core = pd.DataFrame({
        "pretrain_domain": frame["major"].map(defocus_domain), "target_domain": frame["minor"].map(defocus_domain),
        "freezing": "none", "lr_pretrain": frame["lr"].astype(float), "lr_transfer": np.nan, "transfer_images": 0,
        "source_index": frame.index.to_numpy(), "pretrain_epochs": UNKNOWN_INT, "transfer_epochs": 0,
        "transfer_steps": 0, "major_images": major, "minor_images": PRETRAIN_IMAGES - major,
    })
    _checked(core["pretrain_domain"], series), _checked(core["target_domain"], series)
    runs = _runs_frame(series, core, FILES[series], sha)
    order = _order(series, runs)
    values = frame[["baseline_major_perf", "baseline_minor_perf"]].to_numpy(dtype=np.float64)
    _check_floor(series, values)
    losses = _losses(series, values[order])
    runs = runs.iloc[order].reset_index(drop=True)
    # one stage, two domains per run (major, then minor)
    evaluations = _finish_evaluations(pd.DataFrame({
        "run_id": np.repeat(runs["run_id"].to_numpy(), 2), "stage": "pretrain",
        "eval_domain": np.column_stack([runs["pretrain_domain"], runs["target_domain"]]).reshape(-1),
        "loss": losses.reshape(-1),
    }))
    return {"runs": runs, "evaluations": evaluations, "histories": _empty_histories()}


CONVERTERS = {"noise": convert_noise, "structure": convert_structure, "defocus": convert_defocus,
              "baseline": convert_baseline}


def convert(series: str, frame: pd.DataFrame, sha: str) -> dict[str, pd.DataFrame]:
    """The runs, evaluations and histories tables of ``series`` from its source ``frame``."""
    tables = CONVERTERS[series](frame, sha)
    for table, rows in tables.items():
        if rows.duplicated(results.KEYS[table]).any():
            raise ValueError(f"{series}: duplicate keys in {table}")
    return tables
