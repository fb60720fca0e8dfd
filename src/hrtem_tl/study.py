"""Study sweeps: expand a series' grid, run it locally or on Dask, store every result.

A sweep simulates what is missing, then works through the grid (:func:`plan`) one
pretrained model at a time: it trains (or finds) the model, then runs the transfers
that start from it. With several workers the next models train while earlier
transfers run. Each finished run is appended to the parquet store at once by the
coordinating process, so a sweep killed at any moment and started again resumes where
it stopped and stores every run once. One sweep at a time writes a series' results
folder (its lock); a run whose training diverges is stored in ``failures.parquet`` and
the sweep goes on.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .config import Profile
from .datasets import DEFAULT_ROOT, simulate_series
from .experiment import (DEFAULT_CHECKPOINTS, RunSpec, pretrain_id, pretrained, run_baseline, run_config_hash,
                         run_transfer)
from .results import (DEFAULT_RESULTS, FAILURES, append_records, check_store, failed_runs, finished_runs,
                      table_path)
from .metrics import METRICS
from .series import FREEZING, Series
from .train import Precision, TrainingDiverged, bf16_supported
from .writers import WriterLock, check_writable, remove_dead_temps

EXECUTORS = ("local", "dask")


def plan(series: Series, freezing: tuple[str, ...] | None = None) -> list[RunSpec]:
    """Every run of the grid (``freezing`` defaults to the series' modes): seed by seed;
    first the series' early pairs (:meth:`Series.early_pairs`), then the rest; each part
    pretrained model by model, and for each model by freezing mode and transfer-set size.

    Finishing all runs from one pretrained model before the next leaves complete matrix
    rows when a sweep stops part-way, and a resume, even on a machine without the
    checkpoint cache, retrains only the models that still have runs left.
    """
    freezing = series.freezing_modes if freezing is None else freezing
    pairs = series.transfer_pairs()
    early = set(series.early_pairs())
    sources = list(dict.fromkeys(a for a, _ in pairs))
    parts = [[p for p in pairs if p in early], [p for p in pairs if p not in early]]
    grid = [
        RunSpec(series.name, a, b, f, seed, n)
        for seed in series.seeds
        for part in parts
        for source in sources
        for f in freezing
        for n in series.transfer_sizes
        for a, b in part
        if a == source
    ]
    if not series.has_controls:
        return grid
    # each pretrained model's control run goes first among the runs that start from it
    out, seen = [], set()
    for spec in grid:
        if spec.pretrain_id not in seen:
            seen.add(spec.pretrain_id)
            out.append(RunSpec(series.name, spec.pretrain_domain, spec.pretrain_domain, "none", spec.seed))
        out.append(spec)
    return out


PRECISIONS = ("auto", "fp32", "bf16")


def sweep_precision(series: Series, results_root: Path = DEFAULT_RESULTS, choice: str = "auto") -> Precision:
    """The precision a sweep of ``series`` into ``results_root`` trains at.

    ``fp32`` or ``bf16`` as asked; ``auto``: the precision of the series' stored runs
    when they match the current settings at it (a sweep begun on another machine goes
    on at its precision, so one series never mixes two), else the best this machine
    runs natively (:meth:`Precision.choose`).
    """
    from .results import read_table

    if choice not in PRECISIONS:
        raise ValueError(f"unknown precision {choice!r}; choose from {', '.join(PRECISIONS)}")
    profile = series.profile
    if choice != "auto":
        return Precision.named(choice)
    if table_path(results_root, series.name, "runs").exists():
        runs = read_table(results_root, series.name, "runs")
        runs = runs[runs["profile"] == profile.name]
        for name in sorted(set(runs["precision"])):
            candidate = Precision.named(name)
            if set(runs["config_hash"]) == {run_config_hash(profile, series.name, candidate)}:
                return candidate
    return Precision.choose(profile.training.mixed_precision)


def check_runs_fast(precision: Precision) -> None:
    """Refuse bf16 on a CPU that only emulates it (many times slower than fp32)."""
    if precision.device == "cpu" and precision.name == "bf16" and not bf16_supported():
        raise ValueError("this sweep trains in bf16 (asked for, or the precision of its stored runs), but this CPU "
                         "has no native bf16 (AMX or AVX512-BF16) and would emulate it many times slower: run it on "
                         "such a machine, or start it afresh in fp32 with --precision fp32 and another --results folder")


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def pretrain_job(profile: Profile, series: str, domain: str, seed: int, data_root: str, checkpoints: str,
                 precision: str, threads: int | None = None) -> dict[str, dict]:
    """Train (or find) one pretrained model at ``precision`` (a name); returns its
    evaluations (domain -> metric -> value), as its runs store them for the pretrain stage."""
    _set_threads(threads)
    _, meta = pretrained(Series(series, profile), domain, seed, data_root=Path(data_root),
                         checkpoints=Path(checkpoints), precision=Precision.named(precision))
    return meta["evaluations"]


def stored_pretraining(results_root: Path, series: str, profile: str, run_ids: set[str]) -> pd.DataFrame:
    """The pretrain-stage evaluation rows of the stored runs ``run_ids``, with their pretrain id."""
    from .results import read_table

    if not run_ids or not table_path(results_root, series, "runs").exists():
        return pd.DataFrame(columns=["run_id", "pretrain_id", "eval_domain"])
    runs = read_table(results_root, series, "runs")
    evals = read_table(results_root, series, "evaluations")
    runs = runs[(runs["profile"] == profile) & runs["run_id"].isin(run_ids)][["run_id", "pretrain_id"]]
    pre = evals[(evals["profile"] == profile) & (evals["stage"] == "pretrain")]
    return pre.merge(runs, on="run_id")


def mixed_pretrainings(stored: pd.DataFrame) -> set[str]:
    """Pretrain ids whose stored runs hold different pretrain-stage evaluations: they
    started from two trainings of one model (a checkpoint cache lost between two parts of
    a sweep, and a retraining on other hardware that did not give the same weights)."""
    metrics = [c for c in METRICS if c in stored.columns]
    spread = stored.groupby(["pretrain_id", "eval_domain"])[metrics].nunique()
    return set(spread[(spread > 1).any(axis=1)].index.get_level_values("pretrain_id"))


def runs_from_another_training(stored: pd.DataFrame, pretrain: str, evaluations: dict[str, dict]) -> set[str]:
    """Stored runs of ``pretrain`` whose pretrain-stage rows differ from ``evaluations``
    (the model the sweep holds now): they started from another training of it."""
    mine = stored[stored["pretrain_id"] == pretrain]
    other = set()
    for row in mine.itertuples(index=False):
        now = evaluations.get(row.eval_domain)
        if now is None or not all(np.isclose(getattr(row, m), v, rtol=1e-9, atol=0, equal_nan=True)
                                  for m, v in now.items() if hasattr(row, m)):
            other.add(row.run_id)
    return other


def transfer_job(profile: Profile, spec: RunSpec, data_root: str, checkpoints: str, precision: str,
                 threads: int | None = None) -> dict:
    """Run one transfer at ``precision`` (a name); returns its rows keyed by table name."""
    _set_threads(threads)
    rec = run_transfer(profile, spec, data_root=Path(data_root), checkpoints=Path(checkpoints),
                       precision=Precision.named(precision))
    return {"runs": [rec.run], "evaluations": rec.evaluations, "histories": rec.histories}


def baseline_job(profile: Profile, spec: RunSpec, data_root: str, checkpoints: str, precision: str,
                 threads: int | None = None) -> dict:
    """Train and evaluate one mixture-baseline model at ``precision`` (a name); returns its rows keyed by table name."""
    _set_threads(threads)
    rec = run_baseline(profile, spec, data_root=Path(data_root), precision=Precision.named(precision))
    return {"runs": [rec.run], "evaluations": rec.evaluations, "histories": rec.histories}


class _Deferred:
    """In-process stand-in for a future: the call runs when ``result()`` is asked."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def result(self):
        return self.fn(*self.args)


class _Pool:
    """A tiny common face over a local process pool, in-process execution and Dask."""

    def __init__(self, executor: str, workers: int, scheduler: str | None):
        if executor not in EXECUTORS:
            raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
        self.kind, self.workers, self.client, self.cluster, self.pool = executor, workers, None, None, None
        cores = os.cpu_count() or 1
        self.threads = max(1, cores // workers) if (executor == "dask" or workers > 1) else None
        if executor == "dask":
            from distributed import Client, LocalCluster

            if scheduler:
                self.client = Client(scheduler)
            else:
                import dask

                # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536; glibc then maps and
                # unmaps every large buffer, which makes torch training on CPU about twice
                # as slow (benchmarks/bench_study.py). Keep glibc's defaults.
                with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
                    self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                host="127.0.0.1", dashboard_address=None)
                self.client = Client(self.cluster)
        elif workers > 1:
            self.pool = ProcessPoolExecutor(max_workers=workers)

    def submit(self, fn, *args):
        args = (*args, self.threads)
        if self.client is not None:
            return self.client.submit(fn, *args, pure=False)
        if self.pool is not None:
            return self.pool.submit(fn, *args)
        return _Deferred(fn, args)

    def next_done(self, running) -> object:
        """One finished future of ``running`` (in-process: the oldest, which runs when asked)."""
        if self.client is not None:
            from distributed import wait as dask_wait

            done = dask_wait(list(running), return_when="FIRST_COMPLETED").done
        elif self.pool is not None:
            done = wait(list(running), return_when=FIRST_COMPLETED).done
        else:
            return next(iter(running))
        return next(f for f in running if f in done)  # the oldest of those done

    def close(self):
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        if self.pool is not None:
            self.pool.shutdown()


SCHEDULER_TIMEOUT_S = 10.0  # how long the pre-flight waits for a Dask scheduler [s]


def check_scheduler(address: str) -> None:
    """Connect to the Dask scheduler at ``address`` and close again; ``ConnectionError`` if it
    does not answer within :data:`SCHEDULER_TIMEOUT_S`."""
    from distributed import Client

    try:
        Client(address, timeout=SCHEDULER_TIMEOUT_S).close()
    except (OSError, TimeoutError, ValueError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise ConnectionError(f"cannot reach the Dask scheduler {address} ({reason}); start it or fix --scheduler") \
            from None


def _failure_rows(specs: list[RunSpec], profile: str, err: TrainingDiverged, config_hash: str) -> list[dict]:
    """Rows of ``failures.parquet`` for runs lost to ``err`` (a pretraining fails all runs of its model)."""
    now = time.time()
    return [{"run_id": s.run_id, "profile": profile, "stage": err.stage, "reason": str(err),
             "config_hash": config_hash, "finished_at": now} for s in specs]


def run_study(
    series: Series,
    *,
    executor: str = "local",
    workers: int = 1,
    scheduler: str | None = None,
    results_root: Path = DEFAULT_RESULTS,
    data_root: Path = DEFAULT_ROOT,
    checkpoints: Path = DEFAULT_CHECKPOINTS,
    freezing: tuple[str, ...] | None = None,
    limit: int | None = None,
    precision: str = "auto",
    progress: bool = True,
) -> dict:
    """Run every unfinished run of the series' grid; returns a summary.

    ``limit`` stops after that many new runs (useful to split a sweep into slices).
    Before any simulation: the arguments, the folders (writable), the series' results
    folder (locked for the whole sweep: a second sweep there refuses), every stored
    table (readable, valid, made with the current settings) and the Dask scheduler are
    checked, and temporary files of dead writers are removed. A run whose training
    diverges is stored in ``failures.parquet`` and the sweep goes on; failed runs are
    not retried until their rows are deleted. ``precision``: see :func:`sweep_precision`
    (bf16 is refused on a CPU without native bf16). Summary: ``runs`` (planned), ``new``
    (stored now), ``failed`` (failed now), ``skipped`` (stored before, finished or
    failed) and ``wall_s`` [s].
    """
    profile = series.profile
    # Check the arguments before hours of simulation, not after.
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if scheduler and executor != "dask":
        raise ValueError(f"a scheduler address ({scheduler}) needs the dask executor")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    freezing = series.freezing_modes if freezing is None else freezing
    unknown = [f for f in freezing if f not in FREEZING]
    if unknown or not freezing:
        raise ValueError(f"unknown freezing mode(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"choose from {', '.join(FREEZING)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 new run, got {limit}")
    for what, folder in (("results", results_root), ("dataset", data_root), ("checkpoint", checkpoints)):
        check_writable(folder, what)
    precision = sweep_precision(series, results_root, precision)
    check_runs_fast(precision)
    config_hash = run_config_hash(profile, series.name, precision)
    with WriterLock(Path(results_root) / series.name) as lock:
        remove_dead_temps(Path(results_root) / series.name)
        remove_dead_temps(Path(checkpoints) / profile.name / series.name)
        check_store(results_root, series.name)
        # stale stored runs stop the sweep before any simulation
        done = finished_runs(results_root, series.name, profile.name, config_hash)
        failed_before = failed_runs(results_root, series.name, profile.name, config_hash)
        if scheduler:
            check_scheduler(scheduler)
        simulate_series(series, data_root, workers=workers if executor == "local" else 1, progress=progress)
        specs = plan(series, freezing)
        pending = [s for s in specs if s.run_id not in done | failed_before]
        todo = pending[:limit]
        roots = (str(Path(data_root).resolve()), str(Path(checkpoints).resolve()), precision.name)
        start, finished, failed = time.perf_counter(), 0, 0
        # Consecutive runs of the plan that share a pretrained model form a group; a group's
        # transfers start once its model is trained (or found), and models start as workers
        # free up.
        groups: list[list[RunSpec]] = []
        for spec in todo:
            if not groups or spec.pretrain_id != groups[-1][0].pretrain_id:
                groups.append([])
            groups[-1].append(spec)
        # A model whose stored runs hold two different pretrainings is trained (or found)
        # again, so that its runs from the other training are re-run from it below.
        stored = stored_pretraining(results_root, series.name, profile.name, done)
        mixed = mixed_pretrainings(stored) - {g[0].pretrain_id for g in groups}
        first_of = {s.pretrain_id: s for s in specs if s.kind != "baseline"}
        groups += [[first_of[pid]] for pid in sorted(mixed) if pid in first_of]
        recheck = {i for i, g in enumerate(groups) if g[0].pretrain_id in mixed}  # stored, not pending
        by_id = {s.run_id: s for s in specs}
        waiting = deque(range(len(groups)))
        running: dict = {}  # future -> group index for a pretraining, RunSpec for a transfer
        pool = _Pool(executor, workers, scheduler)

        def start_pretraining() -> None:
            group = waiting.popleft()
            first = groups[group][0]
            if first.kind == "baseline":  # one stage: the run is its own model
                running[pool.submit(baseline_job, profile, first, *roots)] = first
            else:
                running[pool.submit(pretrain_job, profile, series.name, first.pretrain_domain, first.seed,
                                    *roots)] = group
            bar.set_postfix_str(f"model {first.pretrain_domain} (seed {first.seed}), {len(waiting)} groups after it")

        def store(records: dict, runs: int) -> None:
            """Append the rows of ``runs`` finished or failed runs: only this, the coordinating process, writes."""
            nonlocal finished, failed
            lock.verify()
            append_records(results_root, series.name, records)
            if FAILURES in records:
                failed += runs
            else:
                finished += runs
            bar.update(runs)
            left = len(todo) - finished - failed
            rate = (time.perf_counter() - start) / (finished + failed)
            bar.set_postfix_str(f"{min(workers, len(running))} running, {left} left, ~{left * rate / 60:.0f} min")

        try:
            with tqdm(total=len(specs), initial=len(specs) - len(pending), unit="run",
                      desc=f"study {series.name} ({profile.name}, {executor})", disable=not progress) as bar:
                for _ in range(min(workers, len(waiting))):
                    start_pretraining()
                while running:
                    future = pool.next_done(running)
                    task = running.pop(future)
                    try:
                        result = future.result()
                    except TrainingDiverged as err:  # recorded, and the sweep goes on
                        lost = groups[task] if isinstance(task, int) else [task]
                        store({FAILURES: _failure_rows(lost, profile.name, err, config_hash)}, len(lost))
                        result = None
                    if isinstance(task, int):  # a pretrained model is ready (unless it diverged)
                        if result is not None:  # its transfers go next, with the stored runs of another training of it
                            group = [] if task in recheck else groups[task]
                            redo = runs_from_another_training(stored, groups[task][0].pretrain_id, result)
                            redo = [by_id[r] for r in sorted(redo) if r in by_id]
                            if redo:
                                bar.update(-len(redo))  # stored, but to be done again
                                todo.extend(redo)
                                print(f"hrtem-tl: {len(redo)} stored run(s) of {groups[task][0].pretrain_id} started "
                                      "from another training of that model (its checkpoint was retrained); "
                                      "re-running them from this one", file=sys.stderr)
                            for spec in group + redo:
                                running[pool.submit(transfer_job, profile, spec, *roots)] = spec
                        if waiting:
                            start_pretraining()
                    else:
                        if result is not None:
                            store(result, 1)
                        if task.kind == "baseline" and waiting:
                            start_pretraining()
        finally:
            pool.close()
    grid_failed = {s.run_id for s in specs} & failed_runs(results_root, series.name, profile.name)
    if grid_failed:
        n = len(grid_failed)
        print(f"hrtem-tl: {n} run{'s' * (n != 1)} of this grid failed (reasons in "
              f"{table_path(results_root, series.name, FAILURES)}); they are not retried: delete their rows "
              f"(or the file) to retry them", file=sys.stderr)
    return {"series": series.name, "profile": profile.name, "precision": precision.name, "runs": len(specs),
            "new": finished, "failed": failed,
            "skipped": len(specs) - len(pending), "wall_s": time.perf_counter() - start}
