"""The parquet results store and the matrices of the explorers, on hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hrtem_tl import results as R
from hrtem_tl.metrics import METRICS

SEEDS = (0, 1, 2)
# Loss of the model pretrained on ROW with seed s, evaluated on COLUMN: [s0, s1, s2].
PRE = {
    ("A", "A"): [0.1, 0.2, 0.9], ("A", "B"): [1.0, 2.0, 6.0],
    ("B", "A"): [3.0, 4.0, 5.0], ("B", "B"): [0.3, 0.3, 0.6],
}
# Loss after transfer ROW > COLUMN on COLUMN, per freezing mode: [s0, s1, s2].
POST = {
    ("A", "B", "none"): [0.5, 0.7, 0.9], ("A", "B", "encoder"): [0.6, 1.6, 2.0],
    ("B", "A", "none"): [0.2, 0.4, 0.6], ("B", "A", "encoder"): [1.0, 1.0, 4.0],
}


def run_row(run_id: str, **values) -> dict:
    row = {c: (0.0 if t == "float64" else 0 if t == "int64" else "x") for c, t in R.SCHEMA["runs"].items()}
    return row | {"run_id": run_id, "profile": "cpu", "kind": "transfer"} | values


def eval_row(run_id: str, stage: str, domain: str, loss: float, profile: str = "cpu") -> dict:
    return {"run_id": run_id, "profile": profile, "stage": stage, "eval_domain": domain, "split": "test", "loss": loss,
            "dice": 1 - loss / 10, "iou": 0.5, "precision": 0.5, "recall": 0.5, "accuracy": 0.9}


def hand_made_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs A>B and B>A, freezing none and encoder, three seeds: 12 runs, 6 pretrained models.

    Every run repeats its pretrained model's evaluations (stage ``pretrain``) and holds
    its own after transfer on both domains; only the target's counts.
    """
    runs, evals = [], []
    for (a, b, freezing), values in POST.items():
        for seed, value in zip(SEEDS, values):
            rid = f"noise|{a}>{b}|{freezing}|s{seed}"
            runs.append(run_row(rid, pretrain_id=f"noise|{a}|s{seed}", series="noise", pretrain_domain=a,
                                target_domain=b, freezing=freezing, seed=seed))
            for e in ("A", "B"):
                evals.append(eval_row(rid, "pretrain", e, PRE[(a, e)][seed]))
            evals.append(eval_row(rid, "transfer", b, value))
            evals.append(eval_row(rid, "transfer", a, 99.0))  # off-target: never in the matrices
    return R.validate(pd.DataFrame(runs), "runs"), R.validate(pd.DataFrame(evals), "evaluations")


def cells(frame: pd.DataFrame) -> list[float]:
    """The 2 x 2 matrix of domains A, B, flattened row by row."""
    return frame.loc[["A", "B"], ["A", "B"]].to_numpy(dtype=float).ravel().tolist()


def flat(nested: list[list[float]]) -> list[float]:
    return [v for row in nested for v in row]


@pytest.mark.parametrize(
    "reduction,expected",
    [("median", [[0.2, 2.0], [4.0, 0.3]]), ("mean", [[0.4, 3.0], [4.0, 0.4]]),
     ("min", [[0.1, 1.0], [3.0, 0.3]]), ("max", [[0.9, 6.0], [5.0, 0.6]])],
)
def test_pretrain_matrix_counts_each_pretrained_model_once(reduction, expected):
    runs, evals = hand_made_tables()
    m = R.matrices(runs, evals, freezing={"none", "encoder"}, reduction=reduction)["pretrain"]
    assert cells(m["value"]) == pytest.approx(flat(expected))
    assert cells(m["count"]) == [3, 3, 3, 3]  # 3 seeds, though 6 runs share each row's models


def test_pretrain_quartiles():
    runs, evals = hand_made_tables()
    m = R.matrices(runs, evals, freezing=["none"])["pretrain"]
    assert m["q25"].loc["A", "B"] == pytest.approx(1.5) and m["q75"].loc["A", "B"] == pytest.approx(4.0)


@pytest.mark.parametrize(
    "freezing,reduction,expected,count",
    [
        ({"none"}, "median", [[0.2, 0.7], [0.4, 0.3]], [[3, 3], [3, 3]]),
        ({"encoder"}, "median", [[0.2, 1.6], [1.0, 0.3]], [[3, 3], [3, 3]]),
        ({"none"}, "mean", [[0.4, 0.7], [0.4, 0.4]], [[3, 3], [3, 3]]),
        # both modes: 6 models per off-diagonal cell, sorted A>B 0.5 0.6 0.7 0.9 1.6 2.0;
        # the diagonal still holds each pretrained model once
        ({"none", "encoder"}, "median", [[0.2, 0.8], [0.8, 0.3]], [[3, 6], [6, 3]]),
        ({"none", "encoder"}, "mean", [[0.4, 1.05], [7.2 / 6, 0.4]], [[3, 6], [6, 3]]),
        ({"none", "encoder"}, "min", [[0.1, 0.5], [0.2, 0.3]], [[3, 6], [6, 3]]),
        ({"none", "encoder"}, "max", [[0.9, 2.0], [4.0, 0.6]], [[3, 6], [6, 3]]),
    ],
)
def test_transfer_matrix(freezing, reduction, expected, count):
    runs, evals = hand_made_tables()
    m = R.matrices(runs, evals, freezing=freezing, reduction=reduction)["transfer"]
    assert cells(m["value"]) == pytest.approx(flat(expected))
    assert cells(m["count"]) == flat(count)


def test_other_metric_and_domain_order():
    runs, evals = hand_made_tables()
    m = R.matrices(runs, evals, freezing=["none"], metric="dice", domains=["B", "A", "C"])
    value = m["pretrain"]["value"]
    assert list(value.index) == ["B", "A", "C"] and list(value.columns) == ["B", "A", "C"]
    assert value.loc["A", "B"] == pytest.approx(1 - 2.0 / 10)
    assert value.loc["C"].isna().all() and value["C"].isna().all()  # no runs: empty cells
    assert R.as_array(value)[2] == [None, None, None]


def test_freezing_mode_without_runs_gives_empty_cells():
    runs, evals = hand_made_tables()
    m = R.matrices(runs, evals, freezing=["decoder"])
    assert m["transfer"]["value"].isna().all().all()
    assert m["pretrain"]["value"].isna().all().all()


@pytest.mark.parametrize(
    "kwargs,match",
    [({"metric": "f1"}, "unknown metric"), ({"reduction": "mode"}, "unknown reduction"),
     ({"freezing": []}, "at least one freezing mode"), ({"freezing": set()}, "at least one freezing mode")],
)
def test_bad_matrix_arguments(kwargs, match):
    runs, evals = hand_made_tables()
    with pytest.raises(ValueError, match=match):
        R.matrices(runs, evals, **({"freezing": ["none"]} | kwargs))


@settings(max_examples=30, deadline=None)
@given(
    seeds=st.integers(1, 3),
    freezing=st.sets(st.sampled_from(["none", "encoder", "decoder"]), min_size=1),
    reduction=st.sampled_from(R.REDUCTIONS),
    seed=st.integers(0, 2**31),
)
def test_matrices_against_brute_force(seeds, freezing, reduction, seed):
    """Random tables over three domains, checked cell by cell with explicit loops."""
    rng = np.random.default_rng(seed)
    domains = ["d0", "d1", "d2"]
    pre = {(a, e, s): float(rng.uniform()) for a in domains for e in domains for s in range(seeds)}
    runs, evals, post = [], [], {}
    for s in range(seeds):
        for a in domains:
            for b in domains:
                if a == b:
                    continue
                for f in ("none", "encoder", "decoder"):
                    if rng.uniform() < 0.3:
                        continue  # some runs missing
                    rid = f"x|{a}>{b}|{f}|s{s}"
                    runs.append(run_row(rid, pretrain_id=f"x|{a}|s{s}", pretrain_domain=a, target_domain=b,
                                        freezing=f, seed=s))
                    post[(a, b, f, s)] = float(rng.uniform())
                    evals += [eval_row(rid, "pretrain", e, pre[(a, e, s)]) for e in domains]
                    evals += [eval_row(rid, "transfer", e, post[(a, b, f, s)] if e == b else 5.0) for e in domains]
    if not runs:
        return
    runs_df, evals_df = R.validate(pd.DataFrame(runs), "runs"), R.validate(pd.DataFrame(evals), "evaluations")
    m = R.matrices(runs_df, evals_df, freezing=freezing, reduction=reduction, domains=domains)
    reduce = {"median": np.median, "mean": np.mean, "min": np.min, "max": np.max}[reduction]
    models = {(a, s) for (a, b, f, s) in post if f in freezing}  # pretrained models with a chosen run
    for a in domains:
        for e in domains:
            values = [pre[(a, e, s)] for (a2, s) in models if a2 == a]
            got = m["pretrain"]["value"].loc[a, e]
            if values:
                assert got == pytest.approx(reduce(values))
                assert m["pretrain"]["count"].loc[a, e] == len(values)
            else:
                assert np.isnan(got)
            if a == e:
                expected = values
            else:
                expected = [v for (a2, b, f, s), v in post.items() if a2 == a and b == e and f in freezing]
            got = m["transfer"]["value"].loc[a, e]
            if expected:
                assert got == pytest.approx(reduce(expected))
                assert m["transfer"]["count"].loc[a, e] == len(expected)
                assert m["transfer"]["q25"].loc[a, e] == pytest.approx(np.quantile(expected, 0.25))
                assert m["transfer"]["q75"].loc[a, e] == pytest.approx(np.quantile(expected, 0.75))
            else:
                assert np.isnan(got)


# -- the store ----------------------------------------------------------------------------------

def records(run_id: str, loss: float) -> dict[str, list[dict]]:
    return {
        "runs": [run_row(run_id, pretrain_id="p", series="noise", seed=0)],
        "evaluations": [eval_row(run_id, stage, d, loss) for stage in ("pretrain", "transfer") for d in ("A", "B")],
        "histories": [{"run_id": run_id, "profile": "cpu", "stage": "transfer", "epoch": e, "train_loss": loss,
                       "val_loss": loss, "val_dice": 0.5, "lr": 1e-4} for e in (1, 2)],
    }


def test_append_replaces_rows_with_the_same_key(tmp_path):
    R.append_records(tmp_path, "noise", records("r1", 0.5))
    R.append_records(tmp_path, "noise", records("r2", 0.6))
    R.append_records(tmp_path, "noise", records("r1", 0.7))  # re-run of r1
    tables = R.read_results(tmp_path, "noise")
    assert sorted(tables["runs"]["run_id"]) == ["r1", "r2"]
    for table, frame in tables.items():
        assert not frame.duplicated(R.KEYS[table]).any(), table
    ev = tables["evaluations"]
    assert len(ev) == 8
    assert set(ev.loc[ev["run_id"] == "r1", "loss"]) == {0.7}
    assert set(ev.loc[ev["run_id"] == "r2", "loss"]) == {0.6}
    assert len(tables["histories"]) == 4
    assert R.finished_runs(tmp_path, "noise", "cpu") == {"r1", "r2"}
    assert R.finished_runs(tmp_path, "noise", "gpu") == set()
    assert R.finished_runs(tmp_path, "structure", "cpu") == set()
    assert not list(tmp_path.rglob("*.tmp"))


def test_same_run_of_another_profile_is_kept(tmp_path):
    R.append_records(tmp_path, "noise", records("r1", 0.5))
    other = records("r1", 0.9)
    for rows in other.values():
        for row in rows:
            row["profile"] = "gpu"
    R.append_records(tmp_path, "noise", other)
    runs = R.read_table(tmp_path, "noise", "runs")
    assert sorted(runs["profile"]) == ["cpu", "gpu"]


def test_files_are_plain_parquet(tmp_path):
    import duckdb

    R.append_records(tmp_path, "noise", records("r1", 0.5))
    R.append_records(tmp_path, "noise", records("r2", 0.25))
    path = R.table_path(tmp_path, "noise", "evaluations")
    frame = pd.read_parquet(path)
    assert list(frame.columns)[:4] == ["run_id", "profile", "stage", "eval_domain"]
    assert set(METRICS) <= set(frame.columns)
    con = duckdb.connect()
    mean = con.execute(f"SELECT avg(loss) FROM read_parquet('{path}') WHERE stage = 'transfer'").fetchall()[0][0]
    assert mean == pytest.approx(0.375)
    runs = con.execute(f"SELECT count(*) FROM '{R.table_path(tmp_path, 'noise', 'runs')}'").fetchall()[0][0]
    assert runs == 2


def test_missing_file(tmp_path):
    with pytest.raises(R.ResultsError, match="missing"):
        R.read_table(tmp_path, "noise", "runs")


def test_corrupt_file(tmp_path):
    path = R.table_path(tmp_path, "noise", "runs")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(R.ResultsError, match="cannot be read"):
        R.read_table(tmp_path, "noise", "runs")


def test_missing_column(tmp_path):
    R.append_records(tmp_path, "noise", records("r1", 0.5))
    path = R.table_path(tmp_path, "noise", "runs")
    pd.read_parquet(path).drop(columns=["seed", "freezing"]).to_parquet(path)
    with pytest.raises(R.ResultsError, match="missing columns freezing, seed"):
        R.read_table(tmp_path, "noise", "runs")


def test_wrong_column_type(tmp_path):
    R.append_records(tmp_path, "noise", records("r1", 0.5))
    path = R.table_path(tmp_path, "noise", "runs")
    frame = pd.read_parquet(path)
    frame["seed"] = "zero"
    frame.to_parquet(path)
    with pytest.raises(R.ResultsError, match="wrong type"):
        R.read_table(tmp_path, "noise", "runs")


def test_malformed_new_rows_are_refused(tmp_path):
    bad = records("r1", 0.5)
    del bad["runs"][0]["seed"]
    with pytest.raises(R.ResultsError, match="seed"):
        R.append_records(tmp_path, "noise", bad)


def test_repeated_calls_on_the_same_frames_agree_with_fresh_frames():
    """matrices() caches its join per pair of frames; the cache must never change an answer."""
    runs, evals = hand_made_tables()
    for freezing in (["none"], ["encoder"], ["none", "encoder"], ["decoder"]):
        for reduction in R.REDUCTIONS:
            warm = R.matrices(runs, evals, freezing=freezing, reduction=reduction, metric="dice")
            cold = R.matrices(runs.copy(), evals.copy(), freezing=freezing, reduction=reduction, metric="dice")
            for stage in ("pretrain", "transfer"):
                for key in ("value", "count", "q25", "q75"):
                    pd.testing.assert_frame_equal(warm[stage][key], cold[stage][key])
    # a grown table (a new run) is joined again, not served from the cache
    more_runs = pd.concat([runs, R.validate(pd.DataFrame([run_row(
        "noise|A>B|decoder|s0", pretrain_id="noise|A|s0", series="noise", pretrain_domain="A", target_domain="B",
        freezing="decoder", seed=0)]), "runs")], ignore_index=True)
    more_evals = pd.concat([evals, R.validate(pd.DataFrame([
        eval_row("noise|A>B|decoder|s0", "pretrain", "A", 0.1), eval_row("noise|A>B|decoder|s0", "pretrain", "B", 1.0),
        eval_row("noise|A>B|decoder|s0", "transfer", "B", 0.05)]), "evaluations")], ignore_index=True)
    m = R.matrices(more_runs, more_evals, freezing=["decoder"])["transfer"]
    assert m["value"].loc["A", "B"] == pytest.approx(0.05) and m["count"].loc["A", "B"] == 1
    assert m["value"].loc["A", "A"] == pytest.approx(0.1) and m["count"].loc["A", "A"] == 1


def test_a_diverged_model_counts_but_does_not_poison_the_statistics():
    runs, evals = hand_made_tables()
    rid = "noise|A>B|none|s2"
    evals.loc[(evals["run_id"] == rid) & (evals["stage"] == "transfer") & (evals["eval_domain"] == "B"),
              "loss"] = np.nan
    for reduction, expected in (("median", 0.6), ("mean", 0.6), ("min", 0.5), ("max", 0.7)):
        m = R.matrices(runs.copy(), evals.copy(), freezing=["none"], reduction=reduction)["transfer"]
        assert m["value"].loc["A", "B"] == pytest.approx(expected)
        assert m["count"].loc["A", "B"] == 3
