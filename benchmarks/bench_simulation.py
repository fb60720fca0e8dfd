"""Simulation throughput at a profile's settings (default: cpu).

Measures, in one run:

* scenes/s of ``datasets.simulate_scene`` (multislice of the scene with its film,
  multislice of the particles alone, zero-defocus calibration), serially in this
  process, the way ``hrtem-tl simulate --workers 1`` runs;
* the same scenes with ``--workers`` processes (default 2), the way
  ``hrtem-tl simulate --workers 2`` runs them (fresh processes, one thread each),
  and the speed-up over serial (target >= 1.7x on 2 idle cores);
* imaging throughput: images/s from a stored scene (defocus with partial coherence,
  Poisson dose, label), as ``image_domain`` does per domain;
* peak memory: resident set of this process and of the largest worker
  (``resource.getrusage``) and the traced peak of one imaging pass (``tracemalloc``).

Nothing is asserted: it prints numbers and ratios measured in the same run, plus the
load average, since other work on the machine changes them.

    python benchmarks/bench_simulation.py [--quick] [--profile cpu] [--scenes 6] [--workers 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import tempfile
import time
import tracemalloc
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from hrtem_tl.config import load_profile
from hrtem_tl.datasets import _seed, _single_thread, simulate_scene
from hrtem_tl.lattices import get_lattice
from hrtem_tl.series import Series
from hrtem_tl.simulate import apply_dose, image_intensity, label_mask

warnings.filterwarnings("ignore", message="ensemble_mean=False")


def _task(args) -> float:
    profile, scene_set, index, path = args
    warnings.filterwarnings("ignore", message="ensemble_mean=False")
    t = time.perf_counter()
    simulate_scene(profile, scene_set, "train", index, path)
    return time.perf_counter() - t


def _worker_rss(_=None) -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _warm_worker(profile) -> None:
    _single_thread()
    warnings.filterwarnings("ignore", message="ensemble_mean=False")
    warm_up(profile)


def warm_up(profile) -> float:
    """Compile abTEM's kernels on a small cell so the timings below exclude it."""
    small = dataclasses.replace(profile, simulation=dataclasses.replace(profile.simulation, field_of_view=48.0,
                                                                        max_particles=1))
    scene_set = Series("noise", profile).scene_sets[0]
    scene_set = dataclasses.replace(scene_set, name="warm-up", radius_range=(8.0, 10.0))
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        simulate_scene(small, scene_set, "train", 0, Path(tmp) / "w.npz")
    return time.perf_counter() - t


def image_scene(path: Path, profile, domains, repeat: int) -> tuple[float, int]:
    """Image one stored scene in every domain ``repeat`` times; returns (seconds, images)."""
    sim = profile.simulation
    with np.load(path) as scene:
        waves, particle_wave, zero = scene["waves"], scene["particle_wave"], float(scene["zero_defocus"])
    sigma = get_lattice("CdSe").label_sigma
    n = 0
    t = time.perf_counter()
    for r in range(repeat):
        for d in domains:
            rng = np.random.default_rng(_seed("image", d.name, "bench", r))
            intensity = image_intensity(waves, zero + 10 * d.defocus + rng.normal(0, sim.defocus_sigma), sim)
            apply_dose(intensity, d.dose, sim.pixel_size, rng)
            label_mask(particle_wave, sim.pixel_size, sigma)
            n += 1
    return time.perf_counter() - t, n


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Simulation throughput (see the module docstring).")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--scenes", type=int, default=6, help="scenes per measurement (default 6; --quick: 2)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="2 scenes, 1 imaging pass")
    args = ap.parse_args(argv)
    scenes = 2 if args.quick else args.scenes
    profile = load_profile(args.profile)
    series = Series("noise", profile)
    scene_set = series.scene_sets[0]
    sim = profile.simulation
    print(f"profile {profile.name}: {sim.field_of_view:g} Å field, {sim.sampling:g} Å multislice, "
          f"{sim.image_size} px images at {sim.pixel_size:g} Å, {sim.phonon_configs} phonon config(s); "
          f"scene set {scene_set.name}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"warm-up (abTEM kernel compilation) {warm_up(profile):.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        serial = []
        start = time.perf_counter()
        for i in range(scenes):
            serial.append(_task((profile, scene_set, i, tmp / "serial" / f"{i}.npz")))
        t_serial = time.perf_counter() - start
        rss_serial = _worker_rss()

        # cold: fresh processes as `hrtem-tl simulate --workers N` starts them (import, compile)
        start = time.perf_counter()
        tasks = [(profile, scene_set, i, tmp / "cold" / f"{i}.npz") for i in range(scenes)]
        with ProcessPoolExecutor(max_workers=args.workers, initializer=_single_thread) as pool:
            cold = list(pool.map(_task, tasks))
        t_cold = time.perf_counter() - start
        # warm: the same scenes once every worker has started and compiled
        with ProcessPoolExecutor(max_workers=args.workers, initializer=_warm_worker, initargs=(profile,)) as pool:
            list(pool.map(time.sleep, [1.0] * args.workers))
            start = time.perf_counter()
            tasks = [(profile, scene_set, i, tmp / "warm" / f"{i}.npz") for i in range(scenes)]
            parallel = list(pool.map(_task, tasks))
            t_parallel = time.perf_counter() - start
            rss_workers = max(pool.map(_worker_rss, range(args.workers)))
        load = os.getloadavg()[0]

        repeat = 1 if args.quick else 3
        tracemalloc.start()
        t_img, n_img = image_scene(tmp / "serial" / "0.npz", profile, series.domains, repeat)
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        t_img_plain, n_img_plain = image_scene(tmp / "serial" / "0.npz", profile, series.domains, repeat)

    speedup = t_serial / t_parallel
    print()
    print(f"{'measurement':44s} {'value':>10s}  unit")
    print(f"{'scenes simulated (each run)':44s} {scenes:10d}")
    print(f"{'serial: seconds per scene (min/median/max)':44s} "
          f"{min(serial):4.1f}/{np.median(serial):4.1f}/{max(serial):4.1f}  s")
    print(f"{'serial throughput':44s} {scenes / t_serial:10.4f}  scenes/s")
    print(f"{f'{args.workers} workers, cold: wall incl. start, compile':44s} {t_cold:10.1f}  s")
    print(f"{f'{args.workers} workers, cold: speed-up over serial':44s} {t_serial / t_cold:10.2f}  x")
    print(f"{f'{args.workers} workers, warm: seconds per scene':44s} {np.median(parallel):10.1f}  s (median)")
    print(f"{f'{args.workers} workers, warm throughput':44s} {scenes / t_parallel:10.4f}  scenes/s")
    print(f"{f'{args.workers} workers, warm: speed-up (target >= 1.7)':44s} {speedup:10.2f}  x")
    print(f"{'parallel efficiency (warm speed-up / workers)':44s} {speedup / args.workers:10.2f}")
    print(f"{'imaging throughput (stored scene)':44s} {n_img_plain / t_img_plain:10.2f}  images/s")
    per_scene_images = len(series.domains)
    end_to_end = per_scene_images / (t_serial / scenes + per_scene_images * t_img_plain / n_img_plain)
    print(f"{f'end to end, 1 process ({per_scene_images} domains per scene)':44s} {end_to_end:10.3f}  images/s")
    print(f"{'peak RSS, serial process':44s} {rss_serial:10.0f}  MiB")
    print(f"{'peak RSS, largest worker':44s} {rss_workers:10.0f}  MiB")
    print(f"{'traced peak of imaging (tracemalloc)':44s} {traced_peak / 2**20:10.1f}  MiB")
    print(f"{'load average at the end':44s} {load:10.1f}  (of {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
