"""Why does transfer learning between the two particle sizes of one lattice make models worse?

Under protocol 1, 56 % of the transfers between the small- and large-particle domains of
one lattice ended below the pretrained model they started from (2 % between lattices),
and the first transfer epoch's training loss jumped about fourfold. Three suspects:

* batch-norm running statistics re-estimated from the target's crops (``adapt``),
* a learning rate too high for a fine-tuning step (``lr_transfer``),
* crops smaller than a large particle (protocol 1: 5.1 nm crops, particles up to 7 nm).

This script trains, for a few lattices and seeds, the small-to-large and large-to-small
transfers (full fine-tuning) under protocol 2 and under one change at a time:

    protocol-2    160 px crops (8 nm), batch norm adapts, lr_transfer 1e-4
    bn-fixed      the same with batch-norm statistics kept from pretraining
    lr-1e-5       the same with a ten times lower transfer learning rate
    crop-96       96 px crops (4.8 nm, about protocol 1's) in both stages

and writes one row per transfer to ``data/experiments/size_transfer.parquet``: the
variant, pair, seed, Dice and loss on the target's test split before and after transfer
learning, and the jump of the training loss at the first transfer epoch. Variants that
change only the transfer stage share their pretrained models (``Profile.pretrain_hash``).
``size_transfer_pretrained.parquet`` beside it holds every pretrained model's test
Dice and loss on each domain (crop 160 against crop 96: what small crops cost before
any transfer). ``--pretrained-only`` writes only that table, from cached models.

    python experiments/size_transfer.py [--profile cpu] [--lattices ZnS Cu] [--seeds 0 1] [--workers 2]
                                        [--variants protocol-2 bn-fixed]

Rows of earlier runs stay: a new run replaces only the rows with its own variant, pair,
seed and precision, so lattices and seeds can be added one session at a time.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import pandas as pd

from hrtem_tl.config import load_profile
from hrtem_tl.datasets import simulate_series
from hrtem_tl.experiment import RunSpec, pretrained, run_transfer
from hrtem_tl.series import Series
from hrtem_tl.study import pretrain_job

OUT = Path("data/experiments/size_transfer.parquet")
VARIANTS = {  # each names its batch-norm option, whatever the base profile's default is
    "protocol-2": {"transfer_batchnorm": "adapt"},
    "bn-fixed": {"transfer_batchnorm": "fixed"},
    "lr-1e-5": {"transfer_batchnorm": "adapt", "lr_transfer": 1e-5},
    "crop-96": {"transfer_batchnorm": "adapt", "crop": 96},
}


def variant_profile(base: str, lattices: list[str], seeds: list[int], change: dict):
    cpu = load_profile(base)
    domains = tuple(f"{lat}_{size}" for lat in lattices for size in ("small", "large"))
    return replace(cpu, training=replace(cpu.training, **change),
                   study=replace(cpu.study, structure_domains=domains, structure_seeds=tuple(seeds)))


def transfer_row(name: str, profile, spec: RunSpec, roots: tuple[str, str]) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    rec = run_transfer(profile, spec, data_root=Path(roots[0]), checkpoints=Path(roots[1]))
    ev = {(e["stage"], e["eval_domain"]): e for e in rec.evaluations}
    hist = pd.DataFrame(rec.histories)
    last_pre = hist[hist["stage"] == "pretrain"].sort_values("epoch")["train_loss"].iloc[-1]
    first_tl = hist[(hist["stage"] == "transfer") & (hist["epoch"] == 1)]["train_loss"].iloc[0]
    start, end = ev[("pretrain", spec.target_domain)], ev[("transfer", spec.target_domain)]
    return {"variant": name, "pair": f"{spec.pretrain_domain}>{spec.target_domain}", "seed": spec.seed,
            "dice_start": start["dice"], "dice_end": end["dice"], "loss_start": start["loss"], "loss_end": end["loss"],
            "loss_jump": first_tl / last_pre, "best_epoch_transfer": rec.run["best_epoch_transfer"],
            "crop": rec.run["crop"], "lr_transfer": rec.run["lr_transfer"],
            "transfer_batchnorm": rec.run["transfer_batchnorm"], "precision": rec.run["precision"],
            "config_hash": rec.run["config_hash"], "git_commit": rec.run["git_commit"]}


def write_pretrained(profiles: dict, jobs: dict, args) -> None:
    """One row per pretrained model (variant crop, domain, seed) and evaluated domain."""
    crop = {}
    for name, p in profiles.items():
        crop.setdefault(p.training.crop, name)  # the first variant with that pretraining names it
    rows = []
    for profile, domain, seed in jobs.values():
        _, meta = pretrained(Series("structure", profile), domain, seed, data_root=args.data,
                             checkpoints=args.checkpoints)
        for eval_domain, m in meta["evaluations"].items():
            rows.append({"variant": crop[profile.training.crop], "crop": profile.training.crop, "domain": domain,
                         "seed": seed, "eval_domain": eval_domain, "dice": m["dice"], "loss": m["loss"],
                         "best_epoch": meta["stage"]["best_epoch"], "precision": meta["precision"]})
    keys = ["variant", "crop", "domain", "seed", "eval_domain", "precision"]
    merge_into(args.out.with_name(args.out.stem + "_pretrained.parquet"), pd.DataFrame(rows), keys)


def merge_into(path: Path, new: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Write ``new`` to ``path`` over the rows already there that share its ``keys``."""
    if path.exists():
        old = pd.read_parquet(path)
        if "precision" not in old:  # tables written before the column existed: all bf16
            old["precision"] = "bf16"
        new = pd.concat([old, new], ignore_index=True).drop_duplicates(keys, keep="last")
    new = new.sort_values(keys).reset_index(drop=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    new.to_parquet(path, index=False)
    return new


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu", help="base profile (default cpu; smoke checks the script)")
    ap.add_argument("--lattices", nargs="+", default=["ZnS", "Cu"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--data", type=Path, default=Path("cache/datasets"))
    ap.add_argument("--checkpoints", type=Path, default=Path("cache/checkpoints"))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--pretrained-only", action="store_true",
                    help="only tabulate the pretrained models (trains those not cached)")
    args = ap.parse_args(argv)
    roots = (str(args.data.resolve()), str(args.checkpoints.resolve()))
    profiles = {name: variant_profile(args.profile, args.lattices, args.seeds, VARIANTS[name])
                for name in args.variants}
    simulate_series(Series("structure", next(iter(profiles.values()))), args.data, workers=args.workers)
    start = time.perf_counter()
    rows = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        # pretrained models first (variants that change only the transfer stage share them)
        jobs = {}
        for name, profile in profiles.items():
            for domain in Series("structure", profile).domains:
                for seed in args.seeds:
                    key = profile.pretrain_hash("structure", domain.name, str(seed))
                    jobs.setdefault(key, (profile, domain.name, seed))
        for f in [pool.submit(pretrain_job, p, "structure", d, s, *roots, 1) for p, d, s in jobs.values()]:
            f.result()
        write_pretrained(profiles, jobs, args)
        if args.pretrained_only:
            return
        futures = []
        for name, profile in profiles.items():
            series = Series("structure", profile)
            for a, b in series.early_pairs():  # the transfers between the two sizes of each lattice
                for seed in args.seeds:
                    futures.append(pool.submit(transfer_row, name, profile,
                                               RunSpec("structure", a, b, "none", seed), roots))
        for f in futures:
            rows.append(f.result())
            print(f"{len(rows)}/{len(futures)} transfers", flush=True)
    frame = merge_into(args.out, pd.DataFrame(rows).assign(worse=lambda f: f["dice_end"] < f["dice_start"]),
                       ["variant", "pair", "seed", "precision"])
    summary = frame.groupby("variant").agg(transfers=("worse", "size"), worse=("worse", "mean"),
                                           dice_change=("dice_end", "mean"), loss_jump=("loss_jump", "median"))
    summary["dice_change"] -= frame.groupby("variant")["dice_start"].mean()
    print(summary.to_string())
    print(f"wall {time.perf_counter() - start:.0f} s; rows in {args.out}")


if __name__ == "__main__":
    main()
