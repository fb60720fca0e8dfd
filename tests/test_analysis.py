"""Tests of hrtem_tl.analysis on small hand-made tables (fast, no training)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hrtem_tl import analysis as A
from hrtem_tl import measures as M
from hrtem_tl import stats as S
from hrtem_tl import verdicts as V
from hrtem_tl.metrics import METRICS
from hrtem_tl.series import parse_structure_domain as split_domain
from hrtem_tl import results as R
from hrtem_tl.results import SCHEMA, validate

DOSES = ["dose30", "dose75", "dose150", "dose300", "dose600"]


def fake_results(domains, pre_loss, post_loss, *, seeds=(0, 1), freezing=("none", "encoder", "decoder"),
                 pairs=None, noise=0.0, rng=None, other_change=0.05, times=None, series="noise",
                 control_change=None):
    """Schema-valid runs and evaluations tables from two value functions.

    ``pre_loss(pre, eval, seed)`` is the loss of the model pretrained on ``pre`` on
    ``eval``; ``post_loss(pre, target, freezing, seed)`` that of the transferred model on
    its target. On every other domain a transferred model is worse than before by
    ``other_change`` (relative). Dice is 1 - loss so both metrics tell the same story.
    With ``control_change`` (relative), each pretrained model also has a control run
    whose loss on every domain is its pretrained loss times ``1 + control_change``.
    """
    rng = rng or np.random.default_rng(0)
    times = times or {"none": 10.0, "decoder": 9.0, "encoder": 7.0}
    pairs = pairs or [(a, b) for a in domains for b in domains if a != b]
    runs, evals = [], []
    base = {k: 0 for k in SCHEMA["runs"]}
    grid = [(a, b, f) for a, b in pairs for f in freezing]
    if control_change is not None:
        grid += [(a, a, "none") for a in dict.fromkeys(a for a, _ in pairs)]
    for seed in seeds:
        for a, b, f in grid:
            run_id = f"{series}|{a}>{b}|{f}|s{seed}"
            control = a == b
            runs.append(base | {
                "run_id": run_id, "pretrain_id": f"{series}|{a}|s{seed}", "series": series, "profile": "cpu",
                "pretrain_domain": a, "target_domain": b, "freezing": f, "seed": seed, "transfer_images": 32,
                "params_total": 100, "params_trainable": {"none": 100, "encoder": 22, "decoder": 90}[f],
                "wall_transfer_s": times[f] * (1 + 0.01 * rng.normal()), "device": "cpu", "precision": "bf16",
                "package_version": "0", "git_commit": "x", "config_hash": "h", "lr_pretrain": 1e-3,
                "lr_transfer": 1e-4, "wall_pretrain_s": 50.0, "finished_at": 0.0,
                "kind": "control" if control else "transfer", "transfer_batchnorm": "adapt", "protocol": 2,
            })
            for d in domains:
                before = pre_loss(a, d, seed) + noise * rng.normal()
                if control:
                    after = before * (1 + control_change)
                else:
                    after = ((post_loss(a, b, f, seed) + noise * rng.normal()) if d == b
                             else before * (1 + other_change))
                for stage, loss in (("pretrain", before), ("transfer", after)):
                    evals.append({"run_id": run_id, "profile": "cpu", "stage": stage, "eval_domain": d,
                                  "split": "test", "loss": loss, "dice": 1 - loss, "iou": 1 - loss, "precision": 1 - loss,
                                  "recall": 1 - loss, "accuracy": 1 - loss / 10})
    return validate(pd.DataFrame(runs), "runs"), validate(pd.DataFrame(evals), "evaluations")


def matrix_cells(values: dict[tuple[str, str], float]) -> pd.DataFrame:
    """A long table with one model per cell."""
    rows = [{"model": f"m{i}", "seed": 0, "freezing": "", "pretrain_domain": r, "target_domain": "",
             "eval_domain": c, **{m: v for m in METRICS}} for i, ((r, c), v) in enumerate(values.items())]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- variance shares


def test_shares_of_a_rows_only_matrix():
    cells = matrix_cells({(r, c): float(i) for i, r in enumerate("abc") for c in "xyz"})
    s = S.variance_shares(cells, "loss")
    assert s["row"] == pytest.approx(1) and s["col"] == pytest.approx(0) and s["residual"] == pytest.approx(0)


def test_shares_of_an_additive_matrix_sum_to_one_and_match_hand_computation():
    rows, cols = {"a": 0.0, "b": 2.0}, {"x": 0.0, "y": 1.0, "z": 5.0}
    cells = matrix_cells({(r, c): rows[r] + cols[c] for r in rows for c in cols})
    s = S.variance_shares(cells, "loss")
    y = np.array([rows[r] + cols[c] for r in rows for c in cols])
    total = ((y - y.mean()) ** 2).sum()
    ss_row = 3 * sum((v - np.mean(list(rows.values()))) ** 2 for v in rows.values())
    assert s["row"] == pytest.approx(ss_row / total)
    assert s["row"] + s["col"] + s["residual"] == pytest.approx(1)


def test_shares_of_pure_interaction_go_to_the_residual():
    cells = matrix_cells({("a", "x"): 1.0, ("a", "y"): -1.0, ("b", "x"): -1.0, ("b", "y"): 1.0})
    s = S.variance_shares(cells, "loss")
    assert s["residual"] == pytest.approx(1) and s["row"] == pytest.approx(0, abs=1e-12)


def test_shares_without_the_diagonal_still_find_a_column_effect():
    cols = {"a": 0.0, "b": 1.0, "c": 3.0, "d": 4.0}
    cells = matrix_cells({(r, c): cols[c] + (100.0 if r == c else 0.0) for r in cols for c in cols})
    assert S.variance_shares(cells, "loss")["residual"] > 0.5  # the large diagonal is interaction
    s = S.variance_shares(cells, "loss", exclude_diagonal=True)
    assert s["row"] == pytest.approx(0, abs=1e-9) and s["residual"] == pytest.approx(0, abs=1e-9)
    # without the diagonal, rows and columns are not orthogonal: part of the column
    # effect is "shared", but the column share still dominates
    assert s["col"] > 0.85 and s["col"] + s["shared"] == pytest.approx(1)


def test_shares_of_constant_cells_or_a_single_row_are_nan():
    cells = matrix_cells({(r, c): 1.0 for r in "ab" for c in "xy"})
    assert np.isnan(S.variance_shares(cells, "loss")["row"])
    one_row = matrix_cells({("a", c): float(i) for i, c in enumerate("xyz")})
    assert np.isnan(S.variance_shares(one_row, "loss")["col"])
    assert np.isnan(M.lowest_row_gap(one_row, "loss", "loss", "a")["mean"])


# --------------------------------------------------------------------------- tables


def test_model_cells_counts_each_pretrained_model_once():
    runs, evals = fake_results(DOSES[:3], lambda a, d, s: 0.1, lambda a, b, f, s: 0.05, seeds=(0,))
    pre = M.model_cells(runs, evals, "pretrain")
    assert len(pre) == 3 * 3  # 3 pretrained models x 3 evaluated domains, not x runs
    post = M.model_cells(runs, evals, "transfer")
    assert len(post) == len(runs) and (post["eval_domain"] == post["target_domain"]).all()
    assert len(M.model_cells(runs, evals, "transfer", freezing=["none"])) == len(runs) // 3


def test_goodness_flips_only_the_loss():
    assert M.goodness(2.0, "loss") == -2.0 and M.goodness(0.5, "dice") == 0.5
    with pytest.raises(ValueError):
        M.goodness(1.0, "nonsense")


def test_pick_profile_prefers_the_largest_scale():
    assert M.pick_profile(["smoke", "cpu"]) == "cpu"
    assert M.pick_profile(["gpu", "cpu", "paper"]) == "paper"
    assert M.pick_profile([]) is None


# --------------------------------------------------------------------------- uncertainty and verdicts


@pytest.mark.parametrize("lo,hi,thr,above,expected", [
    (0.3, 0.5, 0.25, True, V.HOLDS), (0.1, 0.2, 0.25, True, V.REFUTED), (0.2, 0.3, 0.25, True, V.INCONCLUSIVE),
    (0.01, 0.05, 0.1, False, V.HOLDS), (0.2, 0.3, 0.1, False, V.REFUTED), (np.nan, 1, 0, True, V.UNTESTED),
])
def test_verdict(lo, hi, thr, above, expected):
    assert V.verdict(lo, hi, thr, above) == expected


def test_equivalence_and_combine():
    assert V.equivalence(-0.005, 0.004, 0.01) == V.HOLDS
    assert V.equivalence(0.02, 0.05, 0.01) == V.REFUTED
    assert V.equivalence(-0.005, 0.05, 0.01) == V.INCONCLUSIVE
    assert V.combine(V.HOLDS, V.HOLDS, V.UNTESTED) == V.HOLDS
    assert V.combine(V.HOLDS, V.REFUTED) == V.MIXED
    assert V.combine(V.INCONCLUSIVE, V.INCONCLUSIVE) == V.INCONCLUSIVE
    assert V.combine(V.UNTESTED) == V.UNTESTED


# --------------------------------------------------------------------------- claim statistics


def test_lowest_row_gap_and_dose_slope():
    loss = {"dose30": 3.0, "dose75": 2.0, "dose150": 1.0}
    cells = matrix_cells({(r, c): loss[r] + loss[c] for r in loss for c in loss})
    gap = M.lowest_row_gap(cells, "loss", "loss", "dose30")
    assert gap["mean"] == pytest.approx(-1.5) and gap["best"] == pytest.approx(-1.5)  # 1.5 worse everywhere
    assert M.lowest_row_gap(cells, "loss", "loss", "dose150")["mean"] == pytest.approx(1.5)
    slope = M.dose_slope(cells, "loss", "loss")  # goodness = -loss rises with the dose
    x = np.log2([30, 75, 150])
    assert slope == pytest.approx(np.polyfit(x, [-5.0, -4.0, -3.0], 1)[0])
    assert M.dose_slope(cells, "dice", "dice") == pytest.approx(-slope)


def test_class_contrast_and_lighter_advantage():
    classes = {"C_small": "diamond", "Si_small": "diamond", "Cu_small": "fcc", "Ag_small": "fcc"}
    good = {("C_small", "Si_small"): 0.9, ("Si_small", "C_small"): 0.8, ("Cu_small", "Ag_small"): 0.9,
            ("Ag_small", "Cu_small"): 0.8}
    values = {(r, c): good.get((r, c), 0.5) for r in classes for c in classes}
    cells = matrix_cells(values)
    assert M.class_contrast(cells, "dice", "dice", classes, main_effects_removed=False) == pytest.approx(0.85 - 0.5)
    assert M.class_contrast(cells, "dice", "dice", classes) > 0.2  # no row or column effect to remove here
    weights = M.mean_atomic_number(classes)
    pairs = M.lighter_pairs(classes, weights)
    assert ("C_small", "Si_small") in pairs and ("Cu_small", "Ag_small") in pairs
    assert M.lighter_advantage(cells, "dice", "dice", pairs) == pytest.approx(0)  # equal on the other lattices
    values[("C_small", "Cu_small")] = 0.7
    assert M.lighter_advantage(matrix_cells(values), "dice", "dice", pairs) == pytest.approx(0.1 / 2)  # C vs Si: 0.1


def test_class_contrast_with_main_effects_removed_ignores_easy_lattices():
    """A lattice that is easy for every model is a column effect, not a class effect."""
    classes = {"C_small": "x", "Si_small": "x", "Cu_small": "x", "Ag_small": "y"}
    easy = {"C_small": 0.0, "Si_small": 0.0, "Cu_small": 0.0, "Ag_small": 0.3}  # the lone class-y target is easy
    cells = matrix_cells({(r, c): 0.5 + easy[c] for r in classes for c in classes})
    assert M.class_contrast(cells, "dice", "dice", classes, main_effects_removed=False) != pytest.approx(0)
    assert M.class_contrast(cells, "dice", "dice", classes) == pytest.approx(0, abs=1e-12)


def test_structure_types_differ_from_space_groups():
    types = M.structure_types(["C_small", "Si_small", "Fe3O4_small", "Co3O4_large", "CdSe_small"])
    assert types == {"C_small": "diamond", "Si_small": "diamond", "Fe3O4_small": "spinel",
                     "Co3O4_large": "spinel", "CdSe_small": "wurtzite"}
    groups = M.space_groups(["C_small", "Fe3O4_small"])
    assert groups["C_small"] == groups["Fe3O4_small"] == 227  # one space group, two structure types


def test_space_groups_and_lightness_of_the_lattices():
    groups = M.space_groups(["CdSe_small", "Fe3O4_large", "Fe_small"])
    assert groups == {"CdSe_small": 186, "Fe3O4_large": 227, "Fe_small": 229}
    z = M.mean_atomic_number(["Fe3O4_small", "C_small"])
    assert z["C_small"] == 6 and z["Fe3O4_small"] == pytest.approx((3 * 26 + 4 * 8) / 7)


def test_size_gaps():
    domains = ["Cu_small", "Cu_large", "Ag_small", "Ag_large"]
    # pretraining on the other size costs 0.1 (small on large) or 0.3 (large on small) of
    # Dice, 0.2 on average; another lattice costs 0.4
    def pre(a, d):
        (la, sa), (ld, sd) = split_domain(a), split_domain(d)
        size_cost = (0.1 if sa == "small" else 0.3) if (la == ld and sa != sd) else 0
        return 0.9 - size_cost - (0.4 if la != ld else 0)
    pre_cells = matrix_cells({(a, d): pre(a, d) for a in domains for d in domains})
    post_cells = matrix_cells({(a, d): 0.85 for a in domains for d in domains if a != d})
    gaps = M.size_gaps(pre_cells, post_cells, "dice", "dice")
    assert gaps["before"] == pytest.approx(0.2) and gaps["after"] == pytest.approx(0.05)
    assert gaps["left"] == pytest.approx(0.25) and gaps["small_on_large"] == pytest.approx(0.1)
    assert gaps["large_on_small"] == pytest.approx(0.3)
    assert gaps["lattice"] == pytest.approx(0.4) and gaps["ratio"] == pytest.approx(0.5)


def test_paired_freezing_and_freezing_table():
    runs, evals = fake_results(DOSES[:3], lambda a, d, s: 0.2,
                               lambda a, b, f, s: {"none": 0.1, "decoder": 0.1, "encoder": 0.12}[f], seeds=(0,))
    pairs = M.paired_freezing(runs, evals, "loss")
    enc = pairs[pairs["freezing"] == "encoder"]
    assert set(enc["unit"]) == set(pairs.loc[pairs["freezing"] == "decoder", "unit"])
    assert enc["diff"].to_numpy() == pytest.approx(-0.02) and enc["rel"].to_numpy() == pytest.approx(0.2)
    assert enc["time_ratio"].to_numpy() == pytest.approx(0.7, rel=0.05)
    table = M.freezing_table(runs, evals)
    assert table.loc["encoder", "trainable_share"] == pytest.approx(0.22)
    assert table.loc["none", "runs"] == 6


def test_control_changes_measure_transfer_learning_against_further_training_at_home():
    runs, evals = fake_results(DOSES[:3], lambda a, d, s: 0.2, lambda a, b, f, s: 0.1, seeds=(0,), other_change=0.5,
                               control_change=0.1)
    changes = M.control_changes(runs, evals, "loss")
    assert len(changes) == (len(runs) - 3) * 2  # transfers (not controls) x 2 other domains
    assert set(changes["kind"]) == {"source", "other"}
    assert changes["change"].to_numpy() == pytest.approx(-0.1)  # loss 0.2 -> 0.3
    assert changes["control_change"].to_numpy() == pytest.approx(-0.02)  # 0.2 -> 0.22 at home
    assert changes["excess"].to_numpy() == pytest.approx(-0.08)
    no_controls = fake_results(DOSES[:3], lambda a, d, s: 0.2, lambda a, b, f, s: 0.1, seeds=(0,))
    assert M.control_changes(*no_controls, "loss").empty


def test_worse_than_start_compares_each_transfer_with_its_pretrained_model():
    runs, evals = fake_results(["Cu_small", "Cu_large", "Ag_small"], lambda a, d, s: 0.2,
                               lambda a, b, f, s: 0.3 if b == "Cu_large" else 0.1, seeds=(0,), series="structure",
                               control_change=0.0)
    w = M.worse_than_start(runs, evals)
    assert len(w) == len(runs) - 3 and w.loc[w["pair"].str.endswith("Cu_large"), "worse"].all()
    assert not w.loc[~w["pair"].str.endswith("Cu_large"), "worse"].any()
    assert w.loc[w["pair"] == "Cu_small>Cu_large", "same_lattice"].all()


def test_seed_ranges_span_the_seeds_of_one_configuration():
    runs, evals = fake_results(["dose30", "dose600"], lambda a, d, s: 0.2, lambda a, b, f, s: 0.1 + 0.05 * s,
                               seeds=(0, 1, 2), control_change=0.0)
    r = M.seed_ranges(runs, evals, "dice")
    assert len(r) == 2 * 3 and np.allclose(r, 0.1)  # two pairs x three freezing options; controls left out
    # two transfer-set sizes of one configuration are two configurations, not two seeds
    big = runs[runs["kind"] == "transfer"].assign(transfer_images=64, run_id=lambda f: f["run_id"] + "|n64")
    big_evals = evals.merge(runs[["run_id"]]).assign(run_id=lambda f: f["run_id"] + "|n64")
    big_evals = big_evals[big_evals["run_id"].isin(big["run_id"])].assign(dice=lambda f: f["dice"] + 0.5)
    both = M.seed_ranges(pd.concat([runs, big]), pd.concat([evals, big_evals]), "dice")
    assert len(both) == 2 * 6 and np.allclose(both, 0.1)
    one = fake_results(["dose30", "dose600"], lambda a, d, s: 0.2, lambda a, b, f, s: 0.1, seeds=(0,))
    assert M.seed_ranges(*one).empty  # a configuration with one seed has no range


# --------------------------------------------------------------------------- claims end to end

LEVEL = {d: i for i, d in enumerate(DOSES)}  # 0 = lowest dose


def _verdicts(runs, evals):
    table = A.assess_claims((runs, evals), None)
    return table, V.claim_verdicts(table)


def test_claims_1_and_2_hold_when_the_data_say_so():
    rng = np.random.default_rng(1)
    runs, evals = fake_results(
        DOSES, lambda a, d, s: 0.5 - 0.08 * LEVEL[a] - 0.02 * LEVEL[d],
        lambda a, b, f, s: 0.3 - 0.05 * LEVEL[b] + 0.001 * LEVEL[a], noise=0.002, rng=rng)
    table, verdicts = _verdicts(runs, evals)
    assert verdicts[1] == V.HOLDS and verdicts[2] == V.HOLDS
    assert verdicts[3] == verdicts[4] == verdicts[5] == V.UNTESTED
    assert (table.loc[table["claim"] == 6, "part"] == "a").any()  # transfer-set size: not varied


def test_claim_2_fails_when_the_pretraining_dose_still_rules_after_transfer():
    rng = np.random.default_rng(2)
    runs, evals = fake_results(
        DOSES, lambda a, d, s: 0.5 - 0.08 * LEVEL[a], lambda a, b, f, s: 0.4 - 0.08 * LEVEL[a] - 0.001 * LEVEL[b],
        noise=0.002, rng=rng)
    table, verdicts = _verdicts(runs, evals)
    rows = table[table["claim"] == 2].set_index(["part", "metric"])
    assert rows.loc[("a", "loss"), "verdict"] == V.REFUTED and rows.loc[("b", "loss"), "verdict"] == V.REFUTED
    assert verdicts[2] in (V.REFUTED, V.MIXED)  # the slope on the target dose (part c) may still hold


def test_claim_6_freezing_parts():
    rng = np.random.default_rng(3)
    runs, evals = fake_results(
        DOSES[:3], lambda a, d, s: 0.3, lambda a, b, f, s: {"none": 0.1, "decoder": 0.1, "encoder": 0.15}[f],
        noise=0.0005, rng=rng, other_change=0.3, control_change=0.0)
    table = A.assess_claims((runs, evals), None)
    six = table[(table["claim"] == 6)].set_index(["part", "metric"])
    assert six.loc[("b", "dice"), "verdict"] == V.HOLDS  # decoder frozen: as good
    assert six.loc[("c", "dice"), "verdict"] == V.HOLDS  # encoder frozen: worse
    assert six.loc[("d", "time"), "verdict"] == V.HOLDS  # and faster
    assert six.loc[("d", "time"), "estimate"] == pytest.approx(0.3, abs=0.03)
    assert six.loc[("e", "loss"), "verdict"] == V.HOLDS  # worse elsewhere than its control
    assert six.loc[("g", "loss"), "verdict"] == V.HOLDS  # and on its own pretraining dose
    assert six.loc[("a", ""), "verdict"] == V.UNTESTED


def test_no_results_means_not_yet_tested():
    verdicts = V.claim_verdicts(A.assess_claims(None, None))
    assert set(verdicts) == {V.UNTESTED} and list(verdicts.index) == [1, 2, 3, 4, 5, 6]


def test_structure_claims_on_a_small_hand_made_series():
    lattices = ["Cu", "Ag", "C", "Si"]
    domains = [f"{l}_{s}" for l in lattices for s in ("small", "large")]
    group = M.structure_types(domains)

    def pre(a, d):
        (la, sa), (ld, sd) = split_domain(a), split_domain(d)
        loss = 0.1 if a == d else 0.2 if la == ld else 0.3 if group[a] == group[d] else 0.5
        return loss + (0.05 if (sa, sd) == ("small", "large") else 0)

    def post(a, b, f, s):
        return 0.1 + 0.005 * lattices.index(split_domain(b)[0]) + 0.0002 * lattices.index(split_domain(a)[0])

    pairs = [(a, b) for a in domains for b in domains if a != b and
             (split_domain(a)[1] == split_domain(b)[1] == "small" or split_domain(a)[0] == split_domain(b)[0])]
    runs, evals = fake_results(domains, lambda a, d, s: pre(a, d), post, pairs=pairs, series="structure",
                               noise=0.001, rng=np.random.default_rng(4))
    table = A.assess_claims(None, (runs, evals))
    v = table[table["primary"]].set_index(["claim", "part", "metric"])["verdict"]
    assert v[(3, "a", "loss")] == V.HOLDS  # same structure type is better, row and column effects removed
    assert v[(4, "a", "loss")] == V.HOLDS and v[(4, "b", "loss")] == V.HOLDS
    assert v[(5, "a", "loss")] == V.HOLDS  # small-particle models worse on large ones
    assert v[(5, "b", "loss")] == V.HOLDS  # TL leaves little of the gap
    assert V.claim_verdicts(table)[1] == V.UNTESTED


def test_structure_claims_wait_for_enough_lattices():
    """A running structure study speaks about lattices only once enough have pretrained models."""
    domains = [f"{lat}_{size}" for lat in ("Cu", "Ag", "C", "Si") for size in ("small", "large")]

    def sources_table(sources, same_lattice_only=False):
        pairs = [(a, b) for a in sources for b in domains if a != b
                 and (not same_lattice_only or split_domain(a)[0] == split_domain(b)[0])]
        return fake_results(domains, lambda a, d, s: 0.2 + 0.1 * (a != d), lambda a, b, f, s: 0.15, pairs=pairs,
                            series="structure", seeds=(0,), noise=0.01, rng=np.random.default_rng(2))

    need = V.THRESHOLDS["min_lattices"]
    early = A.assess_claims(None, sources_table(["Cu_small", "Cu_large", "Ag_small"]))
    early = early[early["claim"].isin([3, 4, 5])]
    assert set(early["verdict"]) == {V.UNTESTED}
    assert early["threshold_text"].str.contains(f"2 lattice\\(s\\) so far \\(Ag, Cu\\); needs at least {need}").all()
    later = A.assess_claims(None, sources_table(["Cu_small", "Cu_large", "Ag_small", "Ag_large", "C_small"]))
    tested = set(later.loc[later["verdict"] != V.UNTESTED, "claim"])
    assert {3, 4} <= tested and 5 not in tested
    assert later.loc[later["claim"] == 5, "threshold_text"].str.contains("both particle sizes for 2 lattice").all()
    # the structure sweep's first part: every model, but only transfers between the sizes of a lattice
    sizes_first = A.assess_claims(None, sources_table(domains[:6], same_lattice_only=True))
    tested = set(sizes_first.loc[sizes_first["verdict"] != V.UNTESTED, "claim"])
    assert {3, 5} <= tested and 4 not in tested
    assert sizes_first.loc[sizes_first["claim"] == 4, "threshold_text"].str.contains("from 0 pretraining lattice").all()


def _sized_results(sizes, rng):
    """Fake tlsize results: the loss and its spread between models shrink as the set grows."""
    runs, evals = [], []
    for n in sizes:
        r, e = fake_results(DOSES, lambda a, d, s: 0.3, lambda a, b, f, s, n=n: 0.1 + 1 / n + rng.normal(0, 2 / n**2),
                            freezing=("none",), seeds=(0, 1), series="tlsize", rng=rng)
        runs.append(r.assign(transfer_images=n, run_id=r["run_id"] + f"|n{n}"))
        evals.append(e.assign(run_id=e["run_id"] + f"|n{n}"))
    return pd.concat(runs, ignore_index=True), pd.concat(evals, ignore_index=True)


def test_transfer_size_claim_comes_from_the_tlsize_series():
    rng = np.random.default_rng(3)
    table = A.assess_claims(None, None, tlsize=_sized_results((8, 16, 32, 64), rng))
    v = table.set_index(["claim", "part", "metric"])["verdict"]
    assert v[(6, "a", "loss")] == V.HOLDS and v[(6, "a", "dice")] == V.HOLDS  # more data, better models
    assert v[(6, "f", "loss")] == V.HOLDS  # and less spread between them
    early = A.assess_claims(None, None, tlsize=_sized_results((8,), rng))
    row = early[early["claim"] == 6].iloc[0]
    assert row["verdict"] == V.UNTESTED and "1 transfer-set size(s) so far" in row["threshold_text"]
    none = A.assess_claims(None, None)
    assert none.loc[none["claim"] == 6, "threshold_text"].tolist() == ["no tlsize results yet"]


def test_partial_results_of_a_running_study_do_not_break_the_claims():
    rng = np.random.default_rng(5)
    runs, evals = fake_results(DOSES, lambda a, d, s: 0.5 - 0.08 * LEVEL[a], lambda a, b, f, s: 0.3 - 0.05 * LEVEL[b],
                               noise=0.002, rng=rng, seeds=(0,))
    keep = runs.iloc[: len(runs) // 3]  # the first third of the grid has finished
    evals = evals[evals["run_id"].isin(keep["run_id"])]
    table = A.assess_claims((keep.reset_index(drop=True), evals.reset_index(drop=True)), None)
    allowed = set(V.VERDICTS)
    assert set(table["verdict"]) <= allowed and set(V.claim_verdicts(table)) <= allowed
    assert (table["claim"] == 1).sum() == 6  # three parts, both metrics, even with one seed


# --------------------------------------------------------------------------- the pages themselves


def _store(root, series, runs, evals):
    from hrtem_tl.results import append_records

    hist = [{"run_id": r, "profile": "cpu", "stage": st, "epoch": e, "train_loss": 0.3 / e, "val_loss": 0.2 / e,
             "val_dice": 1 - 0.2 / e, "lr": 1e-3} for r in runs["run_id"] for st in ("pretrain", "transfer")
            for e in (1, 2, 3)]
    runs = runs.assign(pretrain_images=64, val_images=16, pretrain_epochs=3, transfer_epochs=3, pretrain_steps=4,
                       transfer_steps=4, batch_size=4, crop=64, best_epoch_pretrain=3, best_epoch_transfer=2)
    append_records(root, series, {"runs": runs.to_dict("records"), "evaluations": evals.to_dict("records"),
                                  "histories": hist})


@pytest.mark.slow
def test_every_page_executes_on_small_results(tmp_path, monkeypatch):
    """The notebooks of content/ run end to end on hand-made results of both series."""
    import shutil
    from pathlib import Path

    from hrtem_tl.notebooks import execute

    root = Path(__file__).resolve().parents[1]
    pages = tmp_path / "content"
    shutil.copytree(root / "content", pages)
    rng = np.random.default_rng(6)
    _store(tmp_path / "results", "noise", *fake_results(
        DOSES, lambda a, d, s: 0.4 - 0.05 * LEVEL[a], lambda a, b, f, s: 0.3 - 0.05 * LEVEL[b], noise=0.01, rng=rng))
    domains = ["Cu_small", "Cu_large", "Si_small", "Si_large", "CdSe_small", "CdSe_large"]
    _store(tmp_path / "results", "structure", *fake_results(
        domains, lambda a, d, s: 0.2 + 0.1 * (a != d), lambda a, b, f, s: 0.15, noise=0.01, rng=rng, seeds=(0,),
        series="structure"))
    monkeypatch.setenv("HRTEM_TL_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("HRTEM_TL_EXAMPLES", str(tmp_path / "no-examples"))
    done = execute(sorted(pages.glob("*.ipynb")))
    assert len(done) == len(list((root / "content").glob("*.ipynb")))
    text = (pages / "replication.ipynb").read_text()
    assert "not yet tested" in text and "holds" in text


@pytest.mark.parametrize("sign", [1, -1])
def test_sentences_and_verdicts_follow_the_estimate_when_the_effect_is_reversed(sign):
    """Claim 1b: with low-dose models worse it holds and the sentence says "below"; with
    the effect reversed (low-dose models best) the verdict flips to refuted and so does the text."""
    rng = np.random.default_rng(11)
    runs, evals = fake_results(DOSES, lambda a, d, s: 0.3 - sign * 0.05 * LEVEL[a], lambda a, b, f, s: 0.1,
                               noise=0.002, rng=rng)
    table = A.assess_claims((runs, evals), None)
    row = table[(table["claim"] == 1) & (table["part"] == "b") & (table["metric"] == "dice")].iloc[0]
    text = V.sentence(row)
    if sign == 1:
        assert row["estimate"] < 0 and row["verdict"] == V.HOLDS
        assert "is below 0" in text and "holds" in text
    else:
        assert row["estimate"] > 0 and row["verdict"] == V.REFUTED
        assert "is above 0" in text and "is refuted" in text
    assert S.format_estimate(row["estimate"], row["lo"], row["hi"]) in text
    summary = V.claim_summary(table).loc[1]
    assert f"1b {row['verdict']}" in summary["parts"]


def test_an_interval_that_spans_the_threshold_is_inconclusive_and_says_what_it_could_detect():
    rng = np.random.default_rng(12)
    runs, evals = fake_results(DOSES, lambda a, d, s: 0.3, lambda a, b, f, s: 0.1, noise=0.02, rng=rng)
    table = A.assess_claims((runs, evals), None)
    row = table[(table["claim"] == 1) & (table["part"] == "b") & (table["metric"] == "dice")].iloc[0]
    assert row["verdict"] == V.INCONCLUSIVE and row["lo"] < 0 < row["hi"]
    assert "cannot be told apart from 0" in V.sentence(row) and f"{row['detectable']:.2g}" in V.sentence(row)


def test_the_defocus_orders_read_the_target_trend_and_the_transfer_distance(tmp_path, monkeypatch):
    """The replication page's 'where the defocus matrices part': on a full hand-made grid
    whose after-transfer loss rises with the target's defocus in one source and falls in
    the other, with 0 nm hardest and farther transfers harder in both."""
    import importlib
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "content"))
    pages = importlib.import_module("_pages")
    domains = [f"df{v}" for v in range(-25, 30, 5)]
    nm = lambda d: float(d.removeprefix("df"))  # noqa: E731
    pairs = [(a, b) for a in domains if abs(nm(a)) <= 10 for b in domains if a != b]

    def store(root, trend):
        post = lambda a, b, f, s: (0.1 + 0.01 * trend * nm(b) / 25 + 0.004 * abs(nm(a) - nm(b)) / 50  # noqa: E731
                                   + 0.2 * (nm(b) == 0))
        runs, evals = fake_results(domains, lambda a, d, s: 0.2 + 0.1 * abs(nm(a) - nm(d)) / 50, post, pairs=pairs,
                                   series="defocus", control_change=0.0)
        _store(root, "defocus", runs, evals)

    store(tmp_path, trend=-1)
    store(tmp_path / "original", trend=1)
    orders = pages.defocus_transfer_orders(tmp_path)
    assert orders["hardest target (nm)"].tolist() == [0, 0] and orders["targets"].tolist() == [10, 10]
    assert orders.loc["ours", "ρ target loss vs defocus"] == pytest.approx(-1)
    assert orders.loc["original", "ρ target loss vs defocus"] == pytest.approx(1)
    assert (orders["ρ relative loss vs distance"] > 0.5).all()
    assert orders["magnitudes"].tolist() == [5, 5] and orders["positive harder"].tolist() == [0, 5]
    # a grid that is still running gives no reading
    runs = R.read_table(tmp_path, "defocus", "runs")
    runs.iloc[:-1].to_parquet(R.table_path(tmp_path, "defocus", "runs"))
    assert pages.defocus_transfer_orders(tmp_path) is None


def test_transfer_intervals_count_pretrained_models_not_pairs():
    """The transfers of one pretrained model to several targets share its weights: claim 2
    leaves out a pretrained model with all its transfers, and the paired parts of claim 6
    average per pretraining group (domain and seed), so 5 doses x 2 seeds give 10 units
    whatever the number of targets."""
    rng = np.random.default_rng(8)
    runs, evals = fake_results(DOSES, lambda a, d, s: 0.4 - 0.05 * LEVEL[a], lambda a, b, f, s: 0.3 - 0.05 * LEVEL[b],
                               noise=0.01, rng=rng, control_change=0.0)
    noise = pd.DataFrame(A.assess_noise(runs, evals))
    assert (noise.loc[noise["claim"] == 2, "units"] == 10).all()
    assert noise.loc[noise["claim"] == 2, "df"].between(1, 5).all()  # at most 10 models in 5 doses
    training = pd.DataFrame(A.assess_training("noise", runs, evals))
    tested = training[training["verdict"] != V.UNTESTED]
    assert set(tested["part"]) >= {"b", "c", "d", "e", "g"} and (tested["units"] == 10).all()
    assert tested["note"].str.contains("of 10 pretrained models").all()


def test_paired_parts_of_one_seed_take_the_domains_as_replicates():
    """With one seed no model is repeated inside its domain: the paired parts still get an
    interval, from jackknifes that are not stratified."""
    rng = np.random.default_rng(9)
    runs, evals = fake_results(DOSES, lambda a, d, s: 0.4, lambda a, b, f, s: 0.3 - 0.05 * LEVEL[b], noise=0.01,
                               rng=rng, seeds=(0,))
    rows = pd.DataFrame(A.assess_training("noise", runs, evals))
    tested = rows[rows["part"].isin(["b", "c", "d"])]
    assert tested["lo"].notna().all() and tested["method"].str.contains("one seed: not stratified").all()


def test_structure_freezing_parts_judge_lattice_transfers_and_show_size_transfers_apart():
    """Transfers between the two particle sizes of one lattice behave differently from
    those between lattices: the paired parts of claim 6 are judged on the latter, and the
    size transfers stand beside them as context rows."""
    rng = np.random.default_rng(12)
    domains = ["Cu_small", "Cu_large", "Si_small", "Si_large", "Fe_small", "Fe_large"]
    lattice = lambda d: d.split("_")[0]  # noqa: E731
    # freezing the decoder costs 0.3 Dice on size transfers only
    post = lambda a, b, f, s: 0.2 + (0.3 if f == "decoder" and lattice(a) == lattice(b) else 0.0)  # noqa: E731
    runs, evals = fake_results(domains, lambda a, d, s: 0.3, post, noise=0.001, rng=rng, series="structure")
    rows = pd.DataFrame(A.assess_training("structure", runs, evals, metrics=("dice",)))
    b = rows[rows["part"] == "b"].set_index("primary")
    assert b.loc[True, "test"].endswith("(between lattices)") and b.loc[True, "verdict"] == V.HOLDS
    assert b.loc[False, "test"].endswith("(between the particle sizes of one lattice)")
    assert b.loc[False, "estimate"] == pytest.approx(-0.3, abs=0.01) and b.loc[False, "note"].startswith("context")


def test_claim_summary_names_the_metrics_of_each_series_apart():
    """A part that holds for one metric of one series and not for others lists each series with its own metrics."""
    rows = [("noise", "dice", V.INCONCLUSIVE), ("structure", "dice", V.HOLDS), ("structure", "loss", V.INCONCLUSIVE),
            ("noise", "loss", V.INCONCLUSIVE)]
    table = pd.DataFrame([{"claim": 6, "part": "b", "series": s, "metric": m, "verdict": v, "primary": True}
                          for s, m, v in rows])
    assert V.claim_summary(table).loc[6, "parts"] == ("6b holds (structure: dice); "
                                                      "6b inconclusive (noise: dice, loss; structure: loss)")
