"""Faults and bad input: the results lock, atomic writes, dead writers' files, pre-flight
checks, diverged runs, one-line CLI errors, and a sweep killed at random moments."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hrtem_testutils import assert_one_line_error, run_cli, set_torch_threads
from hrtem_tl import cli
from hrtem_tl import model as M
from hrtem_tl import results as R
from hrtem_tl import study as S
from hrtem_tl import train as T
from hrtem_tl.metrics import METRICS
from hrtem_tl.study import plan, run_study
from hrtem_tl.writers import ResultsLocked, WriterLock, remove_dead_temps

set_torch_threads()
EXE = os.path.join(os.path.dirname(sys.executable), "hrtem-tl")


def dead_pid() -> int:
    """The PID of a process that has ended (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def write_lock(folder: Path, pid: int, host: str | None = None, since: float = 1.7e9) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "since": since}))
    return path


def temps(*folders: Path) -> list[Path]:
    return [p for f in folders for p in Path(f).rglob("*.tmp")]


@pytest.fixture
def dirs(tmp_path, data_copy) -> dict[str, Path]:
    """A sweep's folders: a private copy of the tiny data, empty results and checkpoints."""
    return {"data_root": data_copy, "results_root": tmp_path / "results", "checkpoints": tmp_path / "ckpt"}


def cli_roots(dirs) -> list:
    return ["--data", dirs["data_root"], "--results", dirs["results_root"], "--checkpoints", dirs["checkpoints"]]


# -- one writer per results folder ----------------------------------------------------------------

def test_a_held_lock_refuses_naming_its_holder_and_is_released(tmp_path):
    with WriterLock(tmp_path / "defocus") as lock:
        with pytest.raises(ResultsLocked, match=rf"in use by another sweep \(PID {os.getpid()} on host "
                                                rf"{socket.gethostname()} since \d{{4}}-\d\d-\d\d "):
            WriterLock(tmp_path / "defocus").acquire()
        lock.verify()
    assert not (tmp_path / "defocus" / ".lock").exists()
    with WriterLock(tmp_path / "defocus"):  # free again
        pass
    assert not temps(tmp_path)


@pytest.mark.parametrize("holder", ["other host", "unreadable"])
def test_a_lock_of_another_host_or_unreadable_is_never_taken_over(tmp_path, holder):
    path = write_lock(tmp_path, dead_pid(), host="elsewhere")
    if holder == "unreadable":
        path.write_text("{half a lo")
    before = path.read_text()
    with pytest.raises(ResultsLocked, match="on host elsewhere" if holder == "other host" else "not a lock"):
        WriterLock(tmp_path).acquire()
    assert path.read_text() == before and not temps(tmp_path)


def test_a_stale_lock_of_a_dead_pid_is_taken_over(tmp_path, capsys):
    pid = dead_pid()
    write_lock(tmp_path, pid)
    with WriterLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert f"took over the stale lock of PID {pid}" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_sweep_that_lost_its_lock_stops_before_writing(tmp_path):
    with WriterLock(tmp_path) as lock:
        (tmp_path / ".lock").unlink()  # deleted by hand, then taken by another sweep
        write_lock(tmp_path, 1)
        with pytest.raises(ResultsLocked, match="lost the lock .*now: PID 1 on host"):
            lock.verify()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == 1  # the other sweep's lock stays


def test_a_second_sweep_on_the_same_folder_refuses_at_once(tiny_series, dirs, monkeypatch, tmp_path):
    """While one run_study holds the results folder (here: while it simulates), another
    one on the same folder refuses before doing anything; the first then goes on."""
    seen = []

    class Stop(Exception):
        pass

    def simulate_and_start_another(*args, **kwargs):
        if seen:
            raise AssertionError("a second sweep got past the lock")
        seen.append(json.loads((dirs["results_root"] / "defocus" / ".lock").read_text())["pid"])
        with pytest.raises(ResultsLocked, match=f"PID {os.getpid()} on host"):
            run_study(tiny_series, **(dirs | {"data_root": tmp_path / "other-data"}), progress=False)
        raise Stop  # end the first sweep here

    monkeypatch.setattr(S, "simulate_series", simulate_and_start_another)
    with pytest.raises(Stop):
        run_study(tiny_series, **dirs, progress=False)
    assert seen == [os.getpid()]
    assert not (tmp_path / "other-data").exists()
    assert not (dirs["results_root"] / "defocus" / ".lock").exists()  # released by the first


def test_the_cli_refuses_a_held_folder_in_one_line(capsys, dirs, profiles_file, tmp_path):
    holder = subprocess.Popen(["sleep", "60"])
    try:
        write_lock(dirs["results_root"] / "defocus", holder.pid, since=time.time())
        code, _, err = run_cli(capsys, "study", "defocus", "--profiles", profiles_file, "--profile", "tiny",
                               *cli_roots(dirs | {"data_root": tmp_path / "no-data"}))
    finally:
        holder.kill()
        holder.wait()
    assert_one_line_error(code, err, f"PID {holder.pid} on host {socket.gethostname()} since ", "in use")
    assert not (tmp_path / "no-data").exists()


def test_a_stale_lock_and_dead_writers_files_are_cleared_when_a_sweep_starts(tiny_series, dirs):
    """A sweep takes over the lock of a dead PID and removes the temporary files of dead
    writers in its results, checkpoint and dataset folders; live writers' files stay."""
    profile = tiny_series.profile.name
    folders = [dirs["results_root"] / "defocus", dirs["checkpoints"] / profile / "defocus",
               dirs["data_root"] / profile / "defocus"]
    dead, live = dead_pid(), os.getpid()
    write_lock(folders[0], dead)
    planted = {f / f".x.parquet.{pid}.tmp": pid for f in folders for pid in (dead, live)}
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    summary = run_study(tiny_series, **dirs, limit=1, progress=False)
    assert summary["new"] == 1
    assert sorted(temps(*dirs.values())) == sorted(p for p, pid in planted.items() if pid == live)
    assert not (folders[0] / ".lock").exists()


def test_remove_dead_temps_keeps_other_files(tmp_path):
    dead = dead_pid()
    names = [f".runs.parquet.{dead}.tmp", f".a.npz.{os.getpid()}.tmp", ".notes.tmp", f"runs.{dead}.tmp", "runs.parquet"]
    for name in names:
        (tmp_path / "sub" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "sub" / name).write_text("x")
    assert remove_dead_temps(tmp_path) == [tmp_path / "sub" / names[0]]
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == sorted(names[1:])


# -- atomic, ordered writes -----------------------------------------------------------------------

def records(run_id: str, loss: float) -> dict[str, list[dict]]:
    run = {c: (0.0 if t == "float64" else 0 if t == "int64" else "x") for c, t in R.SCHEMA["runs"].items()}
    return {
        "runs": [run | {"run_id": run_id, "profile": "cpu"}],
        "evaluations": [{"run_id": run_id, "profile": "cpu", "stage": s, "eval_domain": d, "split": "test"}
                        | {m: loss for m in METRICS} for s in ("pretrain", "transfer") for d in ("A", "B")],
        "histories": [{"run_id": run_id, "profile": "cpu", "stage": "transfer", "epoch": 1, "train_loss": loss,
                       "val_loss": loss, "val_dice": 0.5, "lr": 1e-4}],
    }


def stored_bytes(root: Path) -> dict[str, bytes]:
    return {t: R.table_path(root, "noise", t).read_bytes() for t in R.TABLES}


def test_a_write_that_dies_half_way_keeps_the_old_table(tmp_path, monkeypatch):
    R.append_records(tmp_path, "noise", records("r1", 0.5))
    before = stored_bytes(tmp_path)

    def half_write(self, path, **kwargs):
        Path(path).write_bytes(b"PAR1 half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_write)
    with pytest.raises(OSError, match="No space left"):
        R.append_records(tmp_path, "noise", records("r2", 0.6))
    monkeypatch.undo()
    assert stored_bytes(tmp_path) == before
    assert R.finished_runs(tmp_path, "noise", "cpu") == {"r1"}
    assert not temps(tmp_path)


def test_a_failed_rename_keeps_the_old_table_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    R.append_records(tmp_path, "noise", records("r1", 0.5))
    before = stored_bytes(tmp_path)

    def no_rename(src, dst):
        assert Path(src).exists()  # written in full to the temporary file
        raise PermissionError(f"cannot replace {dst}")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(PermissionError, match="cannot replace"):
        R.append_records(tmp_path, "noise", records("r2", 0.6))
    monkeypatch.undo()
    assert stored_bytes(tmp_path) == before
    assert not temps(tmp_path)


@pytest.mark.parametrize("crash_after", [1, 2])
def test_a_run_row_is_never_stored_without_its_evaluations(tmp_path, monkeypatch, crash_after):
    """Crash after the first (or second) table of a run is written: the run must not count as finished."""
    R.append_records(tmp_path, "noise", records("r1", 0.5))
    real, written = R._write_atomic, []

    def crashing(frame, path):
        if len(written) == crash_after:
            raise OSError("killed")
        real(frame, path)
        written.append(path.name)

    monkeypatch.setattr(R, "_write_atomic", crashing)
    with pytest.raises(OSError, match="killed"):
        R.append_records(tmp_path, "noise", records("r2", 0.6))
    monkeypatch.undo()
    runs = R.read_table(tmp_path, "noise", "runs")
    evals, hist = R.read_table(tmp_path, "noise", "evaluations"), R.read_table(tmp_path, "noise", "histories")
    for run_id in runs["run_id"]:
        assert (evals["run_id"] == run_id).sum() == 4 and (hist["run_id"] == run_id).sum() == 1, run_id
    assert R.finished_runs(tmp_path, "noise", "cpu") == {"r1"}


@pytest.mark.parametrize("fault", ["weights", "rename"])
def test_a_failed_checkpoint_write_leaves_no_file(tmp_path, monkeypatch, fault):
    def half_weights(state, name):
        Path(name).write_bytes(b"half")
        raise OSError("No space left on device")

    def no_rename(src, dst):
        raise PermissionError(f"cannot replace {dst}")

    if fault == "weights":
        monkeypatch.setattr(M, "save_file", half_weights)
    else:
        monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError):
        M.save_checkpoint(M.build_unet(), tmp_path / "m.safetensors", {})
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


# -- pre-flight -----------------------------------------------------------------------------------

@pytest.mark.parametrize("folder", ["data", "results", "checkpoints"])
def test_a_folder_that_cannot_be_written_stops_the_sweep_first(capsys, dirs, profiles_file, tmp_path, folder):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    roots = {"data": tmp_path / "no-data", "results": dirs["results_root"], "checkpoints": dirs["checkpoints"]}
    roots[folder] = blocker / folder
    code, _, err = run_cli(capsys, "study", "defocus", "--profiles", profiles_file, "--profile", "tiny",
                           *[a for k, v in roots.items() for a in (f"--{k}", v)])
    assert_one_line_error(code, err, str(blocker / folder), "is a file")
    assert not (tmp_path / "no-data").exists() and not dirs["results_root"].exists()


@pytest.mark.parametrize("table", [*R.TABLES, R.FAILURES])
def test_an_unreadable_stored_table_stops_the_sweep_first(capsys, dirs, profiles_file, tmp_path, table):
    path = R.table_path(dirs["results_root"], "defocus", table)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 torn")
    code, _, err = run_cli(capsys, "study", "defocus", "--profiles", profiles_file, "--profile", "tiny",
                           *cli_roots(dirs | {"data_root": tmp_path / "no-data"}))
    assert_one_line_error(code, err, str(path), "cannot be read as parquet")
    assert not (tmp_path / "no-data").exists() and path.read_bytes() == b"PAR1 torn"


def test_an_unreachable_scheduler_stops_the_sweep_first(capsys, dirs, profiles_file, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(S, "SCHEDULER_TIMEOUT_S", 1.0)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    code, _, err = run_cli(capsys, "study", "defocus", "--profiles", profiles_file, "--profile", "tiny",
                           "--executor", "dask", "--scheduler", address,
                           *cli_roots(dirs | {"data_root": tmp_path / "no-data"}))
    assert_one_line_error(code, err, f"cannot reach the Dask scheduler {address}", "fix --scheduler")
    assert not (tmp_path / "no-data").exists()
    code, _, err = run_cli(capsys, "study", "defocus", "--scheduler", address, *cli_roots(dirs))
    assert_one_line_error(code, err, "needs the dask executor")


# -- bad command lines ----------------------------------------------------------------------------

@pytest.mark.parametrize("argv,names", [
    (["study", "bogus", "--limit", "-1"], ["--limit must be at least 1, got -1"]),  # before the series
    (["study", "defocus", "--limit", "0"], ["--limit must be at least 1, got 0"]),
    (["examples", "defocus", "--per-domain", "-1"], ["--per-domain must be at least 1, got -1"]),
    (["study", "noise", "--workers", "0"], ["--workers must be at least 1, got 0"]),
])
def test_bad_counts_are_refused_before_anything_runs(capsys, tmp_path, argv, names):
    out = ["--out", tmp_path / "ex"] if argv[0] == "examples" else ["--results", tmp_path / "r"]
    code, _, err = run_cli(capsys, *argv, "--data", tmp_path / "data", *out)
    assert_one_line_error(code, err, *names)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv,names", [
    (["train", "defocus", "--pretrain", "df0"], ["required: --target", "hrtem-tl train --help"]),
    (["study", "defocus", "--limit", "few"], ["--limit: invalid int value: 'few'"]),
    (["bogus"], ["invalid choice: 'bogus'"]),
])
def test_argparse_errors_are_one_line_too(capsys, argv, names):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert_one_line_error(exit_.value.code, capsys.readouterr().err, *names)


def test_train_prints_only_the_domains_evaluated_after_transfer(capsys, profiles_file, tmp_path, monkeypatch):
    """With ``structure_transfer_eval = "related"`` the transfer stage skips domains: no KeyError, '-' where missing."""
    from hrtem_tl import experiment as E

    def fake_run(profile, spec, **kwargs):
        row = {"run_id": spec.run_id, "profile": "tiny", "split": "test"} | {m: 0.25 for m in METRICS}
        evals = [row | {"stage": "pretrain", "eval_domain": d} for d in ("Cu_small", "Fe_small")]
        evals += [row | {"stage": "transfer", "eval_domain": d, "loss": 0.5} for d in ("Fe_small", "Fe_large")]
        return E.RunRecords(run={"precision": "fp32", "device": "cpu"}, evaluations=evals, histories=[])

    monkeypatch.setattr(E, "run_transfer", fake_run)
    code, out, err = run_cli(capsys, "train", "structure", "--profiles", profiles_file, "--profile", "tiny",
                             "--pretrain", "Cu_small", "--target", "Fe_small", "--data", tmp_path)
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()[2:]]
    assert rows == [["Fe_small", "0.2500", "0.5000", "0.2500", "0.2500"], ["Fe_large", "-", "0.5000", "-", "0.2500"]]


def test_an_error_under_a_progress_bar_starts_on_a_line_of_its_own(capsys, tiny_series, profiles_file, tmp_path,
                                                                    monkeypatch):
    from hrtem_tl import datasets as D

    calls = []

    def fail_on_the_second(task):
        calls.append(task)
        if len(calls) == 2:
            raise OSError("No space left on device")
        return D.simulate_scene(*task)

    monkeypatch.setattr(D, "_simulate_task", fail_on_the_second)
    code, _, err = run_cli(capsys, "simulate", "defocus", "--profiles", profiles_file, "--profile", "tiny",
                           "--data", tmp_path)
    assert code == 2
    assert "simulate defocus scenes" in err  # a bar was drawn ...
    assert err.endswith("\nhrtem-tl: error: No space left on device\n")  # ... and ended before the error


# -- diverged training ----------------------------------------------------------------------------

def test_training_diverged_keeps_its_stage_across_processes():
    err = pickle.loads(pickle.dumps(T.TrainingDiverged("training diverged: ...", stage="pretrain")))
    assert (str(err), err.stage) == ("training diverged: ...", "pretrain")


BAD_TRANSFER = "defocus|df-5>df0|decoder|s0"


def test_diverged_runs_are_recorded_and_the_sweep_goes_on(capsys, dirs, profiles_file, monkeypatch, tiny_series):
    """The df0 model's pretraining and one transfer from df-5 get a NaN validation loss:
    the five runs land in failures.parquet with their reason, the other three finish, the
    sweep exits 0; a resume does not retry them until a row is deleted."""
    real_evaluate, real_pretrained, real_transfer = T.evaluate, S.pretrained, S.run_transfer
    nan = {"on": False}

    def evaluate(*args, **kwargs):
        return real_evaluate(*args, **kwargs) | ({"loss": float("nan")} if nan["on"] else {})

    def diverging(real, bad):
        def call(*args, **kwargs):
            nan["on"] = bad(*args)
            try:
                return real(*args, **kwargs)
            finally:
                nan["on"] = False
        return call

    monkeypatch.setattr(T, "evaluate", evaluate)
    monkeypatch.setattr(S, "pretrained", diverging(real_pretrained, lambda series, domain, seed: domain == "df0"))
    monkeypatch.setattr(S, "run_transfer", diverging(real_transfer, lambda profile, spec: spec.run_id == BAD_TRANSFER))
    argv = ["study", "defocus", "--profiles", profiles_file, "--profile", "tiny", *cli_roots(dirs)]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    planned = {s.run_id for s in plan(tiny_series)}
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["runs"], summary["new"], summary["failed"], summary["skipped"]) == (8, 3, 5, 0)
    failures = R.read_table(dirs["results_root"], "defocus", R.FAILURES).set_index("run_id")
    df0 = {s.run_id for s in plan(tiny_series) if s.pretrain_domain == "df0"}
    assert set(failures.index) == df0 | {BAD_TRANSFER}
    assert set(failures.loc[list(df0), "stage"]) == {"pretrain"} and failures.loc[BAD_TRANSFER, "stage"] == "transfer"
    assert failures["reason"].str.contains("training diverged: no epoch of 1 had a finite validation loss").all()
    assert failures.loc[BAD_TRANSFER, "reason"].startswith(f"transfer {BAD_TRANSFER}: ")
    assert set(failures["config_hash"]) == set(R.read_table(dirs["results_root"], "defocus", "runs")["config_hash"])
    assert R.finished_runs(dirs["results_root"], "defocus", "tiny") == planned - set(failures.index)
    assert "5 runs of this grid failed" in err and "delete their rows" in err
    monkeypatch.undo()
    # the projection does not count them as left to do (scripts/run-cpu-studies.sh promotes on 0 left)
    from hrtem_tl.projection import projection

    assert projection(tiny_series, dirs["results_root"])["pending"] == 0
    # a resume retries none of them ...
    code, out, err = run_cli(capsys, *argv)
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["skipped"] == 8
    # ... until a row is deleted: then that run is retried (and, training normally now, finishes)
    path = R.table_path(dirs["results_root"], "defocus", R.FAILURES)
    failures.reset_index().query("run_id != @BAD_TRANSFER").to_parquet(path, index=False)
    code, out, err = run_cli(capsys, *argv)
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["new"] == 1
    assert BAD_TRANSFER in R.finished_runs(dirs["results_root"], "defocus", "tiny")


# -- killed at random moments ---------------------------------------------------------------------

def stored_rows(results: Path) -> dict[str, str]:
    """Per stored run: its runs row, evaluation rows and history rows as sorted JSON records."""
    if not R.table_path(results, "defocus", "runs").exists():
        return {}
    tables = R.read_results(results, "defocus")
    for table, frame in tables.items():
        assert not frame.duplicated(R.KEYS[table]).any(), table
    out = {}
    for run in tables["runs"].to_dict("records"):
        rows = {t: tables[t][tables[t]["run_id"] == run["run_id"]].sort_values(R.KEYS[t]).to_dict("records")
                for t in ("evaluations", "histories")}
        assert len(rows["evaluations"]) == 4 and len(rows["histories"]) == 2, run["run_id"]  # never a partial run
        out[run["run_id"]] = json.dumps({"run": run, **rows}, sort_keys=True, default=repr)
    return out


def test_a_sweep_killed_at_random_moments_keeps_every_finished_run(dirs, tiny_series, profiles_file):
    """SIGKILL ``hrtem-tl study`` three times, each a seeded random 0-1.5 s after it stored
    its first new run (a tiny run takes about 0.75 s here, so the kill lands in training,
    evaluation or a write, and never after the grid is done), then let it finish: every
    run stored before a kill is byte-identical at the end, no key is duplicated, no run is
    half-written, no lock or temporary file is left."""
    results = dirs["results_root"]
    runs_file = R.table_path(results, "defocus", "runs")
    cmd = [EXE, "study", "defocus", "--profiles", str(profiles_file), "--profile", "tiny", *map(str, cli_roots(dirs))]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    kept: dict[str, str] = {}
    kills = 0
    for delay in np.random.default_rng(14).uniform(0.0, 1.5, size=3):
        stamp = runs_file.stat().st_mtime_ns if runs_file.exists() else None
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:  # until this process stored a run
                if runs_file.exists() and runs_file.stat().st_mtime_ns != stamp:
                    break
                time.sleep(0.01)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                kills += 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.read()[-2000:]
        now = stored_rows(results)
        assert {k: now[k] for k in kept} == kept  # earlier runs untouched by the later process
        kept = now
    assert kills >= 1 and 0 < len(kept)
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    final = stored_rows(results)
    assert set(final) == {s.run_id for s in plan(tiny_series)}
    assert {k: final[k] for k in kept} == kept
    assert json.loads(rerun.stdout.strip().splitlines()[-1])["skipped"] == len(kept)
    assert not (results / "defocus" / ".lock").exists() and not temps(*dirs.values())
