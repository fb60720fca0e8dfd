"""Time results.matrices on synthetic tables of the paper's size (structure series).

18 domains, 18 x 17 ordered pairs x 3 freezing modes x 3 seeds = 2,754 runs, each with
its evaluations on 18 domains after each of 2 stages (99,144 rows). The explorers call
matrices() on every change of a control, so it must stay well under 50 ms.

    python benchmarks/bench_aggregation.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import pandas as pd

from hrtem_tl.lattices import LATTICES
from hrtem_tl.metrics import METRICS
from hrtem_tl.results import REDUCTIONS, SCHEMA, matrices, validate
from hrtem_tl.series import FREEZING, SIZE_RADII

TARGET_MS = 50.0


def synthetic_tables(seeds: int = 3, rng: np.random.Generator | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = rng or np.random.default_rng(0)
    domains = [f"{f}_{s}" for f in LATTICES for s in SIZE_RADII]
    runs = []
    for seed in range(seeds):
        for a in domains:
            for b in domains:
                if a == b:
                    continue
                for f in FREEZING:
                    runs.append({"run_id": f"structure|{a}>{b}|{f}|s{seed}", "pretrain_id": f"structure|{a}|s{seed}",
                                 "pretrain_domain": a, "target_domain": b, "freezing": f, "seed": seed})
    runs = pd.DataFrame(runs)
    for column, kind in SCHEMA["runs"].items():
        if column not in runs:
            runs[column] = 0.0 if kind == "float64" else 0 if kind == "int64" else "x"
    runs["series"], runs["profile"], runs["kind"] = "structure", "paper", "transfer"
    n = len(runs)
    stages = np.repeat(np.array(["pretrain", "transfer"]), len(domains))
    ev = pd.DataFrame({
        "run_id": np.repeat(runs["run_id"].to_numpy(), 2 * len(domains)),
        "profile": "paper",
        "stage": np.tile(stages, n),
        "eval_domain": np.tile(np.array(domains * 2), n),
        "split": "test",
    })
    for m in METRICS:
        ev[m] = rng.uniform(0, 1, len(ev))
    return validate(runs, "runs"), validate(ev, "evaluations")


def time_call(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args(argv)
    t = time.perf_counter()
    runs, ev = synthetic_tables()
    build = time.perf_counter() - t
    print(f"tables: {len(runs):,} runs, {len(ev):,} evaluation rows (built in {build:.1f} s); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    # cold: new frames each call (the join is redone); warm: the explorers' case, one
    # pair of frames and many choices of freezing, metric and reduction
    cold = time_call(lambda: matrices(runs.copy(deep=False), ev.copy(deep=False), freezing=FREEZING), args.repeat)
    cases = [("all freezing, loss, median", dict(freezing=FREEZING)),
             ("encoder only, dice, median", dict(freezing=("encoder",), metric="dice")),
             ("none+decoder, iou, median", dict(freezing=("none", "decoder"), metric="iou")),
             *[(f"all freezing, loss, {r}", dict(freezing=FREEZING, reduction=r)) for r in REDUCTIONS[1:]]]
    print(f"{'case':34s} {'median ms':>10s} {'min ms':>8s} {'max ms':>8s} {'/ 50 ms':>8s}")
    print(f"{'cold (new frames), all, median':34s} {statistics.median(cold):10.1f} {min(cold):8.1f} "
          f"{max(cold):8.1f} {statistics.median(cold) / TARGET_MS:8.2f}")
    worst = 0.0
    for name, kwargs in cases:
        times = time_call(lambda: matrices(runs, ev, **kwargs), args.repeat)
        med = statistics.median(times)
        worst = max(worst, med)
        print(f"{'warm, ' + name:34s} {med:10.1f} {min(times):8.1f} {max(times):8.1f} {med / TARGET_MS:8.2f}")
    print(f"warm worst median {worst:.1f} ms = {worst / TARGET_MS:.2f} x the {TARGET_MS:.0f} ms budget; "
          f"cold median {statistics.median(cold):.1f} ms = {statistics.median(cold) / TARGET_MS:.2f} x "
          f"({'OK' if worst < TARGET_MS else 'TOO SLOW'} for the explorers)")


if __name__ == "__main__":
    main()
