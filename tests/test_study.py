"""Runs and sweeps on the tiny series: specs, pretrained models, run_study, resume, Dask."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hrtem_testutils import set_torch_threads
from hrtem_tl import experiment as E
from hrtem_tl import results as R
from hrtem_tl.series import DOSES, FREEZING, Series
from hrtem_tl.study import plan, run_study
from hrtem_tl.train import Precision, evaluate

set_torch_threads()
FP32 = Precision("cpu", None)


# -- the grid -----------------------------------------------------------------------------------

def test_grid_sizes(tiny_profile):
    from hrtem_tl.config import load_profile

    noise = Series("noise", load_profile("smoke"))
    assert len(noise.transfer_pairs()) == 20
    controls = [s for s in plan(noise) if s.kind == "control"]
    assert len(plan(noise)) == (20 * 3 + 5) * len(noise.seeds)
    assert [(s.pretrain_domain, s.freezing) for s in controls] == [(f"dose{d}", "none") for d in DOSES]
    structure = Series("structure", load_profile("paper"))
    assert len(structure.domains) == 18
    assert sum(s.kind == "transfer" for s in plan(structure)) == 18 * 17 * 3 * 3  # 2,754 models
    assert sum(s.kind == "control" for s in plan(structure)) == 18 * 3
    assert not [s for s in plan(Series("tlsize", load_profile("cpu"))) if s.kind == "control"]
    defocus = Series("defocus", load_profile("paper"))
    assert len(defocus.pretrain_domains) == 5 and len(defocus.domains) == 11
    assert len(defocus.transfer_pairs()) == 5 * 10
    tiny = Series("defocus", tiny_profile)
    assert [s.run_id for s in plan(tiny, ("encoder",))] == ["defocus|df-5>df-5|none|s0", "defocus|df-5>df0|encoder|s0",
                                                           "defocus|df0>df0|none|s0", "defocus|df0>df-5|encoder|s0"]


def test_structure_plan_runs_the_size_transfers_first_then_model_by_model():
    from hrtem_tl.config import load_profile

    specs = [s for s in plan(Series("structure", load_profile("cpu"))) if s.kind == "transfer" and s.seed == 0]
    same_lattice = [s.pretrain_domain.split("_")[0] == s.target_domain.split("_")[0] for s in specs]
    early = 18 * len(FREEZING)  # small-to-large and large-to-small of 9 lattices
    assert all(same_lattice[:early]) and not any(same_lattice[early:])
    rest = [s.pretrain_domain for s in specs[early:]]
    assert rest == sorted(rest, key=rest.index)  # each model's runs are contiguous
    assert len(set(rest)) == 9 and len(rest) == 9 * 8 * len(FREEZING)


def test_reduced_structure_pairs():
    from hrtem_tl.config import load_profile

    pairs = Series("structure", load_profile("cpu")).transfer_pairs()
    for a, b in pairs:
        (fa, sa), (fb, sb) = a.split("_"), b.split("_")
        assert (sa == sb == "small") or fa == fb
    assert len(pairs) == 9 * 8 + 9 * 2


def test_related_transfer_evaluation_domains():
    from dataclasses import replace

    from hrtem_tl.config import load_profile

    cpu = load_profile("cpu")
    related = Series("structure", cpu)
    assert sorted(related.transfer_eval_domains("Cu_small", "Fe_small")) == ["Cu_small", "Fe_large", "Fe_small"]
    assert sorted(related.transfer_eval_domains("Si_small", "Si_large")) == ["Si_large", "Si_small"]
    every = Series("structure", replace(cpu, study=replace(cpu.study, structure_transfer_eval="all")))
    assert len(every.transfer_eval_domains("Cu_small", "Fe_small")) == 18
    noise = Series("noise", cpu)  # the setting belongs to the structure series only
    assert noise.transfer_eval_domains("dose30", "dose600") == [d.name for d in noise.domains]


def test_config_hash_covers_only_the_series_settings():
    from dataclasses import replace

    from hrtem_tl.config import load_profile

    cpu = load_profile("cpu")
    changed = replace(cpu, study=replace(cpu.study, structure_val_images=5, structure_transfer_eval="all"))
    assert changed.config_hash("noise", "x") == cpu.config_hash("noise", "x")
    assert changed.config_hash("structure", "x") != cpu.config_hash("structure", "x")
    assert cpu.config_hash("noise", "a") != cpu.config_hash("noise", "b")
    assert replace(cpu, training=replace(cpu.training, crop=64)).config_hash("noise") != cpu.config_hash("noise")
    assert replace(cpu, description="reworded").config_hash("noise") == cpu.config_hash("noise")


def test_bad_study_settings_are_named():
    from hrtem_tl.config import StudySettings

    with pytest.raises(ValueError, match="structure_transfer_eval"):
        StudySettings(structure_transfer_eval="some")
    with pytest.raises(ValueError, match="structure_pairs"):
        StudySettings(structure_pairs="half")
    with pytest.raises(ValueError, match="tlsize_sizes must be positive"):
        StudySettings(tlsize_sizes=(8, 0))


@pytest.mark.parametrize(
    "pretrain,target,freezing,match",
    [
        ("df-5", "df15", "none", "unknown domain 'df15'"),
        ("dose30", "df0", "none", "unknown domain 'dose30'"),
        ("df0", "df0", "decoder", "a control run"),
        ("df-5", "df0", "everything", "unknown freezing mode 'everything'"),
        ("df-5", "df0", 3, "a transfer set of 3 images is impossible: domain 'df0' has 2 training images"),
    ],
)
def test_check_spec_errors(tiny_series, pretrain, target, freezing, match):
    size = freezing if isinstance(freezing, int) else None  # the last case asks for too many images
    with pytest.raises(ValueError, match=match):
        E.check_spec(tiny_series, E.RunSpec("defocus", pretrain, target, "none" if size else freezing, 0, size))


def test_run_ids():
    spec = E.RunSpec("noise", "dose30", "dose600", "encoder", 2)
    assert spec.run_id == "noise|dose30>dose600|encoder|s2"
    assert spec.pretrain_id == "noise|dose30|s2"
    sized = E.RunSpec("tlsize", "dose30", "dose600", "none", 0, 16)
    assert sized.run_id == "tlsize|dose30>dose600|none|s0|n16" and sized.pretrain_id == "tlsize|dose30|s0"


def test_tlsize_grid_varies_the_transfer_set_size_with_full_fine_tuning():
    from hrtem_tl.config import load_profile

    series = Series("tlsize", load_profile("cpu"))
    specs = plan(series)
    assert len(specs) == 20 * len(series.transfer_sizes) * len(series.seeds)
    assert {s.freezing for s in specs} == {"none"} and {s.transfer_images for s in specs} == {8, 16, 32, 64}
    assert len({s.run_id for s in specs}) == len(specs)
    assert [d.name for d in series.domains] == [d.name for d in Series("noise", load_profile("cpu")).domains]
    assert {s.transfer_images for s in plan(Series("noise", load_profile("cpu")))} == {None}


def test_run_transfer_uses_the_run_transfer_set_size(tiny_data, tiny_profile, tmp_path):
    spec = E.RunSpec("defocus", "df-5", "df0", "none", 0, 1)
    rec = E.run_transfer(tiny_profile, spec, data_root=tiny_data, checkpoints=tmp_path, precision=FP32)
    assert rec.run["run_id"] == spec.run_id and rec.run["transfer_images"] == 1


# -- one run ------------------------------------------------------------------------------------

def test_pretrained_model_is_reproducible_and_cached(tiny_data, tiny_series, tmp_path):
    """The same (domain, seed) gives the same weights whatever ran before in the process."""
    a, meta_a = E.pretrained(tiny_series, "df0", 0, data_root=tiny_data, checkpoints=tmp_path / "a", precision=FP32)
    torch.randn(1000)  # move the global generator, as other work in a worker would
    b, meta_b = E.pretrained(tiny_series, "df0", 0, data_root=tiny_data, checkpoints=tmp_path / "b", precision=FP32)
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va.cpu(), vb.cpu()), key
    assert meta_a["stage"]["history"] == meta_b["stage"]["history"]
    assert set(meta_a["evaluations"]) == {"df-5", "df0"}
    # a second call loads the checkpoint instead of training
    files = list((tmp_path / "a").rglob("*.safetensors"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    c, meta_c = E.pretrained(tiny_series, "df0", 0, data_root=tiny_data, checkpoints=tmp_path / "a", precision=FP32)
    assert files[0].stat().st_mtime_ns == mtime
    assert meta_c["stage"] == meta_a["stage"]
    for (key, va), vc in zip(a.state_dict().items(), c.state_dict().values()):
        assert torch.equal(va.cpu(), vc.cpu()), key


def test_run_transfer_records(tiny_data, tiny_profile, tmp_path):
    spec = E.RunSpec("defocus", "df-5", "df0", "encoder", 0)
    rec = E.run_transfer(tiny_profile, spec, data_root=tiny_data, checkpoints=tmp_path, precision=FP32)
    run = rec.run
    assert run["run_id"] == spec.run_id and run["pretrain_id"] == spec.pretrain_id
    assert run["params_total"] == 14_322_082
    assert 0.15 * 14_322_082 < run["params_trainable"] < 0.3 * 14_322_082  # the encoder (~78 %) frozen
    assert run["precision"] == "fp32" and run["transfer_images"] == 2
    assert {(e["stage"], e["eval_domain"]) for e in rec.evaluations} == {
        (s, d) for s in ("pretrain", "transfer") for d in ("df-5", "df0")}
    assert len(rec.histories) == 2  # one epoch per stage
    # rows fit the schema
    R.validate(pd.DataFrame([run]), "runs")
    R.validate(pd.DataFrame(rec.evaluations), "evaluations")
    R.validate(pd.DataFrame(rec.histories), "histories")


@pytest.mark.parametrize("target, transfer_split", [("df0", "transfer"), ("df-5", "train")])
def test_run_transfer_selects_on_val_reports_on_test_and_transfers_on_unseen_scenes(
        tiny_data, tiny_profile, tmp_path, monkeypatch, target, transfer_split):
    """The protocol's wiring: each stage trains on its split, selects on val, and every
    stored evaluation is on test (a control run, df-5 > df-5, trains on its own scenes)."""
    loads, stages = [], []
    real_data, real_stage = E.domain_data, E.train_stage

    def spy_data(profile, series, domain, split, root=None, limit=None):
        loads.append((domain, split))
        return real_data(profile, series, domain, split, root, limit=limit)

    def spy_stage(model, train, val, **kwargs):
        stages.append((train, val))
        return real_stage(model, train, val, **kwargs)

    monkeypatch.setattr(E, "domain_data", spy_data)
    monkeypatch.setattr(E, "train_stage", spy_stage)
    spec = E.RunSpec("defocus", "df-5", target, "none", 0)
    rec = E.run_transfer(tiny_profile, spec, data_root=tiny_data, checkpoints=tmp_path, precision=FP32)
    assert rec.run["kind"] == ("control" if target == "df-5" else "transfer")
    expected = [("df-5", "train"), ("df-5", "val"), (target, transfer_split), (target, "val")]
    assert [(d, s) for d, s in loads if s != "test"] == expected
    assert {d for d, s in loads if s == "test"} == {"df-5", "df0"}
    for (train, val), (domain, split) in zip(stages, [("df-5", "train"), (target, transfer_split)]):
        assert np.array_equal(train[0], real_data(tiny_profile, "defocus", domain, split, tiny_data,
                                                  limit=len(train[0]))[0])
    for (_, val), domain in zip(stages, ["df-5", target]):
        assert np.array_equal(val[0], real_data(tiny_profile, "defocus", domain, "val", tiny_data)[0])
    assert {e["split"] for e in rec.evaluations} == {"test"}
    pre = {e["eval_domain"]: e["loss"] for e in rec.evaluations if e["stage"] == "pretrain"}
    model, _ = E.pretrained(Series("defocus", tiny_profile), "df-5", 0, data_root=tiny_data, checkpoints=tmp_path,
                            precision=FP32)
    test = real_data(tiny_profile, "defocus", "df0", "test", tiny_data)
    assert pre["df0"] == pytest.approx(evaluate(model, *test, FP32)["loss"], rel=1e-5)


# -- sweeps -------------------------------------------------------------------------------------

def _tables(results: Path, series: str = "defocus") -> dict[str, pd.DataFrame]:
    return R.read_results(results, series)


def _assert_complete(results: Path, run_ids: set[str]) -> None:
    tables = _tables(results)
    assert sorted(tables["runs"]["run_id"]) == sorted(run_ids)  # every run exactly once
    for table, frame in tables.items():
        assert not frame.duplicated(R.KEYS[table]).any(), table
    ev = tables["evaluations"]
    assert len(ev) == len(run_ids) * 2 * 2  # 2 stages x 2 evaluated domains
    assert set(ev["run_id"]) == run_ids


@pytest.fixture(scope="module")
def local_study(tiny_data, tiny_series, tmp_path_factory):
    """The tiny grid with freezing encoder and none (4 runs, 2 pretrained models), run locally."""
    import shutil

    root = tmp_path_factory.mktemp("local_study")
    shutil.copytree(tiny_data, root / "datasets")
    kwargs = dict(results_root=root / "results", data_root=root / "datasets", checkpoints=root / "ckpt",
                  freezing=("encoder", "none"), progress=False)
    summary = run_study(tiny_series, **kwargs)
    return summary, kwargs


def test_run_study_stores_each_run_once_and_skips_on_rerun(local_study, tiny_series):
    first, kwargs = local_study
    results = kwargs["results_root"]
    planned = {s.run_id for s in plan(tiny_series, ("encoder", "none"))}
    assert first["runs"] == 6 and first["new"] == 6 and first["skipped"] == 0  # 4 transfers, 2 controls
    _assert_complete(results, planned)
    runs = _tables(results)["runs"]
    # two runs share each pretrained model: one checkpoint per pretraining domain
    assert len(list(kwargs["checkpoints"].rglob("*.safetensors"))) == 2
    assert runs.groupby("pretrain_id")["best_epoch_pretrain"].nunique().eq(1).all()
    stamp = R.table_path(results, "defocus", "runs").stat().st_mtime_ns
    again = run_study(tiny_series, **kwargs)
    assert again["new"] == 0 and again["skipped"] == 6
    assert R.table_path(results, "defocus", "runs").stat().st_mtime_ns == stamp


def test_run_study_limit_slices_a_sweep(local_study, tiny_series, tmp_path):
    _, kwargs = local_study
    import shutil

    results = tmp_path / "results"
    shutil.copytree(kwargs["results_root"], results)
    sliced = run_study(tiny_series, **(kwargs | {"results_root": results, "freezing": FREEZING, "limit": 1}))
    assert sliced["runs"] == 8 and sliced["new"] == 1 and sliced["skipped"] == 6
    assert len(_tables(results)["runs"]) == 7


def test_sweep_finishes_one_pretrained_model_before_the_next(data_copy, tiny_series, tmp_path):
    """Stopped part-way, a sweep leaves whole matrix rows and has trained only the models they need."""
    ckpt = tmp_path / "ckpt"
    summary = run_study(tiny_series, results_root=tmp_path / "results", data_root=data_copy, checkpoints=ckpt,
                        limit=len(FREEZING) + 1, progress=False)
    runs = _tables(tmp_path / "results")["runs"]
    assert summary["new"] == len(FREEZING) + 1  # the model's control run and its transfers
    assert set(runs["pretrain_domain"]) == {"df-5"}
    assert sorted(runs.loc[runs["kind"] == "transfer", "freezing"]) == sorted(FREEZING)
    assert runs.loc[runs["kind"] == "control", "target_domain"].tolist() == ["df-5"]
    assert len(list(ckpt.rglob("*.safetensors"))) == 1


def test_run_study_rejects_bad_arguments_before_simulating(tiny_series, tmp_path):
    for kwargs, match in [({"executor": "slurm"}, "unknown executor"), ({"workers": 0}, "at least 1"),
                          ({"freezing": ("all",)}, "unknown freezing"), ({"freezing": ()}, "freezing")]:
        with pytest.raises(ValueError, match=match):
            run_study(tiny_series, data_root=tmp_path / "data", results_root=tmp_path / "r",
                      checkpoints=tmp_path / "c", progress=False, **kwargs)
    assert not (tmp_path / "data").exists()


def test_killed_study_resumes_and_stores_each_run_once(data_copy, tiny_series, profiles_file, tmp_path):
    """SIGKILL a ``hrtem-tl study`` after its first stored run, start it again, check the tables."""
    results, ckpt = tmp_path / "results", tmp_path / "ckpt"
    exe = os.path.join(os.path.dirname(sys.executable), "hrtem-tl")
    cmd = [exe, "study", "defocus", "--profiles", str(profiles_file), "--profile", "tiny", "--data", str(data_copy),
           "--results", str(results), "--checkpoints", str(ckpt)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    runs_file = R.table_path(results, "defocus", "runs")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        stored = 0
        while time.monotonic() < deadline and proc.poll() is None:
            if runs_file.exists():
                try:
                    stored = len(pd.read_parquet(runs_file))
                except Exception:  # noqa: BLE001 - a file being replaced
                    stored = 0
                if stored >= 1:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, f"the study ended before it could be killed: {proc.stderr.read()[-2000:]}"
        assert stored >= 1, "no run stored in time"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    planned = {s.run_id for s in plan(tiny_series)}
    killed_at = len(pd.read_parquet(runs_file))
    assert 1 <= killed_at < len(planned)
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    _assert_complete(results, planned)
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["skipped"] == killed_at  # the finished runs were not repeated
    assert summary["new"] == len(planned) - killed_at


def test_dask_executor_matches_local(local_study, tiny_series, tmp_path):
    """A LocalCluster on loopback with two workers runs the same grid as the local executor."""
    pytest.importorskip("distributed")
    _, kwargs = local_study
    dask = run_study(tiny_series, **(kwargs | {"executor": "dask", "workers": 2, "results_root": tmp_path / "dask"}))
    assert dask["new"] == 6
    ids = {s.run_id for s in plan(tiny_series, ("encoder", "none"))}
    _assert_complete(tmp_path / "dask", ids)
    keys = ["run_id", "stage", "eval_domain"]
    local = _tables(kwargs["results_root"])["evaluations"]
    a = local[local["run_id"].isin(ids)].sort_values(keys)
    b = _tables(tmp_path / "dask")["evaluations"].sort_values(keys)
    assert a[keys].to_numpy().tolist() == b[keys].to_numpy().tolist()
    # same pretrained checkpoints, same seeds, fp32: the pretrain-stage rows agree
    pre_a, pre_b = a[a["stage"] == "pretrain"], b[b["stage"] == "pretrain"]
    assert pre_a["loss"].to_numpy() == pytest.approx(pre_b["loss"].to_numpy(), rel=1e-4)
    # and so do the transfer runs (same seed, one thread each)
    post_a, post_b = a[a["stage"] == "transfer"], b[b["stage"] == "transfer"]
    assert post_a["loss"].to_numpy() == pytest.approx(post_b["loss"].to_numpy(), rel=1e-3)


def test_a_sweep_refuses_stale_stored_runs_before_simulating(local_study, tiny_series, tmp_path):
    """Runs stored under other settings stop the sweep with a message saying how to move them aside."""
    import shutil
    from dataclasses import replace

    _, kwargs = local_study
    results = tmp_path / "results"
    shutil.copytree(kwargs["results_root"], results)
    before = {t: R.table_path(results, "defocus", t).read_bytes() for t in R.TABLES}
    profile = tiny_series.profile
    edited = Series("defocus", replace(profile, training=replace(profile.training, lr_transfer=3e-4)))
    with pytest.raises(R.StaleResultsError, match="other settings.*move the folder aside"):
        run_study(edited, **(kwargs | {"results_root": results, "data_root": tmp_path / "no-data"}))
    assert not (tmp_path / "no-data").exists()  # refused before any simulation
    assert {t: R.table_path(results, "defocus", t).read_bytes() for t in R.TABLES} == before  # nothing lost
    # the projection says so too (scripts/run-cpu-studies.sh then re-runs the series in data/results-next)
    from hrtem_tl.projection import projection

    stale = projection(edited, results)
    assert stale["pending"] == stale["runs"] and "other settings" in stale["stale"]
    assert projection(tiny_series, results)["stale"] is None


def test_a_sweep_goes_on_at_the_precision_of_its_stored_runs(local_study, tiny_series, tmp_path, monkeypatch):
    """auto: stored runs that match the settings at their precision keep it (a sweep begun on a
    bf16 machine is not silently continued in fp32, nor the reverse); stale ones do not; bf16 on
    a CPU that would emulate it is refused before any simulation, and nothing stored is touched."""
    import shutil

    from hrtem_tl import study as St
    from hrtem_tl.projection import projection

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU's choice, on any machine
    _, kwargs = local_study
    results = tmp_path / "results"
    shutil.copytree(kwargs["results_root"], results)
    mixed = tiny_series.profile.training.mixed_precision  # the profile may ask for fp32 whatever the CPU
    assert St.sweep_precision(tiny_series, tmp_path / "none").name == Precision.choose(mixed).name
    assert St.sweep_precision(tiny_series, results, "fp32").name == "fp32"
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        St.sweep_precision(tiny_series, results, "fp8")
    stored = St.sweep_precision(tiny_series, results).name
    other = {"fp32": "bf16", "bf16": "fp32"}[stored]
    assert stored == R.read_table(results, "defocus", "runs")["precision"].iloc[0]
    runs = R.read_table(results, "defocus", "runs")
    runs["precision"] = other
    runs["config_hash"] = E.run_config_hash(tiny_series.profile, "defocus", Precision.named(other))
    runs.to_parquet(R.table_path(results, "defocus", "runs"))
    assert St.sweep_precision(tiny_series, results).name == other  # the stored runs' precision, not the machine's
    assert projection(tiny_series, results)["precision"] == other
    runs["config_hash"] = "0123456789abcdef"  # runs of other settings: the machine's best
    runs["precision"] = "bf16"
    runs.to_parquet(R.table_path(results, "defocus", "runs"))
    assert St.sweep_precision(tiny_series, results).name == Precision.choose(mixed).name
    monkeypatch.setattr(St, "bf16_supported", lambda: False)
    assert "no native bf16" in projection(tiny_series, results, precision="bf16")["refused"]  # --plan says so
    assert projection(tiny_series, results, precision="fp32")["refused"] is None
    before = R.table_path(results, "defocus", "runs").read_bytes()
    with pytest.raises(ValueError, match="no native bf16"):
        run_study(tiny_series, **(kwargs | {"results_root": results, "data_root": tmp_path / "no-data",
                                            "precision": "bf16"}))
    assert not (tmp_path / "no-data").exists() and R.table_path(results, "defocus", "runs").read_bytes() == before


def _planned(profile, series: str) -> set[str] | None:
    from hrtem_tl.series import Series
    from hrtem_tl.study import plan

    try:
        return {spec.run_id for spec in plan(Series(series, profile))}
    except ValueError:  # a setting no series can run with (an unknown domain name)
        return None


def test_config_hash_changes_with_every_run_setting_and_no_grid_setting():
    """Each single setting changes the hash of exactly the series whose runs it affects."""
    from dataclasses import fields, replace

    from hrtem_tl.config import GRID_FIELDS, load_profile

    cpu = load_profile("cpu")
    every = ("noise", "structure", "defocus", "tlsize", "baseline")
    for section in ("simulation", "data", "training", "study"):
        settings = getattr(cpu, section)
        for f in fields(settings):
            value = getattr(settings, f.name)
            if f.name == "baseline_pairs":
                new = value + (("df0", "df5"),)  # one more mixture pair
            elif isinstance(value, bool):
                new = not value
            elif isinstance(value, (int, float)):
                new = value + 1
            elif isinstance(value, tuple) and value and all(isinstance(v, int) for v in value):
                new = value + (max(value) + 1,)  # one more seed or set size
            elif isinstance(value, tuple):
                new = value + value[-1:] if value else (1,)
            elif value is None:
                new = (7,) if f.name.endswith(("_seeds", "_sizes")) else 7 if f.name.endswith("_images") else ("x",)
            else:
                new = {"adapt": "fixed", "fixed": "adapt", "all": "reduced", "reduced": "all", "related": "all"}.get(
                    value, "other")
            changed = replace(cpu, **{section: replace(settings, **{f.name: new})})
            moved = {s for s in every if changed.config_hash(s) != cpu.config_hash(s)}
            # a grid setting chooses which runs a sweep plans (judged by the plan itself,
            # not by GRID_FIELDS) and changes none of them; domain lists choose runs too,
            # but they also change what every run is evaluated on
            chooses = any(_planned(changed, s) != _planned(cpu, s) for s in every)
            assert (f.name in GRID_FIELDS) == (chooses and not f.name.endswith("_domains")), f.name
            if f.name in GRID_FIELDS:
                assert moved == set(), f.name
            elif section == "study":  # the baseline series is imaged at the defocus domains
                assert moved == {f.name.split("_")[0]} | ({"baseline"} if f.name == "defocus_domains" else set()), f.name
            else:
                assert moved == set(every), (section, f.name)


def test_pretrained_models_are_shared_by_profiles_that_differ_only_in_transfer_settings():
    from dataclasses import fields, replace

    from hrtem_tl.config import GRID_FIELDS, TRANSFER_FIELDS, load_profile

    cpu = load_profile("cpu")
    for f in fields(cpu.training):
        value = getattr(cpu.training, f.name)
        flip = {"adapt": "fixed", "fixed": "adapt"}
        new = (flip.get(value, value) if isinstance(value, str) else not value if isinstance(value, bool)
               else value + value[-1:] if isinstance(value, tuple) else value + 1)
        changed = replace(cpu, training=replace(cpu.training, **{f.name: new}))
        same = changed.pretrain_hash("noise", "x") == cpu.pretrain_hash("noise", "x")
        assert same == (f.name in TRANSFER_FIELDS + GRID_FIELDS), f.name


def test_projection_counts_what_is_left_and_times_it_from_stored_runs(local_study, tiny_series, tmp_path):
    from hrtem_tl.projection import projection

    _, kwargs = local_study
    done = projection(tiny_series, kwargs["results_root"], freezing=("encoder", "none"))
    assert done["runs"] == 6 and done["pending"] == 0 and done["hours"] == pytest.approx(0)
    every = projection(tiny_series, kwargs["results_root"], workers=2)  # the decoder runs are still to do
    assert every["pending"] == 2 and every["pretrained"] == 2 and every["controls"] == 0
    assert every["hours"] > 0 and "stored runs (defocus)" in every["basis"].replace(f"{every['precision']} ", "")
    empty = projection(tiny_series, tmp_path / "none")
    assert empty["pending"] == 8 and empty["hours"] is None
    # a sweep begun afresh in another folder takes its rates from the shipped results
    fresh = projection(tiny_series, tmp_path / "none", rates_from=(kwargs["results_root"],))
    assert fresh["pending"] == 8 and fresh["hours"] > every["hours"] and "defocus in results" in fresh["basis"]


def test_a_projection_from_one_stage_baseline_runs_times_baselines_and_refuses_to_guess_transfers(
        local_study, tiny_series, tmp_path):
    """Stored runs that are all mixture baselines (one stage, no transfer time) time a
    baseline sweep, and give a transfer series no number rather than 'nan h'."""
    from dataclasses import replace

    from hrtem_tl.projection import projection

    _, kwargs = local_study
    runs = R.read_table(kwargs["results_root"], "defocus", "runs").assign(kind="baseline", wall_transfer_s=np.nan)
    (tmp_path / "baseline").mkdir()
    runs.to_parquet(R.table_path(tmp_path, "baseline", "runs"))
    transfers = projection(tiny_series, tmp_path)
    assert transfers["pending"] == 8 and transfers["hours"] is None and "no transfer stage" in transfers["basis"]
    profile = replace(tiny_series.profile, study=replace(tiny_series.profile.study, baseline_pairs=(("df-5", "df0"),),
                                                         baseline_minor=(1,)))
    mixtures = projection(Series("baseline", profile), tmp_path)
    assert mixtures["pending"] == 1 and mixtures["hours"] > 0 and "transfer" not in mixtures["basis"]


def test_the_baseline_series_trains_one_mixture_model_per_run(tiny_data, tiny_profile, tmp_path, monkeypatch):
    """A baseline run: one stage on the major domain's training images with some replaced by
    minor-domain images of the transfer split, evaluated on every domain; the baseline
    explorer reads it beside the original's."""
    import shutil
    from dataclasses import replace

    from hrtem_tl import experiment as E
    from hrtem_tl.defocus_views import baseline_rows

    shutil.copytree(tiny_data, tmp_path / "datasets")
    profile = replace(tiny_profile, study=replace(tiny_profile.study, baseline_pairs=(("df-5", "df0"),),
                                                  baseline_minor=(1,)))
    series = Series("baseline", profile)
    assert [s.run_id for s in plan(series)] == ["baseline|df-5>df0|none|s0|n1"]
    seen = []
    real = E.train_stage
    monkeypatch.setattr(E, "train_stage", lambda model, train, val, **kw: seen.append(train) or real(model, train, val, **kw))
    summary = run_study(series, results_root=tmp_path / "results", data_root=tmp_path / "datasets",
                        checkpoints=tmp_path / "ckpt", progress=False)
    assert summary["new"] == 1 and summary["failed"] == 0
    (images, _), = seen
    major, _ = E.domain_data(profile, "baseline", "df-5", "train", tmp_path / "datasets")
    minor, _ = E.domain_data(profile, "baseline", "df0", "transfer", tmp_path / "datasets", limit=1)
    np.testing.assert_array_equal(images, np.concatenate([major[:1], minor]))
    tables = R.read_results(tmp_path / "results", "baseline")
    run = tables["runs"].iloc[0]
    assert (run["kind"], run["major_images"], run["minor_images"], run["pretrain_images"]) == ("baseline", 1, 1, 2)
    assert set(tables["evaluations"]["eval_domain"]) == {"df-5", "df0"}
    assert set(tables["evaluations"]["stage"]) == {"pretrain"}
    assert not list((tmp_path / "ckpt").rglob("*.safetensors"))  # no pretrained model is involved
    rows = baseline_rows({"tiny": tables}, {})["tiny"]
    assert rows["approach"].tolist() == ["mixture"] and rows["images"].tolist() == [1]
    assert rows["pair"].tolist() == ["-5 → 0"]
    with pytest.raises(ValueError, match="not a mixture pair"):
        E.check_spec(series, E.RunSpec("baseline", "df0", "df-5", "none", 0, 1))
    with pytest.raises(ValueError, match="fewer minor-domain images"):
        E.check_spec(series, E.RunSpec("baseline", "df-5", "df0", "none", 0, 2))
    with pytest.raises(ValueError, match="one stage with every weight"):
        E.check_spec(series, E.RunSpec("baseline", "df-5", "df0", "decoder", 0, 1))


def test_the_projection_overhead_leaves_out_pauses_and_the_time_between_series():
    from hrtem_tl.projection import elapsed_overhead

    def sweep(folder, start, n=6, pause_after=None):
        """n transfer runs of 10 s stage time finishing every 12 s on one worker (1.2x)."""
        t = start + 12.0 * np.arange(n)
        if pause_after is not None:
            t[pause_after:] += 5 * 3600  # stopped, resumed five hours later
        return pd.DataFrame({"folder": folder, "finished_at": t, "pretrain_id": [f"{folder}{i}" for i in range(n)],
                             "wall_pretrain_s": 0.0, "wall_transfer_s": 10.0, "kind": "transfer"})

    runs = pd.concat([sweep("noise", 0.0, pause_after=3), sweep("tlsize", 30 * 86400.0)])  # a month apart
    assert elapsed_overhead(runs, workers=1, pause_s=600) == pytest.approx(1.2)
    # two series whose runs interleave in time are measured each on its own (pooled: 0.57, clamped to 1)
    interleaved = pd.concat([sweep("noise", 0.0), sweep("tlsize", 3.0)])
    assert elapsed_overhead(interleaved, workers=1, pause_s=600) == pytest.approx(1.2)
    # a pretrained model's stage counts once however many runs share it; two workers halve the stage time
    shared = sweep("noise", 0.0).assign(pretrain_id="one", wall_pretrain_s=12.0, wall_transfer_s=18.0)
    assert elapsed_overhead(shared, workers=2, pause_s=600) == pytest.approx(60 / ((12 + 6 * 18) / 2 * 5 / 6))
    assert elapsed_overhead(sweep("noise", 0.0).assign(wall_transfer_s=20.0), 1, 600) == 1.0  # never below 1
    assert elapsed_overhead(sweep("noise", 0.0, n=3), 1, 600) == 1.0  # too few runs to measure


def test_runs_from_another_training_of_a_pretrained_model_are_run_again(local_study, tiny_series, tmp_path):
    """A checkpoint cache lost between two parts of a sweep, and a retraining that does
    not give the same weights (other hardware), would leave one pretrain id with runs from
    two models. The sweep re-runs the stored runs whose pretrain-stage rows differ from the
    model it holds: those of a model with pending runs, and those of a complete model whose
    stored runs disagree among themselves."""
    import shutil

    from hrtem_tl.study import mixed_pretrainings, stored_pretraining

    _, kwargs = local_study
    kw = dict(kwargs, results_root=tmp_path / "results", checkpoints=tmp_path / "ckpt")
    shutil.copytree(kwargs["results_root"], kw["results_root"])
    shutil.copytree(kwargs["checkpoints"], kw["checkpoints"])
    runs = R.read_table(kw["results_root"], "defocus", "runs")
    models = sorted(runs["pretrain_id"].unique())
    a_runs = set(runs.loc[runs["pretrain_id"] == models[0], "run_id"])
    b_one = runs.loc[runs["pretrain_id"] == models[1], "run_id"].iloc[0]
    evals = R.read_table(kw["results_root"], "defocus", "evaluations")
    other = (evals["stage"] == "pretrain") & evals["run_id"].isin(a_runs | {b_one})
    evals.loc[other, "loss"] *= 1.1  # as if these runs had started from another training
    evals.to_parquet(R.table_path(kw["results_root"], "defocus", "evaluations"))
    stored = stored_pretraining(kw["results_root"], "defocus", tiny_series.profile.name, set(runs["run_id"]))
    assert mixed_pretrainings(stored) == {models[1]}  # model A's runs agree with each other, B's do not
    # model A has pending runs (decoder): found in the cache, its stored runs differ from it;
    # model B is complete for the two freezing options asked, but its runs disagree
    summary = run_study(tiny_series, **dict(kw, freezing=("encoder", "none")))
    assert summary["new"] == 1  # B's odd run
    summary = run_study(tiny_series, **dict(kw, freezing=None))
    assert summary["new"] == 2 + len(a_runs)  # the decoder runs, and A's runs from the other training
    fresh = R.read_table(kw["results_root"], "defocus", "evaluations")
    done = set(R.read_table(kw["results_root"], "defocus", "runs")["run_id"])
    stored = stored_pretraining(kw["results_root"], "defocus", tiny_series.profile.name, done)
    assert not mixed_pretrainings(stored)
    original = R.read_table(kwargs["results_root"], "defocus", "evaluations").query("stage == 'pretrain'")
    again = fresh.set_index(["run_id", "stage", "eval_domain"]).loc[original.set_index(["run_id", "stage", "eval_domain"]).index]
    np.testing.assert_allclose(again["loss"], original["loss"])  # each re-run's start is the cached model again
