"""Contracts between the stages, end to end on the tiny data (issue 17).

The unit tests pin each stage's arithmetic; these pin the wiring that connects them
into a run, which hand-made mutants showed was barely checked:

* after :func:`run_transfer` the frozen part (weights *and* batch-norm buffers) is
  bit-identical to the pretrained model, the rest has trained, and the run records the
  trainable parameters of its mode; ``transfer_batchnorm = "fixed"`` keeps every
  running statistic;
* what reaches the network is standardised: whole evaluation images have mean 0 and
  variance 1, training inputs are crops of standardised images;
* each domain's images carry its own dose and defocus, in the noise series too (the
  tiny profile's noise series reuses the scenes of the session's tiny data, so only
  the imaging runs here);
* one seed twice gives one run, two seeds two, and the transfer stage draws from the
  run's seed, not only from its pretrained model;
* every key of the static explorer's payload is :func:`results.matrices` for that
  key, and both figures show the matrices cell by cell (rows = pretraining domain);
* the run hash names precision, dataset version and protocol; a malformed profile is
  refused naming the key.

``scripts/mutation-check.sh`` (mutants in ``tests/mutants.toml``) checks that these
tests fail when the wiring breaks.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from hrtem_testutils import TINY, set_torch_threads, synthetic_results, write_profiles
from hrtem_tl import experiment as E
from hrtem_tl import explore
from hrtem_tl import model as M
from hrtem_tl.config import available_profiles, load_profile
from hrtem_tl.datasets import SPLITS, load_domain, scene_path, simulate_series
from hrtem_tl.metrics import METRICS
from hrtem_tl.results import REDUCTIONS, matrices, read_results
from hrtem_tl.series import DOSES, FREEZING, SERIES_DOMAINS, Series
from hrtem_tl.study import plan
from hrtem_tl.train import Precision, dihedral, standardize

set_torch_threads()
FP32 = Precision("cpu", None)
METRIC_COLUMNS = list(METRICS)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _run(profile, spec: E.RunSpec, data_root, checkpoints) -> E.RunRecords:
    return E.run_transfer(profile, spec, data_root=data_root, checkpoints=checkpoints, precision=FP32)


def _transfer_capturing_model(monkeypatch, profile, spec, data_root, checkpoints):
    """Run ``spec``; returns (records, the model the transfer stage trained)."""
    trained = []
    real = E.train_stage

    def spy(model, train, val, **kwargs):
        trained.append(model)
        return real(model, train, val, **kwargs)

    monkeypatch.setattr(E, "train_stage", spy)
    rec = _run(profile, spec, data_root, checkpoints)
    return rec, trained[-1]  # the last stage trained is the transfer stage


def _pretrained(profile, data_root, checkpoints, domain="df-5", seed=0):
    model, _ = E.pretrained(Series("defocus", profile), domain, seed, data_root=data_root,
                            checkpoints=checkpoints, precision=FP32)
    return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One checkpoint folder for the freezing tests: the df-5 model is pretrained once."""
    return tmp_path_factory.mktemp("contract-checkpoints")


# -- (1) freezing, end to end ---------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["encoder", "decoder"])
def test_run_transfer_keeps_the_frozen_part_bit_identical(tiny_data, tiny_profile, checkpoints, monkeypatch, mode):
    spec = E.RunSpec("defocus", "df-5", "df0", mode, 0)
    rec, model = _transfer_capturing_model(monkeypatch, tiny_profile, spec, tiny_data, checkpoints)
    start = _pretrained(tiny_profile, tiny_data, checkpoints)
    other = {"encoder": "decoder", "decoder": "encoder"}[mode]
    before = {part: _state(getattr(start, part)) for part in ("encoder", "decoder", "segmentation_head")}
    after = {part: _state(getattr(model, part)) for part in ("encoder", "decoder", "segmentation_head")}
    assert any(k.endswith("running_mean") for k in before[mode])  # it has batch norms to protect
    for key, value in before[mode].items():  # weights and every batch-norm buffer
        assert torch.equal(value, after[mode][key]), f"{mode}.{key} moved during transfer"
    for part in (other, "segmentation_head"):
        weights = [k for k in before[part] if k.endswith("weight")]
        moved = [k for k in weights if not torch.equal(before[part][k], after[part][k])]
        assert len(moved) > 0.9 * len(weights), f"{part} did not train ({len(moved)} of {len(weights)} moved)"
    assert any(k.endswith("running_mean") and not torch.equal(v, after[other][k])
               for k, v in before[other].items())  # the trained part's batch norms adapt
    frozen = sum(p.numel() for p in M.frozen_part(model, mode).parameters())
    assert rec.run["freezing"] == mode
    assert rec.run["params_trainable"] == M.count_parameters(model) - frozen
    assert rec.run["params_total"] == M.count_parameters(model)


@pytest.mark.parametrize("batchnorm", ["fixed", "adapt"])
def test_transfer_batchnorm_setting_decides_whether_running_statistics_move(
        tiny_data, tiny_profile, checkpoints, monkeypatch, batchnorm):
    profile = replace(tiny_profile, training=replace(tiny_profile.training, transfer_batchnorm=batchnorm))
    spec = E.RunSpec("defocus", "df-5", "df0", "none", 0)
    rec, model = _transfer_capturing_model(monkeypatch, profile, spec, tiny_data, checkpoints)
    before, after = _state(_pretrained(profile, tiny_data, checkpoints)), _state(model)
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    moved = [k for k in stats if not torch.equal(before[k], after[k])]
    if batchnorm == "fixed":
        assert moved == []
    else:
        assert len(moved) > 0.9 * len(stats)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))
    assert rec.run["transfer_batchnorm"] == batchnorm
    assert rec.run["params_trainable"] == rec.run["params_total"]


# -- (2) what reaches the network -----------------------------------------------------------------

def _is_crop_of(x: np.ndarray, pool: list[np.ndarray]) -> bool:
    """Whether ``x`` is one of the D4 transforms of a crop of an image of ``pool`` (exactly)."""
    h, w = x.shape
    for k in range(8):
        cand = np.ascontiguousarray(dihedral(x, k))
        for image in pool:
            for r, c in np.argwhere(image == cand[0, 0]):
                if r + h <= image.shape[0] and c + w <= image.shape[1] and np.array_equal(
                        image[r:r + h, c:c + w], cand):
                    return True
    return False


def test_the_network_sees_standardised_images(tiny_data, tiny_profile, tmp_path, monkeypatch):
    seen: list[tuple[bool, np.ndarray]] = []
    real = M.build_unet

    def recording_unet():
        net = real()
        net.register_forward_pre_hook(
            lambda module, args: seen.append((module.training, args[0].detach().float().cpu().numpy().copy())))
        return net

    monkeypatch.setattr(E, "build_unet", recording_unet)
    monkeypatch.setattr(M, "build_unet", recording_unet)
    _run(tiny_profile, E.RunSpec("defocus", "df-5", "df0", "none", 0), tiny_data, tmp_path)

    series = Series("defocus", tiny_profile)
    stored = [standardize(load_domain(series, d.name, split, tiny_data)["images"])
              for d in series.domains for split in SPLITS]
    pool = [image for split in stored for image in split]
    n = tiny_profile.simulation.image_size
    evaluated = [x[:, 0] for training, x in seen if not training]
    trained = [x[:, 0] for training, x in seen if training]
    t = tiny_profile.training
    assert sum(len(x) for x in trained) == (t.pretrain_epochs * t.pretrain_steps
                                            + t.transfer_epochs * t.transfer_steps) * t.batch_size
    assert evaluated and all(x.shape[1:] == (n, n) for x in evaluated)  # whole images
    for batch in evaluated:
        np.testing.assert_allclose(batch.mean(axis=(1, 2)), 0, atol=1e-4)
        np.testing.assert_allclose(batch.std(axis=(1, 2)), 1, rtol=1e-3)
        for image in batch:  # a stored image, standardised as a whole
            assert any(np.array_equal(image, p) for p in pool)
    for batch in trained:
        assert batch.shape[1:] == (t.crop, t.crop)
        for crop in batch:
            assert _is_crop_of(crop, pool), "a training input is no crop of a standardised image"


# -- (3) each domain's own dose and defocus, noise series --------------------------------------------

@pytest.fixture(scope="module")
def noise_data(tiny_data, tiny_profile, tmp_path_factory):
    """The tiny noise series, imaged from the tiny data's CdSe scenes (no multislice here)."""
    root = tmp_path_factory.mktemp("noise") / "datasets"
    shutil.copytree(tiny_data, root)
    series = Series("noise", tiny_profile)
    simulate_series(series, root, workers=1, progress=False)
    return root, series


def test_each_noise_domain_is_imaged_at_its_own_dose_and_defocus(noise_data):
    root, series = noise_data
    sim = series.profile.simulation
    assert [d.dose for d in series.domains] == [float(d) for d in DOSES]
    means = []
    for domain in series.domains:
        counts = []
        for split in SPLITS:
            data = load_domain(series, domain.name, split, root)
            counts.append(data["images"].ravel())
            assert len(data["defocus"]) == len(data["images"])
            for i, df in enumerate(data["defocus"]):
                with np.load(scene_path(root, series.profile, domain.scene_set, split, i)) as scene:
                    offset = float(df) - float(scene["zero_defocus"]) - 10.0 * domain.defocus
                assert abs(offset) < 5 * sim.defocus_sigma, (domain.name, split, i, offset)
        mean = float(np.concatenate(counts).mean())
        assert mean == pytest.approx(domain.dose * sim.pixel_size**2, rel=0.1), domain.name
        means.append(mean)
    assert all(a < b for a, b in zip(means, means[1:]))  # distinct doses, distinct counts
    ratios = np.array(means) / np.array([d.dose for d in series.domains])
    assert ratios.max() / ratios.min() < 1.1  # counts scale with the dose


# -- (4) seeds ----------------------------------------------------------------------------------------

def _metrics(rec: E.RunRecords, stage: str) -> list[tuple]:
    rows = sorted((e for e in rec.evaluations if e["stage"] == stage), key=lambda e: e["eval_domain"])
    return [(e["eval_domain"], *(e[m] for m in METRIC_COLUMNS)) for e in rows]


def _history(rec: E.RunRecords, stage: str) -> list[tuple]:
    return [(h["epoch"], h["train_loss"], h["val_loss"], h["val_dice"], h["lr"])
            for h in rec.histories if h["stage"] == stage]


def test_one_seed_twice_gives_one_run_and_two_seeds_give_two(tiny_data, tiny_profile, tmp_path):
    def run(seed, folder):
        return _run(tiny_profile, E.RunSpec("defocus", "df-5", "df0", "encoder", seed), tiny_data, tmp_path / folder)

    a, b, c = run(0, "a"), run(0, "b"), run(1, "c")
    for stage in ("pretrain", "transfer"):
        assert _metrics(a, stage) == _metrics(b, stage), stage
        assert _history(a, stage) == _history(b, stage), stage
        assert _metrics(a, stage) != _metrics(c, stage), stage
        assert _history(a, stage) != _history(c, stage), stage


def test_the_transfer_stage_depends_on_the_run_seed(tiny_data, tiny_profile, tmp_path, monkeypatch):
    """One pretrained model, two run seeds: the transfer stages differ."""
    _pretrained(tiny_profile, tiny_data, tmp_path)  # the one model, trained and stored
    real = E.pretrained
    monkeypatch.setattr(E, "pretrained", lambda series, domain, seed, **kw: real(series, domain, 0, **kw))
    runs = [_run(tiny_profile, E.RunSpec("defocus", "df-5", "df0", "none", seed), tiny_data, tmp_path)
            for seed in (0, 1)]
    assert _metrics(runs[0], "pretrain") == _metrics(runs[1], "pretrain")  # the same start
    assert _history(runs[0], "transfer") != _history(runs[1], "transfer")
    assert _metrics(runs[0], "transfer") != _metrics(runs[1], "transfer")


def test_the_initial_weights_of_a_pretrained_model_belong_to_its_seed(tiny_data, tiny_profile, tmp_path, monkeypatch):
    """Seed 0 twice starts pretraining from one set of weights, seeds 0 and 1 from two."""
    starts = []

    def stop(model, train, val, **kwargs):  # record the weights training would start from, then stop
        starts.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        raise E.TrainingDiverged("stopped by the test")

    monkeypatch.setattr(E, "train_stage", stop)
    for seed, folder in ((0, "a"), (0, "b"), (1, "c")):
        with pytest.raises(E.TrainingDiverged):
            _pretrained(tiny_profile, tiny_data, tmp_path / folder, seed=seed)
    assert torch.equal(starts[0], starts[1]) and not torch.equal(starts[0], starts[2])


def test_every_image_of_a_domain_draws_its_own_defocus_and_noise(tiny_data, tiny_series):
    """The per-image random draws (defocus jitter, shot noise) depend on the image's index:
    between two domains imaging the same scenes, the defocus differences vary by image."""
    a = load_domain(tiny_series, "df-5", "train", tiny_data)
    b = load_domain(tiny_series, "df0", "train", tiny_data)
    assert len(a["defocus"]) >= 2
    diff = a["defocus"] - b["defocus"]  # zero_defocus of each scene cancels; 10 x (-5 - 0) plus the jitters
    assert np.ptp(diff) > 1e-3


# -- (5) the explorers ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """Synthetic runs of the noise and structure grids (cpu profile), three seeds: every
    cell holds three or more models, so median, mean, min and max all differ."""
    root = tmp_path_factory.mktemp("contract-results")
    out = {}
    for series in ("noise", "structure"):
        synthetic_results(root, series, seeds=(0, 1, 2))
        out[series] = read_results(root, series)
    return out


def _array(cells) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in cells], float)


@pytest.mark.parametrize("series", ["noise", "structure"])
def test_every_payload_key_is_the_matrices_of_its_choice(tables, series):
    runs, evals = tables[series]["runs"], tables[series]["evaluations"]
    payload = explore.explorer_payload(tables[series], series)
    subsets = explore.freezing_subsets()
    assert {len(s) for s in subsets} == {1, 2, 3} and len(subsets) == 7
    keys = {f"cpu|{'+'.join(s)}|{m}|{r}" for s in subsets for m in METRICS for r in REDUCTIONS}
    assert set(payload["matrices"]) == keys
    domains = explore.series_domains(series)
    for subset in subsets:
        for metric in METRICS:
            values = {}
            for reduction in REDUCTIONS:
                key = f"cpu|{'+'.join(subset)}|{metric}|{reduction}"
                want = matrices(runs, evals, freezing=set(subset), metric=metric, reduction=reduction,
                                domains=domains)
                for stage in ("pretrain", "transfer"):
                    np.testing.assert_allclose(_array(payload["matrices"][key][stage]), want[stage]["value"].to_numpy(float),
                                               rtol=1e-4, atol=1e-12, equal_nan=True, err_msg=f"{key} {stage}")
                    for part in ("count", "q25", "q75"):  # stored once per source, subset and metric
                        np.testing.assert_allclose(_array(payload["spread"][key.rsplit("|", 1)[0]][stage][part]),
                                                   want[stage][part].to_numpy(float), rtol=1e-4, atol=1e-12,
                                                   equal_nan=True, err_msg=f"{key} {stage} {part}")
                values[reduction] = _array(payload["matrices"][key]["transfer"])
            # the reductions differ on these data, so a payload that ignored one would show
            assert not np.allclose(values["median"], values["mean"], equal_nan=True)
            assert np.nanmin(values["max"] - values["min"]) > 0
    # single-mode subsets differ from each other and from all modes together
    first = {s: _array(payload["matrices"][f"cpu|{'+'.join(s)}|dice|median"]["transfer"])
             for s in subsets}
    assert len({arr.tobytes() for arr in first.values()}) == len(subsets)


def _mirror_differs(matrix: np.ndarray) -> tuple[int, int]:
    n = len(matrix)
    return next((i, j) for i in range(n) for j in range(n)
                if i != j and np.isfinite(matrix[i, j]) and np.isfinite(matrix[j, i]) and matrix[i, j] != matrix[j, i])


@pytest.mark.parametrize("freezing, metric, reduction", [
    (("encoder",), "dice", "median"), (("none", "decoder"), "loss", "mean"), (FREEZING, "iou", "max")])
def test_the_live_figure_shows_the_matrices_rows_by_pretraining_domain(tables, freezing, metric, reduction):
    runs, evals = tables["noise"]["runs"], tables["noise"]["evaluations"]
    domains = explore.series_domains("noise")
    want = matrices(runs, evals, freezing=set(freezing), metric=metric, reduction=reduction, domains=domains)
    fig = explore.matrix_figure(runs, evals, "noise", freezing=freezing, metric=metric, reduction=reduction)
    labels = explore.axis_labels("noise", domains)
    assert [trace.name for trace in fig.data] == ["pretrain", "transfer"]
    for trace in fig.data:
        expected = want[trace.name]["value"].to_numpy(float)
        z = _array(trace.z)
        np.testing.assert_array_equal(z, expected)
        i, j = _mirror_differs(expected)  # not symmetric: a transposed z fails here
        assert z[i, j] == expected[i, j] and z[i, j] != z[j, i]
        assert list(trace.y) == labels and list(trace.x) == labels  # rows: pretraining domain
        count, q25, q75 = (want[trace.name][k].to_numpy(float) for k in ("count", "q25", "q75"))
        custom = np.array(trace.customdata, float)
        np.testing.assert_array_equal(custom[..., 0], count)
        np.testing.assert_array_equal(custom[..., 1], q25)
        np.testing.assert_array_equal(custom[..., 2], q75)


def test_the_static_figure_is_built_from_the_payload(tables, tmp_path):
    import json
    import re

    root = tmp_path / "results"
    synthetic_results(root, "noise", seeds=(0, 1, 2))
    fragment = explore.explorer_html(root, "noise", element_id="x")
    text = re.search(r'<script type="application/json" id="x-data">(.*?)</script>', fragment, re.S).group(1)
    payload = json.loads(text.replace("<\\/", "</"))
    first = payload["matrices"][f"cpu|{'+'.join(FREEZING)}|loss|median"]
    runs, evals = tables["noise"]["runs"], tables["noise"]["evaluations"]
    live = explore.matrix_figure(runs, evals, "noise", freezing=FREEZING, metric="loss", reduction="median")
    for trace, stage, live_trace in zip(payload["figure"]["data"], ("pretrain", "transfer"), live.data):
        assert trace["name"] == stage
        np.testing.assert_array_equal(_array(trace["z"]), _array(first[stage]))
        np.testing.assert_allclose(_array(trace["z"]), _array(live_trace.z), rtol=1e-4)


# -- the run hash and profile validation -------------------------------------------------------------

def test_the_run_hash_names_precision_dataset_version_and_protocol(tiny_profile, monkeypatch):
    base = E.run_config_hash(tiny_profile, "defocus", FP32)
    assert E.run_config_hash(tiny_profile, "defocus", Precision("cpu", torch.bfloat16)) != base
    assert E.run_config_hash(tiny_profile, "noise", FP32) != base
    assert E.run_config_hash(tiny_profile, "defocus", FP32) == base
    for name in ("PROTOCOL", "DATASET_VERSION"):
        with monkeypatch.context() as m:
            m.setattr(E, name, getattr(E, name) + 1)
            assert E.run_config_hash(tiny_profile, "defocus", FP32) != base, name


def test_every_shipped_profile_is_valid():
    for name in available_profiles():
        load_profile(name)


def test_every_planned_run_of_every_shipped_profile_is_possible():
    """Each split holds enough scenes for every run its grid plans, transfer sets included."""
    for name in available_profiles():
        profile = load_profile(name)
        for series_name in SERIES_DOMAINS:
            series = Series(series_name, profile)
            counts = series.split_counts
            for spec in plan(series):
                E.check_spec(series, spec)
                size = spec.transfer_images or profile.training.transfer_images
                assert size <= counts[E.transfer_split(series, spec)], (name, spec.run_id)


@pytest.mark.parametrize("section, key, value, match", [
    ("simulation", "pixel_size", 0.25, r"simulation.pixel_size \(0.25\) must not be finer than simulation.sampling"),
    ("simulation", "sampling", 0.0, "simulation.sampling must be a positive number"),
    ("simulation", "energy", -3e5, "simulation.energy must be a positive number"),
    ("simulation", "defocus_sigma", -1.0, "simulation.defocus_sigma must be a number >= 0"),
    ("simulation", "phonon_configs", 0, "simulation.phonon_configs must be a whole number >= 1"),
    ("simulation", "max_particles", True, "simulation.max_particles must be a whole number"),
    ("simulation", "film_thickness", [10.0], "simulation.film_thickness must be a pair"),
    ("simulation", "calibration_steps", [4.0, 0.0], "simulation.calibration_steps must be a positive"),
    ("data", "val_images", 0, "data.val_images must be a whole number >= 1"),
    ("data", "test_images", 1.5, "data.test_images must be a whole number"),
    ("training", "crop", True, "training.crop must be a whole number"),
    ("training", "transfer_images", 0, "training.transfer_images must be a whole number"),
    ("training", "lr_transfer", 0.0, "training.lr_transfer must be a positive number"),
    ("training", "lr_decay", -0.5, "training.lr_decay must be a positive number"),
    ("training", "seeds", [], "training.seeds must be a non-empty list"),
    ("training", "seeds", [0, -1], "training.seeds must be a whole number >= 0"),
    ("training", "transfer_batchnorm", "sometimes", "training.transfer_batchnorm must be 'adapt' or 'fixed'"),
    ("training", "mixed_precision", "yes", "training.mixed_precision must be true or false"),
])
def test_a_malformed_profile_is_refused_naming_the_key(tmp_path, section, key, value, match):
    body = copy.deepcopy(TINY)
    body[section][key] = value
    path = write_profiles(tmp_path / "profiles.toml", {"bad": body, "good": TINY})
    assert load_profile("good", path).training.seeds == (0,)  # seed 0 is a seed
    with pytest.raises(ValueError, match=rf"profile 'bad' is malformed: {match}"):
        load_profile("bad", path)
