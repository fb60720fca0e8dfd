"""Importing the original study's released result tables (hrtem_tl.original).

The safety tests run everywhere; the others need the released pickles in
``<workspace>/shared/original`` and are skipped without them. The import is run twice,
once per module (into temporary folders), and the tests share its output.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import pickletools
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from hrtem_tl import original as O
from hrtem_tl import original_tables as T
from hrtem_tl.safe_pickle import SafeUnpickler, safe_frame
from hrtem_tl import results as R

SOURCE = Path(__file__).resolve().parents[2] / "shared" / "original"
ROWS = {"noise": 180, "structure": 2457, "defocus": 7200, "baseline": 720}
EVALUATIONS = {"noise": 180 * 2 * 5, "structure": 2457 * 2 * 18, "defocus": 7200 * 2 * 11, "baseline": 720 * 2}
HISTORIES = {"noise": 180 * 2 * 10, "structure": 0, "defocus": 0, "baseline": 0}


def _short_unicode(text: str) -> bytes:
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data  # SHORT_BINUNICODE


def malicious_pickles(marker: Path) -> dict[str, bytes]:
    """Pickles whose loading would call os.system to create ``marker``, written by hand."""
    command = f"touch {marker}"
    return {
        # protocol 0: GLOBAL 'os system', MARK, STRING, TUPLE, REDUCE, STOP
        "protocol 0": b"cos\nsystem\n(S'" + command.encode() + b"'\ntR.",
        # protocol 4: PROTO, 'os', 'system', STACK_GLOBAL, command, TUPLE1, REDUCE, STOP
        "protocol 4": b"\x80\x04" + _short_unicode("os") + _short_unicode("system") + b"\x93"
                      + _short_unicode(command) + b"\x85R.",
    }


@pytest.mark.parametrize("variant", ["protocol 0", "protocol 4"])
def test_malicious_pickle_is_refused_without_running(tmp_path, variant):
    marker = tmp_path / "ran"
    data = malicious_pickles(marker)[variant]
    ops = [op.name for op, _, _ in pickletools.genops(data)]  # well-formed, and it does call a global
    assert "REDUCE" in ops and ({"GLOBAL", "STACK_GLOBAL"} & set(ops))
    with pytest.raises(pickle.UnpicklingError) as err:
        safe_frame(data)
    assert "os.system" in str(err.value) and "\n" not in str(err.value)
    # also through the file loader, with the file's own (correct) hash
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(pickle.UnpicklingError, match="os.system"):
        O.load_source(path, hashlib.sha256(data).hexdigest())
    assert not marker.exists()


def test_unpickler_allows_only_the_listed_classes():
    allowed = SafeUnpickler.__new__(SafeUnpickler)
    assert allowed.find_class("numpy", "ndarray") is np.ndarray
    assert allowed.find_class("numpy.core.multiarray", "_reconstruct") is not None  # alias of numpy._core
    for module, name in [("builtins", "eval"), ("pandas", "read_pickle"), ("numpy", "load"), ("posix", "system")]:
        with pytest.raises(pickle.UnpicklingError, match=f"{module}.{name}"):
            allowed.find_class(module, name)


@pytest.fixture(scope="module")
def source() -> Path:
    if not SOURCE.is_dir():
        pytest.skip(f"the original's released tables are not in {SOURCE}")
    return SOURCE


@pytest.fixture(scope="module")
def frames(source) -> dict[str, pd.DataFrame]:
    return {series: O.load_source(source / file) for series, file in O.FILES.items()}


@pytest.fixture(scope="module")
def imported(source, tmp_path_factory) -> tuple[Path, Path, dict[str, int]]:
    first, second = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
    counts = O.import_original(source, first)
    O.import_original(source, second)
    return first, second, counts


def test_wrong_sha256_is_refused(source, tmp_path):
    name = "mini_baseline_df.pkl"
    bad = tmp_path / "src"
    bad.mkdir()
    for file in O.FILES.values():
        shutil.copyfile(source / file, bad / file)
    with open(bad / name, "ab") as f:
        f.write(b"\0")
    found = hashlib.sha256((bad / name).read_bytes()).hexdigest()
    with pytest.raises(ValueError) as err:
        O.load_source(bad / name)
    assert name in str(err.value) and O.SHA256[name] in str(err.value) and found in str(err.value)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=name):
        O.import_original(bad, out)
    assert not out.exists()  # every hash is checked before anything is written


def test_row_counts_match_the_source(frames, imported):
    out, _, counts = imported
    assert counts == ROWS
    for series, frame in frames.items():
        tables = R.read_results(out, series)
        runs = tables["runs"]
        assert len(frame) == ROWS[series] == len(runs)
        assert len(tables["evaluations"]) == EVALUATIONS[series]
        assert len(tables["histories"]) == HISTORIES[series]
        assert runs["run_id"].is_unique and set(runs["seed"]) == {0, 1, 2}
        assert sorted(runs["source_index"]) == sorted(frame.index)
        assert (runs["profile"] == "original").all() and (runs["protocol"] == T.ORIGINAL_PROTOCOL).all()
        assert (runs["git_commit"] == T.SOURCE_COMMIT).all()
        ev = tables["evaluations"]
        assert (ev["loss_definition"] == T.LOSS_DEFINITION).all() and (ev["split"] == "val").all()
        assert ev[["dice", "iou", "precision", "recall", "accuracy"]].isna().all().all()
        assert ev["loss"].notna().all() and (ev["loss"] > 0).all()


def _loss(evaluations: pd.DataFrame, run_id: str, stage: str, domain: str) -> float:
    hit = evaluations[(evaluations["run_id"] == run_id) & (evaluations["stage"] == stage)
                      & (evaluations["eval_domain"] == domain)]
    assert len(hit) == 1
    return float(hit["loss"].iloc[0])


def _tables(out: Path, series: str):
    tables = R.read_results(out, series)
    return tables["runs"].set_index("source_index"), tables["evaluations"]


def test_cells_match_the_source(frames, imported):
    out, floor = imported[0], T.LOSS_FLOOR

    runs, ev = _tables(out, "noise")  # raw losses; values at each stage's best epoch
    row = frames["noise"].iloc[7]
    run = runs.loc[frames["noise"].index[7]]
    own_pre = np.array(row["pretrain_history"][f"validation_{row['pretrain_dose']}"])
    own_tl = np.array(row["transfer_history"][f"validation_{row['transfer_dose']}"])
    assert run["best_epoch_pretrain"] == np.argmin(own_pre) + 1
    assert _loss(ev, run["run_id"], "pretrain", f"dose{row['pretrain_dose']}") == pytest.approx(own_pre.min() - floor)
    assert _loss(ev, run["run_id"], "transfer", f"dose{row['transfer_dose']}") == pytest.approx(own_tl.min() - floor)
    other = row["transfer_history"]["validation_30"][int(np.argmin(own_tl))]  # not its own domain, same epoch
    assert _loss(ev, run["run_id"], "transfer", "dose30") == pytest.approx(other - floor)
    hist = R.read_results(out, "noise")["histories"]
    hist = hist[(hist["run_id"] == run["run_id"]) & (hist["stage"] == "transfer")].sort_values("epoch")
    assert hist["val_loss"].to_numpy() == pytest.approx(own_tl - floor)

    runs, ev = _tables(out, "structure")  # raw losses
    label = frames["structure"].index[100]
    row, run = frames["structure"].loc[label], runs.loc[label]
    pre, tgt = row["pretrain_structure"], row["transfer_structure"]
    assert run["pretrain_domain"] == pre.split("_", 1)[1] and run["target_domain"] == tgt.split("_", 1)[1]
    assert _loss(ev, run["run_id"], "pretrain", run["pretrain_domain"]) == pytest.approx(
        row[f"best_pretrain_performance_validation_{pre}"] - floor)
    assert _loss(ev, run["run_id"], "transfer", run["target_domain"]) == pytest.approx(
        row[f"best_transfer_performance_validation_{tgt}"] - floor)

    runs, ev = _tables(out, "defocus")  # floor already removed
    row, run = frames["defocus"].iloc[2], runs.loc[frames["defocus"].index[2]]
    assert run["run_id"] == (f"defocus|df{row['pretrain_defocus'] // 10}>df{row['transfer_defocus'] // 10}|"
                             f"{row['freeze_option']}|s{run['seed']}|n{row['N_tl_training_points']}|"
                             f"lr{T.lr_text(row['pretrain_lr'])},{T.lr_text(row['transfer_lr'])}")
    own = row[f"best_pretrain_val_{row['pretrain_defocus']}"]
    assert _loss(ev, run["run_id"], "pretrain", run["pretrain_domain"]) == own
    assert _loss(ev, run["run_id"], "transfer", run["target_domain"]) == row["best_target_transfer_performance"]

    runs, ev = _tables(out, "baseline")  # floor already removed
    row, run = frames["baseline"].iloc[5], runs.loc[frames["baseline"].index[5]]
    major, minor, n_major = int(row["major"]), int(row["minor"]), int(row["N_major"])  # the row holds floats
    assert (run["pretrain_domain"], run["target_domain"]) == (f"df{major // 10}", f"df{minor // 10}")
    assert (run["major_images"], run["minor_images"]) == (n_major, 512 - n_major)
    assert _loss(ev, run["run_id"], "pretrain", f"df{major // 10}") == row["baseline_major_perf"]
    assert _loss(ev, run["run_id"], "pretrain", f"df{minor // 10}") == row["baseline_minor_perf"]


def test_matrices_read_the_imported_tables(imported):
    tables = R.read_results(imported[0], "noise")
    cells = R.matrices(tables["runs"], tables["evaluations"], freezing=T.FREEZING)
    assert (cells["pretrain"]["count"].to_numpy() == 36).all()  # one pretrained model per run
    off = ~np.eye(5, dtype=bool)
    assert (cells["transfer"]["count"].to_numpy()[off] == 9).all()


def test_imports_are_byte_identical_and_attributed(imported):
    first, second, _ = imported
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 12 and not [p for p in files if p.name.endswith(".tmp")]
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
        meta = pq.read_schema(first / rel).metadata
        assert b"10.69761/kjte5358" in meta[O.METADATA_KEY] and b"CC-BY-4.0" in meta[O.METADATA_KEY]


def test_the_cli_reproduces_the_committed_tables(tmp_path):
    """``hrtem-tl import-original`` rewrites data/results/original from the shared tables:
    the same rows, the same attribution, and the same bytes when pyarrow and pandas are the same."""
    import pyarrow.parquet as pq

    from hrtem_tl.cli import main

    committed = Path(__file__).resolve().parents[1] / "data" / "results" / "original"
    assert main(["import-original", str(SOURCE), "--out", str(tmp_path)]) == 0
    for path in sorted(committed.rglob("*.parquet")):
        new = tmp_path / path.relative_to(committed)
        old_meta, new_meta = pq.read_metadata(path), pq.read_metadata(new)
        assert old_meta.metadata[b"hrtem_tl.source"] == new_meta.metadata[b"hrtem_tl.source"]
        pd.testing.assert_frame_equal(pd.read_parquet(path), pd.read_parquet(new))
        writers = [(m.created_by, json.loads(m.metadata[b"pandas"])["pandas_version"]) for m in (old_meta, new_meta)]
        if writers[0] == writers[1]:  # the same pyarrow and pandas (each writes its version into the file)
            assert path.read_bytes() == new.read_bytes(), path
