"""Command line: ``hrtem-tl <verb>``, one verb per stage and one per whole study.

Bad input, and every other error the package reports, ends with a one-line
``hrtem-tl: error: ...`` (on a line of its own, after any progress bar) and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path

from .series import FREEZING, SERIES_DOMAINS
from .writers import ResultsLocked


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("series", help=f"dataset series: {', '.join(SERIES_DOMAINS)}")
    p.add_argument("--profile", default="smoke", help="scale profile (see 'hrtem-tl profiles'; default: smoke)")
    p.add_argument("--data", type=Path, default=Path("cache/datasets"), help="dataset folder (default: cache/datasets)")
    p.add_argument("--profiles", type=Path, default=None, help="profile file (TOML; default: the packaged profiles.toml)")


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, as the package's own."""

    def error(self, message: str):
        self.exit(2, f"hrtem-tl: error: {message} (see: {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="hrtem-tl", description="Simulated HRTEM data, U-Net transfer learning and studies.")
    verbs = top.add_subparsers(dest="verb", required=True)

    verbs.add_parser("profiles", help="list the scale profiles and their settings")

    nbs = verbs.add_parser("notebooks", help="re-execute the site's notebooks in place (widgets/, content/)")
    nbs.add_argument("paths", nargs="*", type=Path, help="notebooks (default: widgets/*.ipynb content/*.ipynb)")

    orig = verbs.add_parser("import-original", help="convert the original study's released tables to parquet "
                            "(SHA-256 checked, safe unpickling; CC-BY-4.0, doi:10.69761/kjte5358)")
    orig.add_argument("source", nargs="?", type=Path, default=Path("../shared/original"),
                      help="folder of the four .pkl files (default: ../shared/original)")
    orig.add_argument("--out", type=Path, default=Path("data/results/original"),
                      help="output folder (default: data/results/original)")

    sim = verbs.add_parser("simulate", help="simulate a series' scenes and image its domains")
    _common(sim)
    sim.add_argument("--out", type=Path, default=None, help="dataset folder (same as --data)")
    sim.add_argument("--workers", type=int, default=1, help="parallel simulation processes (default: 1)")
    sim.add_argument("--montage", type=Path, default=None,
                     help="also write example-image montages to this folder (one PNG per series)")

    ex = verbs.add_parser("examples", help="write a few example images and masks per domain for the site")
    _common(ex)
    ex.add_argument("--out", type=Path, default=Path("data/examples"), help="folder (default: data/examples)")
    ex.add_argument("--per-domain", type=int, default=2, help="images per domain (default: 2)")

    train = verbs.add_parser("train", help="pretrain (or reuse), transfer-learn and evaluate one model")
    _common(train)
    train.add_argument("--pretrain", required=True, help="pretraining domain, e.g. dose30")
    train.add_argument("--target", required=True, help="target domain, e.g. dose600")
    train.add_argument("--freeze", default="none", help=f"weight freezing: {', '.join(FREEZING)}")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--transfer-images", type=int, default=None,
                       help="transfer-set size [images] (default: the profile's)")
    train.add_argument("--checkpoints", type=Path, default=Path("cache/checkpoints"))
    train.add_argument("--no-mixed-precision", action="store_true", help="train in fp32")
    train.add_argument("--json", action="store_true", help="print the records as JSON")

    study = verbs.add_parser("study", help="run (or resume) a whole study grid and store results as parquet")
    _common(study)
    study.add_argument("--executor", default="local", help="local or dask (default: local)")
    study.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    study.add_argument("--workers", type=int, default=1, help="parallel workers (default: 1)")
    study.add_argument("--results", type=Path, default=Path("data/results"))
    study.add_argument("--checkpoints", type=Path, default=Path("cache/checkpoints"))
    study.add_argument("--limit", type=int, default=None, help="stop after this many new runs")
    study.add_argument("--plan", action="store_true",
                       help="print what the sweep still has to do and its projected time, then stop")
    return top


def _series(args):
    from .config import load_profile
    from .series import Series

    return Series(args.series, load_profile(args.profile, path=args.profiles))


def _check_counts(args) -> None:
    """Counts that must be at least 1, checked before anything else runs."""
    for flag in ("workers", "limit", "per_domain"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        _check_counts(args)
        return _dispatch(args)
    except (ValueError, OSError, ResultsLocked, pickle.UnpicklingError) as err:  # ResultsError, TrainingDiverged: ValueError
        print(f"hrtem-tl: error: {err}", file=sys.stderr)
        return 2


def _evaluation_lines(evaluations: list[dict]) -> list[str]:
    """The table of ``hrtem-tl train``: each domain evaluated after transfer, before and after it ('-': none)."""
    pre = {e["eval_domain"]: e for e in evaluations if e["stage"] == "pretrain"}
    post = {e["eval_domain"]: e for e in evaluations if e["stage"] == "transfer"}
    lines = [f"{'domain':>14s} {'loss pre':>9s} {'loss TL':>9s} {'dice pre':>9s} {'dice TL':>9s}"]
    for d in [d for d in pre if d in post] + [d for d in post if d not in pre]:
        cells = [f"{row[d][m]:9.4f}" if d in row else f"{'-':>9s}" for m in ("loss", "dice") for row in (pre, post)]
        lines.append(f"{d:>14s} " + " ".join(cells))
    return lines


def _dispatch(args) -> int:
    if args.verb == "profiles":
        from .config import available_profiles, load_profile

        for name in available_profiles():
            p = load_profile(name)
            print(f"{name:6s} {p.description}")
        return 0
    if args.verb == "notebooks":
        from .notebooks import execute, find_notebooks

        for path, seconds in execute(args.paths or find_notebooks()):
            print(f"executed {path} in {seconds:.1f} s")
        return 0
    if args.verb == "import-original":
        from .original import import_original

        for name, rows in import_original(args.source, args.out).items():
            print(f"{name}: {rows} runs -> {args.out / name}")
        return 0
    series = _series(args)
    if args.verb == "simulate":
        from .datasets import simulate_series, write_montage

        root = args.out or args.data
        out = simulate_series(series, root, workers=args.workers)
        print(f"datasets in {out}")
        if args.montage:
            path = write_montage(series, args.montage / f"{series.profile.name}_{series.name}.png", root)
            print(f"montage {path}")
        return 0
    if args.verb == "examples":
        from .datasets import export_examples

        print(f"examples {export_examples(series, args.out, args.data, args.per_domain)}")
        return 0
    if args.verb == "train":
        from .experiment import RunSpec, check_spec, run_transfer
        from .train import Precision

        spec = RunSpec(series.name, args.pretrain, args.target, args.freeze, args.seed, args.transfer_images)
        check_spec(series, spec)
        precision = Precision.choose(not args.no_mixed_precision)
        rec = run_transfer(series.profile, spec, data_root=args.data, checkpoints=args.checkpoints, precision=precision)
        if args.json:
            print(json.dumps({"run": rec.run, "evaluations": rec.evaluations}, indent=1))
            return 0
        print(f"{spec.run_id}  ({rec.run['precision']} on {rec.run['device']}; loss = cross-entropy on logits, floor 0)")
        print("\n".join(_evaluation_lines(rec.evaluations)))
        return 0
    if args.verb == "study" and args.plan:
        from .study import projection

        p = projection(series, args.results, args.workers)
        hours = "unknown" if p["hours"] is None else f"{p['hours']:.1f} h"
        print(f"{p['series']} ({p['profile']}): {p['pending']} of {p['runs']} runs to do ({p['controls']} controls), "
              f"{p['pretrained']} pretrained models; projected {hours} with {args.workers} worker(s) ({p['basis']})")
        return 0
    if args.verb == "study":
        from .study import run_study

        summary = run_study(series, executor=args.executor, workers=args.workers, scheduler=args.scheduler,
                            results_root=args.results, data_root=args.data, checkpoints=args.checkpoints,
                            limit=args.limit)
        print(json.dumps(summary))
        return 0
    raise AssertionError(args.verb)


if __name__ == "__main__":
    sys.exit(main())
