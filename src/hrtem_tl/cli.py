"""Command line: ``hrtem-tl <verb>``, one verb per stage and one per whole study.

Bad input, and every other error the package reports, ends with a one-line
``hrtem-tl: error: ...`` (on a line of its own, after any progress bar) and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
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

    seg = verbs.add_parser("segment", help="segment micrographs (TIFF, PNG, DM3/DM4, MRC, EMD, SER) with a model")
    seg.add_argument("files", nargs="+", type=Path, help="micrograph files")
    seg.add_argument("--model", default=None, help="model name (see 'hrtem-tl models') or model folder")
    seg.add_argument("--pixel-size", type=float, default=None,
                     help="pixel size [Å]; overrides the files' calibration (needed when they have none)")
    seg.add_argument("--frame", type=int, default=None, help="image of a stack to segment (0-based)")
    seg.add_argument("--out", type=Path, default=Path("segmented"), help="output folder (default: segmented)")
    seg.add_argument("--tile", type=int, default=256, help="inference tile [px] at the model's pixel size (default: 256)")
    seg.add_argument("--bf16", action="store_true", help="bf16 autocast inference (fast on CPUs with AMX/AVX512-BF16)")

    ft = verbs.add_parser("finetune", help="fine-tune a model on your images and masks (the study's transfer recipe)")
    ft.add_argument("images", nargs="+", type=Path, help="image files")
    ft.add_argument("--masks", nargs="+", type=Path, required=True, help="mask files, one per image (nonzero = particle)")
    ft.add_argument("--from", dest="from_model", required=True, help="parent model: name or folder")
    ft.add_argument("--freeze", default=None, choices=("decoder", "encoder", "none"),
                    help="weights to freeze (default: decoder, with the reason printed)")
    ft.add_argument("--out", type=Path, default=None,
                    help="new model folder (default: <user models folder>/<parent>-finetuned)")
    ft.add_argument("--epochs", type=int, default=4, help="epochs (default: 4)")
    ft.add_argument("--steps", type=int, default=8, help="mini-batches per epoch (default: 8)")
    ft.add_argument("--pixel-size", type=float, default=None, help="pixel size [Å] of the images (overrides calibration)")
    ft.add_argument("--frame", type=int, default=None, help="image of a stack to use (0-based)")
    ft.add_argument("--seed", type=int, default=0)

    verbs.add_parser("models", help="list the shipped and the user's models")

    exp = verbs.add_parser("export-model", help="write a study checkpoint as a model folder for 'segment'")
    exp.add_argument("checkpoint", type=Path, help="<checkpoints>/<profile>/<series>/pretrain_<domain>_s<seed>_<key>.safetensors")
    exp.add_argument("out", type=Path, help="model folder to write")
    exp.add_argument("--weights", default="fp32", choices=("fp32", "bf16", "fp16"), help="stored precision (default: fp32)")
    exp.add_argument("--profiles", type=Path, default=None, help="profile file (default: the packaged profiles.toml)")

    gen = verbs.add_parser("train-general", help="train the general model on a mixture of every study domain "
                           "(the shipped models/general-cpu)")
    gen.add_argument("--out", type=Path, default=Path("models/general-cpu"), help="model folder (default: models/general-cpu)")
    gen.add_argument("--profile", default="cpu", help="scale of the images and the training (default: cpu)")
    gen.add_argument("--train", type=int, default=6, help="training scenes per domain (default: 6)")
    gen.add_argument("--val", type=int, default=2, help="validation scenes per domain (default: 2)")
    gen.add_argument("--test", type=int, default=3, help="test scenes per domain (default: 3)")
    gen.add_argument("--epochs", type=int, default=10, help="epochs (default: 10)")
    gen.add_argument("--steps", type=int, default=16, help="mini-batches per epoch (default: 16)")
    gen.add_argument("--workers", type=int, default=2, help="simulation processes (default: 2)")
    gen.add_argument("--data", type=Path, default=Path("cache/datasets"), help="dataset folder (default: cache/datasets)")

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
    ex.add_argument("--predictions", action="store_true",
                    help="instead: predicted masks before and after transfer for the series' example pairs "
                         "(trains what the checkpoint cache lacks)")
    ex.add_argument("--checkpoints", type=Path, default=Path("cache/checkpoints"))
    ex.add_argument("--results", type=Path, default=Path("data/results"),
                    help="with --predictions: the stored runs whose precision the models repeat (default: data/results)")

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
    study.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                       help="training precision (default auto: that of the stored runs when they match the current "
                            "settings, so a sweep begun elsewhere goes on as it began; else bf16 where this CPU runs it "
                            "natively, fp32 otherwise)")
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
        from .notebooks import SKIP, execute, find_notebooks

        paths = [Path(p) for p in args.paths] or find_notebooks()
        skipped = [p for p in paths if Path(os.path.normpath(p)).as_posix() in SKIP]
        for path in skipped:
            print(f"skipped {path}: Voila executes the app itself; its committed copy keeps no outputs")
        for path, seconds in execute([p for p in paths if p not in skipped]):
            print(f"executed {path} in {seconds:.1f} s")
        return 0
    if args.verb == "import-original":
        from .original import import_original

        for name, rows in import_original(args.source, args.out).items():
            print(f"{name}: {rows} runs -> {args.out / name}")
        return 0
    if args.verb in ("segment", "finetune", "models", "export-model", "train-general"):
        return _user_verbs(args)
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

        if args.predictions:
            from .predictions import export_predictions

            path = export_predictions(series, args.out, data_root=args.data, checkpoints=args.checkpoints,
                                      results_root=args.results)
            print(f"predictions {path}")
            return 0
        print(f"examples {export_examples(series, args.out, args.data, args.per_domain)}")
        return 0
    if args.verb == "train":
        from .experiment import RunSpec, check_spec, run_baseline, run_transfer
        from .train import Precision

        minor = args.transfer_images or (series.transfer_sizes[0] if series.name == "baseline" else None)
        spec = RunSpec(series.name, args.pretrain, args.target, args.freeze, args.seed, minor)
        check_spec(series, spec)
        precision = Precision.choose(not args.no_mixed_precision)
        if spec.kind == "baseline":  # --pretrain: the major domain, --target: the minor one
            rec = run_baseline(series.profile, spec, data_root=args.data, precision=precision)
        else:
            rec = run_transfer(series.profile, spec, data_root=args.data, checkpoints=args.checkpoints,
                               precision=precision)
        if args.json:
            print(json.dumps({"run": rec.run, "evaluations": rec.evaluations}, indent=1))
            return 0
        print(f"{spec.run_id}  ({rec.run['precision']} on {rec.run['device']}; loss = cross-entropy on logits, floor 0)")
        print("\n".join(_evaluation_lines(rec.evaluations)))
        return 0
    if args.verb == "study" and args.plan:
        from .results import DEFAULT_RESULTS
        from .projection import projection

        p = projection(series, args.results, args.workers, precision=args.precision, rates_from=(DEFAULT_RESULTS,))
        hours = "unknown" if p["hours"] is None else f"{p['hours']:.1f} h"
        print(f"{p['series']} ({p['profile']}): {p['pending']} of {p['runs']} runs to do ({p['controls']} controls), "
              f"{p['pretrained']} pretrained models; {p['precision']}; projected {hours} with {args.workers} worker(s) "
              f"({p['basis']})")
        if p["stale"]:
            print(f"stale: {p['stale']}")
        if p["refused"] and p["pending"]:
            print(f"refused here: {p['refused']}")
        return 0
    if args.verb == "study":
        from .study import run_study

        summary = run_study(series, executor=args.executor, workers=args.workers, scheduler=args.scheduler,
                            results_root=args.results, data_root=args.data, checkpoints=args.checkpoints,
                            limit=args.limit, precision=args.precision)
        print(json.dumps(summary))
        return 0
    raise AssertionError(args.verb)


def _user_verbs(args) -> int:
    """The verbs for microscopists' own files and models: segment, finetune, models, export-model, train-general."""
    if args.verb == "models":
        from .models import describe, list_models, search_path

        models = list_models()
        for folder, card in models:
            print(describe(folder, card))
        if not models:
            print("no models installed; searched: " + ", ".join(str(p) for p in search_path()))
        return 0
    if args.verb == "train-general":
        from .general import train_general
        from .models import describe, read_card

        folder = train_general(args.out, base=args.profile, train=args.train, val=args.val, test=args.test,
                               epochs=args.epochs, steps=args.steps, data_root=args.data, workers=args.workers)
        print(describe(folder, read_card(folder)))
        return 0
    if args.verb == "export-model":
        from .models import export_checkpoint

        print(f"model folder {export_checkpoint(args.checkpoint, args.out, profiles=args.profiles, weights=args.weights)}")
        return 0
    if args.verb == "segment":
        from .models import resolve_model
        from .segment import default_threads, segment_files
        from .train import Precision

        if args.frame is not None and args.frame < 0:
            raise ValueError(f"--frame must be at least 0, got {args.frame}")
        folder = resolve_model(args.model)
        default_threads()
        precision = Precision("cpu", __import__("torch").bfloat16) if args.bf16 else Precision.choose(mixed=False)
        _, errors = segment_files(args.files, folder, args.out, pixel_size=args.pixel_size, frame=args.frame,
                                  tile=args.tile, precision=precision)
        return 2 if errors else 0
    if args.verb == "finetune":
        from .finetune import finetune
        from .models import resolve_model, user_models_dir

        out = args.out or user_models_dir() / f"{resolve_model(args.from_model).name}-finetuned"
        card = finetune(args.images, args.masks, args.from_model, out, freeze=args.freeze, epochs=args.epochs,
                        steps=args.steps, pixel_size=args.pixel_size, frame=args.frame, seed=args.seed)
        held = card["held_out"]
        print(f"model folder {out}: held-out Dice {held['dice']:.3f} (before {held['dice_before']:.3f}) on "
              f"{held['images']} image(s), best epoch {held['best_epoch']}, freezing {card['freezing']}")
        return 0
    raise AssertionError(args.verb)


if __name__ == "__main__":
    sys.exit(main())
