"""Sweep throughput: the local executor against Dask (LocalCluster on loopback).

Runs one small grid four times from scratch (fresh results and checkpoints, shared
simulated data): locally in this process (``--workers 1``), with a local process pool
of ``--workers`` processes, on a Dask LocalCluster of as many workers that
``run_study`` starts itself, and on such a cluster already running with the package
imported and one training step run in each worker (``--scheduler``, as on Slurm). Prints models per hour and the Dask overhead
over the process pool, both measured here (target < 10 %).

The grid is the defocus series of a small profile made from ``smoke``: a 64 Å field,
crops of 64 px, a few steps per stage, so a model takes seconds and the executors'
own costs (process start, imports, scheduling, result transfer) show.

    python benchmarks/bench_study.py [--quick] [--workers 2] [--threads N]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
import warnings
from pathlib import Path

from hrtem_tl.config import load_profile
from hrtem_tl.datasets import simulate_series
from hrtem_tl.results import read_table
from hrtem_tl.series import Series
from hrtem_tl.study import plan, run_study

warnings.filterwarnings("ignore", message="ensemble_mean=False")


def bench_profile(quick: bool):
    smoke = load_profile("smoke")
    return dataclasses.replace(
        smoke,
        name="bench",
        simulation=dataclasses.replace(smoke.simulation, field_of_view=64.0, sampling=0.5, pixel_size=0.5),
        data=dataclasses.replace(smoke.data, train_images=4, val_images=2),
        training=dataclasses.replace(smoke.training, crop=64, batch_size=4, pretrain_epochs=2, pretrain_steps=3,
                                     transfer_epochs=2, transfer_steps=3, transfer_images=4, seeds=(0,),
                                     mixed_precision=False),
        study=dataclasses.replace(smoke.study, defocus_domains=("df-5", "df0") if quick else ("df-5", "df0", "df5")),
    )


def sweep(series, executor: str, workers: int, data: Path, tmp: Path, freezing, scheduler=None, tag="") -> dict:
    out = tmp / f"{executor}-{workers}{tag}"
    start = time.perf_counter()
    summary = run_study(series, executor=executor, workers=workers, scheduler=scheduler, results_root=out / "results",
                        data_root=data, checkpoints=out / "ckpt", freezing=freezing, progress=False)
    summary["total_s"] = time.perf_counter() - start
    runs = read_table(out / "results", series.name, "runs")
    # seconds spent training inside the workers (pretraining counted once per model)
    summary["compute_s"] = (runs.drop_duplicates("pretrain_id")["wall_pretrain_s"].sum()
                            + runs["wall_transfer_s"].sum())
    return summary


def _warm(crop: int, size: int, threads: int) -> int:
    """Import the package and run one training step and one evaluation at the grid's sizes.

    A fresh process pays for imports and for oneDNN's first-use kernel generation per
    shape; a forked pool inherits both from this process, a spawned Dask worker does not.
    """
    import numpy as np
    import torch

    import hrtem_tl.study  # noqa: F401
    from hrtem_tl.model import build_unet
    from hrtem_tl.train import Precision, evaluate, train_stage

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, size, size)).astype(np.float32)
    masks = (images > 0).astype(np.uint8)
    model = build_unet()
    fp32 = Precision("cpu", None)
    train_stage(model, (images, masks), (images[:1], masks[:1]), epochs=1, steps=1, lr=1e-4, batch_size=4,
                crop=crop, seed=0, freeze="encoder", precision=fp32)
    train_stage(model, (images, masks), (images[:1], masks[:1]), epochs=1, steps=1, lr=1e-4, batch_size=4,
                crop=crop, seed=0, precision=fp32)
    evaluate(model, images, masks, fp32)
    return os.getpid()


def warm_dask_sweep(series, workers: int, data: Path, tmp: Path, freezing) -> tuple[dict, float]:
    """A sweep on an already running cluster whose workers have imported the package and trained once."""
    from distributed import Client, LocalCluster

    import dask

    start = time.perf_counter()
    # as run_study starts its own clusters: without Dask's MALLOC_TRIM_THRESHOLD_
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)
    client = Client(cluster)
    profile = series.profile
    client.run(_warm, profile.training.crop, profile.simulation.image_size, max(1, (os.cpu_count() or 1) // workers))
    ready = time.perf_counter() - start
    try:
        summary = sweep(series, "dask", workers, data, tmp, freezing, scheduler=cluster.scheduler_address,
                        tag="-warm")
    finally:
        client.close()
        cluster.close()
    return summary, ready


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Sweep throughput (see the module docstring).")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of the 1-process run (default: torch's choice; pool and Dask workers "
                         "get cores // workers)")
    ap.add_argument("--quick", action="store_true", help="2 domains, 2 freezing modes: 4 runs, 2 pretrained models")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    profile = bench_profile(args.quick)
    series = Series("defocus", profile)
    freezing = ("none", "encoder") if args.quick else ("none", "encoder", "decoder")
    runs = len(plan(series, freezing))
    pretrained = len(series.pretrain_domains)
    print(f"grid: defocus series, {len(series.domains)} domains, {runs} transfer runs, {pretrained} pretrained models; "
          f"crop {profile.training.crop}, batch {profile.training.batch_size}, "
          f"{profile.training.pretrain_epochs}x{profile.training.pretrain_steps} + "
          f"{profile.training.transfer_epochs}x{profile.training.transfer_steps} steps; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        simulate_series(series, tmp / "data", progress=False)
        print(f"simulated the grid's data in {time.perf_counter() - t:.1f} s (not timed below)")
        results = {
            "local, 1 process": sweep(series, "local", 1, tmp / "data", tmp, freezing),
            f"local, {args.workers} processes": sweep(series, "local", args.workers, tmp / "data", tmp, freezing),
            f"dask, {args.workers} workers": sweep(series, "dask", args.workers, tmp / "data", tmp, freezing),
        }
        warm, ready = warm_dask_sweep(series, args.workers, tmp / "data", tmp, freezing)
        results[f"dask, {args.workers}, running"] = warm
    print()
    print(f"{'executor':24s} {'runs':>5s} {'wall s':>8s} {'models/hour':>12s} {'vs 1 process':>13s} "
          f"{'training s':>11s}")
    base = results["local, 1 process"]["total_s"]
    for name, s in results.items():
        assert s["new"] == runs, (name, s)
        print(f"{name:24s} {s['new']:5d} {s['total_s']:8.1f} {3600 * runs / s['total_s']:12.0f} "
              f"{base / s['total_s']:12.2f}x {s['compute_s']:11.1f}")
    print("(training s: time inside train_stage summed over models and workers; the rest of the wall time is "
          "loading, evaluation, checkpoints and the executor)")
    pool = results[f"local, {args.workers} processes"]["total_s"]
    dask = results[f"dask, {args.workers} workers"]["total_s"]
    running = results[f"dask, {args.workers}, running"]["total_s"]
    print(f"starting a {args.workers}-worker LocalCluster and warming its workers (imports, one training step): "
          f"{ready:.1f} s, a fixed cost per sweep; the local pool forks this warm process instead")
    print(f"Dask overhead over the local process pool: {100 * (dask - pool) / pool:+.1f} % including cluster start, "
          f"{100 * (running - pool) / pool:+.1f} % on a running cluster (target < 10 %); "
          f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
