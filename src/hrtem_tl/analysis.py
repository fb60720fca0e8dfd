"""The claims of the original study, tested on our results: one row per claim part.

Each claim part is a measure of :mod:`hrtem_tl.measures` (computed on the per-model
tables of :func:`hrtem_tl.measures.model_cells`) with an interval from
:mod:`hrtem_tl.stats`, compared with a threshold. The pages call these functions and
print what they return; no measured number is typed into the text.

Conventions
-----------
* A *cell* is a (pretraining domain, evaluated domain) pair; a *model* is one
  pretrained network (``pretrain_id``) after pretraining, or one transfer run
  (``run_id``) after transfer learning. Control runs (``kind == "control"``) are never
  counted as transfers; they are the baseline of the out-of-distribution parts.
* *Goodness* is a metric oriented so that larger is better: the metric itself for
  overlap measures, its negative for the loss (:func:`goodness`).
* Units of uncertainty (:mod:`hrtem_tl.stats`): after pretraining, a pretrained model
  (domain x seed) inside its pretraining domain; after transfer learning, the same
  pretrained model with all its transfers (to every target, every freezing option:
  they share its weights, so they are not independent), inside its pretraining domain;
  structure claims leave out one pretraining lattice at a time (do the findings
  generalise over lattices?); paired designs (freezing options from one pretrained
  model, transfer-set sizes of one pair, a transfer beside its control) take the mean
  difference over transfer pairs and a sign count over pretrained models. Targets are
  crossed with pretrained models (every transfer into one target shares its transfer
  data and seed), so after transfer learning the variance is two-way
  (:func:`stats.crossed_jackknife`): the jackknife leaving out pretrained models within
  their domain, plus the one leaving out targets and seeds within their target, minus
  the one leaving out transfer pairs and seeds within their pair. Part 6f (spread over
  pretraining domains per target) is a t interval over targets, which share models.
  In the structure series the freezing parts are judged on transfers between lattices,
  with size transfers (two particle sizes of one lattice) as context rows.
* Verdicts, thresholds and sentences are :mod:`hrtem_tl.verdicts`.
"""

from __future__ import annotations

import pandas as pd

from .measures import (DOSE, class_contrast, control_changes, dose_slope, lighter_advantage, lighter_pairs,
                       lowest_row_gap, mean_atomic_number, model_cells, paired_freezing, per_pair, size_cells,
                       size_gaps, size_pairs, space_groups, structure_types)
from .results import controls, transfers
from .series import parse_structure_domain
from .stats import crossed_jackknife, group_jackknife, paired, stratified_jackknife, variance_shares
from .verdicts import COLUMNS, THRESHOLDS, tolerance
from .verdicts import claim_row as _row
from .verdicts import per_seed as _per_seed
from .verdicts import untested as _untested


def assess_noise(runs: pd.DataFrame, evaluations: pd.DataFrame, metrics=("loss", "dice")) -> list[dict]:
    """Rows of claims 1 and 2 from the noise series (one profile).

    The unit is a pretrained model inside its dose: after transfer learning, with all its
    transfers, crossed with a target dose and seed (:func:`stats.crossed_jackknife`).
    """
    T = THRESHOLDS
    rows = []
    pre = model_cells(runs, evaluations, "pretrain")
    post = model_cells(runs, evaluations, "transfer")
    doses = sorted({d for d in pre["pretrain_domain"] if d in DOSE}, key=DOSE.get)
    if len(doses) < 2:
        return [_untested(c, "", "noise", "needs models of two doses or more", "fewer than two doses") for c in (1, 2)]
    lowest = doses[0]
    n_pre = pre["unit"].nunique()
    for m in metrics:
        def before(f, m=m):
            gap = lowest_row_gap(f, m, m, lowest)
            return {"share": variance_shares(f, m)["row"], "gap": gap["mean"], "best": gap["best"]}

        st = stratified_jackknife(pre, before, unit="unit", strata=["pretrain_domain"], shares=("share",))
        common = dict(units=n_pre, method="jackknife over pretrained models, within dose")
        rows.append(_row(1, "a", "noise", m, "share of the after-pretraining matrix explained by the pretraining dose",
                         st["share"], T["strong_share"], seeds=_per_seed(pre, before, "share"), **common))
        rows.append(_row(1, "b", "noise", m, f"lowest-dose ({DOSE[lowest]:g} e-/Å²) models minus the others, mean over "
                         "evaluated doses (goodness; negative = the lowest dose is worse)", st["gap"], 0.0,
                         side="below", seeds=_per_seed(pre, before, "gap"), **common))
        rows.append(_row(1, "c", "noise", m, "the same on the evaluated dose where the lowest-dose models are least "
                         "behind (negative = worse on every dose)", st["best"], 0.0, side="below",
                         seeds=_per_seed(pre, before, "best"), **common))

        def after(f, m=m):
            shares = variance_shares(f, m, exclude_diagonal=True)
            return {"pre": shares["row"], "target": shares["col"], "slope": dose_slope(f, m, m)}

        if post.empty:
            continue
        # crossed: a pretrained model's transfers share its weights, a target's share its data and seed
        seed = "|s" + post["seed"].astype(str)
        post = post.assign(model_unit=post["pretrain_domain"] + seed, target_unit=post["target_domain"] + seed)
        st = crossed_jackknife(post, after, first=("model_unit", ["pretrain_domain"]),
                               second=("target_unit", ["target_domain"]), both=("unit", ["pretrain_domain", "eval_domain"]),
                               shares=("pre", "target"))
        common = dict(units=post["model_unit"].nunique(), method="two-way jackknife: pretrained models with all their "
                      "transfers within their dose, plus target doses and seeds within their dose, minus (pair, seed); "
                      "freezing options a fixed factor")
        rows.append(_row(2, "a", "noise", m, "share of the after-TL matrix explained by the pretraining dose",
                         st["pre"], T["weak_share"], side="below", seeds=_per_seed(post, after, "pre"), **common))
        rows.append(_row(2, "b", "noise", m, "share of the after-TL matrix explained by the target dose",
                         st["target"], T["most_share"], seeds=_per_seed(post, after, "target"), **common))
        rows.append(_row(2, "c", "noise", m, "slope of after-TL goodness on the target dose (per doubling; "
                         "positive = better at higher dose)", st["slope"], 0.0, seeds=_per_seed(post, after, "slope"),
                         **common))
    return rows


def _small(frame: pd.DataFrame) -> pd.DataFrame:
    keep = frame["pretrain_domain"].str.endswith("_small") & frame["eval_domain"].str.endswith("_small")
    return frame[keep]


def assess_structure(runs: pd.DataFrame, evaluations: pd.DataFrame, metrics=("loss", "dice")) -> list[dict]:
    """Rows of claims 3, 4 and 5 from the structure series (one profile). Intervals leave
    out one pretraining lattice, with both its sizes and all seeds, at a time."""
    T = THRESHOLDS
    rows = []
    pre, post = (model_cells(runs, evaluations, stage).assign(lattice=lambda f: [
        parse_structure_domain(d)[0] for d in f["pretrain_domain"]]) for stage in ("pretrain", "transfer"))
    small_pre, small_post = _small(pre), _small(post)
    sources = {parse_structure_domain(d) for d in pre["pretrain_domain"].unique()}
    small = sorted(lat for lat, size in sources if size == "small")
    paired_sizes = sorted(lat for lat in small if (lat, "large") in sources)
    need = T["min_lattices"]
    if len(small) < need:
        why = (f"small-particle models of {len(small)} lattice(s) so far ({', '.join(small) or 'none'}); "
               f"needs at least {need}")
        return [_untested(c, "", "structure", text, why) for c, text in (
            (3, "structure classes after pretraining"), (4, "target versus pretraining lattice after TL"),
            (5, "effect of particle size"))]
    transferred = sorted({parse_structure_domain(d)[0] for d in small_post["pretrain_domain"].unique()})
    targets_tested, sizes_tested = len(transferred) >= need, len(paired_sizes) >= need
    if not targets_tested:
        rows.append(_untested(4, "", "structure", "target versus pretraining lattice after TL",
                              f"transfers between small-particle lattices from {len(transferred)} pretraining "
                              f"lattice(s) so far ({', '.join(transferred) or 'none'}); needs at least {need}"))
    if not sizes_tested:
        rows.append(_untested(5, "", "structure", "effect of particle size",
                              f"models of both particle sizes for {len(paired_sizes)} lattice(s) so far "
                              f"({', '.join(paired_sizes)}); needs at least {need}"))
    domains = sorted(set(small_pre["pretrain_domain"]))
    types, groups = structure_types(domains), space_groups(domains)
    pairs = lighter_pairs(types, mean_atomic_number(domains))
    both = pd.concat([pre.assign(stage="pretrain"), post.assign(stage="transfer")], ignore_index=True)
    method = "jackknife leaving out one pretraining lattice"
    for m in metrics:
        def classes(f, m=m):
            return {"type": class_contrast(f, m, m, types), "raw": class_contrast(f, m, m, types, False),
                    "sg": class_contrast(f, m, m, groups), "light": lighter_advantage(f, m, m, pairs)}

        st = group_jackknife(small_pre, classes, group="lattice")
        common = dict(units=small_pre["lattice"].nunique(), method=method)
        rows.append(_row(3, "a", "structure", m, "same- minus other-structure-type goodness after pretraining, row "
                         "and column effects removed (small particles)", st["type"], 0.0,
                         seeds=_per_seed(small_pre, classes, "type"), **common))
        rows.append(_row(3, "a", "structure", m, "the same without removing row and column effects", st["raw"], 0.0,
                         seeds=_per_seed(small_pre, classes, "raw"), primary=False,
                         note="context: the lattice a model is evaluated on dominates raw cells", **common))
        rows.append(_row(3, "a", "structure", m, "the same with space groups as classes (diamond and spinel share "
                         "227), effects removed", st["sg"], 0.0, seeds=_per_seed(small_pre, classes, "sg"),
                         primary=False, note="context: the grouping of the earlier report", **common))
        rows.append(_row(3, "b", "structure", m, "lighter- minus heavier-element models within a structure type, on "
                         "the other lattices", st["light"], 0.0, seeds=_per_seed(small_pre, classes, "light"),
                         **common))
        if targets_tested:
            def after(f, m=m):
                shares = variance_shares(f, m, exclude_diagonal=True)
                return {"target": shares["col"], "margin": shares["col"] - shares["row"]}

            st = group_jackknife(small_post, after, group="lattice", shares=("target",))
            common = dict(units=small_post["lattice"].nunique(), method=method)
            rows.append(_row(4, "a", "structure", m, "share of the after-TL matrix explained by the target lattice",
                             st["target"], T["most_share"], seeds=_per_seed(small_post, after, "target"), **common))
            rows.append(_row(4, "b", "structure", m, "target-lattice share minus pretraining-lattice share after TL",
                             st["margin"], 0.0, seeds=_per_seed(small_post, after, "margin"), **common))
        if not sizes_tested:
            continue

        def gaps(f, m=m):
            return size_gaps(f[f["stage"] == "pretrain"], f[f["stage"] == "transfer"], m, m)

        st = group_jackknife(both, gaps, group="lattice")
        common = dict(units=both["lattice"].nunique(), method=method)
        rows.append(_row(5, "a", "structure", m, "cost of small-particle pretraining on large particles (goodness)",
                         st["small_on_large"], 0.0, seeds=_per_seed(both, gaps, "small_on_large"), **common))
        rows.append(_row(5, "b", "structure", m, "fraction of the size gap left after TL", st["left"], T["removed"],
                         side="below", seeds=_per_seed(both, gaps, "left"), **common))
        rows.append(_row(5, "c", "structure", m, "size gap relative to the gap between lattices", st["ratio"],
                         T["little"], side="below", seeds=_per_seed(both, gaps, "ratio"), **common))
    return sorted(rows, key=lambda r: (r["claim"], r["part"]))


def _paired_row(claim, part, series, metric, test, frame, value, threshold, side, by="group", **kw) -> dict:
    """A claim part from paired differences ``frame[value]``: their mean over transfer
    pairs (seeds averaged within a pair). By default its interval is two-way
    (:func:`stats.crossed_jackknife`: pretrained models, which share their weights across
    targets, crossed with targets and seeds, which share transfer data and seed), and the
    sign count is over the pretrained models' mean differences; ``by`` another column: a t interval over its
    values (which are not independent of each other, as the method text says)."""
    frame = frame[frame[value].notna()]
    if by != "group":
        st = paired(per_pair(frame, value, by))
        name, method = "targets", "paired differences averaged per target, t over targets (the targets share models)"
    else:
        source, target = (frame["pair"].str.split(">").str[i] for i in (0, 1))
        seed = "|s" + frame["seed"].astype(str)
        frame = frame.assign(source=source, target=target, group=source + seed, target_seed=target + seed,
                             cell=frame["pair"] + seed)
        mean_over_pairs = lambda f: float(per_pair(f, value, "pair").mean())  # noqa: E731
        # stratified by domain when seeds repeat a model; with one seed the domains are the replicates
        one_seed = frame["seed"].nunique() < 2
        strata = (lambda *cols: []) if one_seed else (lambda *cols: list(cols))  # noqa: E731
        st = {**paired(per_pair(frame, value, "group")),
              **crossed_jackknife(frame, mean_over_pairs, first=("group", strata("source")),
                                  second=("target_seed", strata("target")),
                                  both=("cell", strata("source", "target")))["value"]}
        name, method = "pretrained models", ("paired differences, mean over transfer pairs; two-way jackknife: "
                                             "pretrained models within their domain plus targets and seeds within "
                                             "their target, minus transfer pairs and seeds" + (" (one seed: not "
                                             "stratified, the domains are the replicates)" if one_seed else ""))
    seeds = [float(f[value].mean()) for _, f in frame.groupby("seed")]
    note = f"{st['positive']} of {st['n']} {name} above 0, {st['negative']} below (sign test p = {st['sign_p']:.2g})"
    prefix = kw.pop("note_prefix", "")
    return _row(claim, part, series, metric, test, st, threshold, side=side, seeds=seeds, units=st["n"],
                method=method, note=f"{prefix}; {note}" if prefix else note, **kw)


def _transfer_kinds(series: str, frame: pd.DataFrame):
    """The transfers a paired part is judged on: in the structure series, transfers
    between lattices (primary) and, as context, those between the two particle sizes of
    one lattice, which behave differently (each large-particle model's only transfer);
    elsewhere every transfer. Yields (kind, rows, context note or None)."""
    if series != "structure":
        yield None, frame, None
        return
    source, target = (frame["pair"].str.split(">").str[i].map(lambda d: parse_structure_domain(d)[0]) for i in (0, 1))
    same = (source == target).to_numpy()
    if (~same).any():
        yield "between lattices", frame[~same], None
    if same.any():
        yield "between the particle sizes of one lattice", frame[same], "context: size transfers, judged apart"


def assess_training(series: str, runs: pd.DataFrame, evaluations: pd.DataFrame,
                    metrics=("loss", "dice")) -> list[dict]:
    """Rows of claim 6 about freezing and out-of-distribution change from one series (one profile)."""
    rows = []
    modes = set(transfers(runs)["freezing"])
    for m in metrics:
        pairs = paired_freezing(runs, evaluations, m)
        for mode, part, text in (("decoder", "b", "decoder frozen vs full fine-tuning"),
                                 ("encoder", "c", "encoder frozen vs full fine-tuning")):
            sub = pairs[pairs["freezing"] == mode]
            if sub.empty or "none" not in modes:
                rows.append(_untested(6, part, series, text, "no paired runs"))
                continue
            if mode == "decoder":
                key, side, threshold = ("rel" if m == "loss" else "diff"), "within", tolerance(m)
                what = "relative change of the loss" if m == "loss" else "change of Dice"
            else:
                key, side, threshold, what = "diff", "below", 0.0, "change of goodness (negative = worse)"
            for kind, part_rows, note in _transfer_kinds(series, sub):
                label = f"{text}: {what}" + ("" if kind is None else f" ({kind})")
                rows.append(_paired_row(6, part, series, m, label, part_rows, key, threshold, side,
                                        primary=note is None, **({"note_prefix": note} if note else {})))
        changes = control_changes(runs, evaluations, m)
        for kind, part, text in (("other", "e", "other domains"), ("source", "g", "the pretraining domain")):
            sub = changes[changes["kind"] == kind]
            if sub.empty:
                why = "no control runs (protocol 1)" if controls(runs).empty else f"no evaluations on {text}"
                rows.append(_untested(6, part, series, f"TL against its control on {text}", why))
                continue
            rows.append(_paired_row(6, part, series, m, f"change on {text} after TL minus the control's change "
                                    "(goodness; negative = TL worse than further training at home)", sub, "excess",
                                    0.0, "below"))
    sub = paired_freezing(runs, evaluations, "loss")
    sub = sub[sub["freezing"] == "encoder"].assign(saved=lambda f: 1 - f["time_ratio"])
    if sub.empty:
        rows.append(_untested(6, "d", series, "speed-up of encoder freezing", "no paired runs"))
    else:
        rows.append(_paired_row(6, "d", series, "time", "transfer wall-time saved by freezing the encoder (share)",
                                sub, "saved", 0.0, "above"))
    return rows


def assess_transfer_size(runs: pd.DataFrame, evaluations: pd.DataFrame, metrics=("loss", "dice"),
                         series: str = "tlsize") -> list[dict]:
    """Rows of claim 6 about the transfer-set size (parts a and f): paired by pretraining
    group (gain from the smallest to the largest set) and by target (narrowing of the spread)."""
    post = size_cells(runs, evaluations)
    sizes = sorted(post["transfer_images"].unique())
    if len(sizes) < 2:
        return [_untested(6, "a", series, "effect of the transfer-set size",
                          f"{len(sizes)} transfer-set size(s) so far; needs at least 2")]
    rows = []
    for m in metrics:
        gain, narrowing = size_pairs(post, m)
        rows.append(_paired_row(6, "a", series, m, f"goodness with {sizes[-1]} minus {sizes[0]} transfer images "
                                "(positive = more data helps)", gain, "gain", 0.0, "above"))
        rows.append(_paired_row(6, "f", series, m, f"spread over pretraining doses with {sizes[0]} minus {sizes[-1]} "
                                "transfer images (positive = spread shrinks)", narrowing, "narrowing", 0.0, "above",
                                by="target_domain"))
    return rows


def assess_claims(noise: tuple[pd.DataFrame, pd.DataFrame] | None,
                  structure: tuple[pd.DataFrame, pd.DataFrame] | None,
                  metrics=("loss", "dice"),
                  tlsize: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Every tested part of the six claims, one row per part, series and metric
    (columns :data:`COLUMNS`). ``noise``, ``structure`` and ``tlsize`` are (runs,
    evaluations) of one profile each, or ``None`` (their claims are then ``not yet
    tested``). Rows with ``primary`` False give context and do not enter the verdicts."""
    rows = []
    if noise is None or noise[0].empty:
        rows += [_untested(c, "", "noise", "needs results of the noise series", "no noise results yet") for c in (1, 2)]
    else:
        rows += assess_noise(*noise, metrics=metrics)
    if structure is None or structure[0].empty:
        rows += [_untested(c, "", "structure", "needs results of the structure series", "no structure results yet")
                 for c in (3, 4, 5)]
    else:
        rows += assess_structure(*structure, metrics=metrics)
    if tlsize is None or tlsize[0].empty:
        rows.append(_untested(6, "a", "tlsize", "effect of the transfer-set size", "no tlsize results yet"))
    else:
        rows += assess_transfer_size(*tlsize, metrics=metrics)
    for name, data in (("noise", noise), ("structure", structure)):
        if data is not None and not data[0].empty:
            rows += assess_training(name, *data, metrics=metrics)
    return pd.DataFrame(rows, columns=COLUMNS)
