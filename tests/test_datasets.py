"""On-disk datasets: plain npz files, manifest, resumability, atomic writes, versions."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest

from hrtem_tl import datasets
from hrtem_tl.datasets import SPLITS, domain_path, load_domain, scene_path, simulate_series


def all_files(root: Path) -> list[Path]:
    return sorted(Path(d) / f for d, _, files in os.walk(root) for f in files)


def mtimes(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in all_files(root) if p.suffix == ".npz"}


def test_series_files_open_with_plain_numpy(tiny_data, tiny_series):
    profile = tiny_series.profile
    n = profile.simulation.image_size
    counts = tiny_series.split_counts
    for domain in tiny_series.domains:
        for split in SPLITS:
            with np.load(domain_path(tiny_data, tiny_series, domain, split), allow_pickle=False) as data:
                assert data["images"].shape == (counts[split], n, n)
                assert data["images"].dtype == np.float32
                assert data["masks"].dtype == np.uint8 and set(np.unique(data["masks"])) <= {0, 1}
                assert data["defocus"].shape == (counts[split],)
                assert float(data["pixel_size"]) == profile.simulation.pixel_size
                images = data["images"]
                # Poisson counts at the domain's dose: mean close to dose * pixel^2 (vacuum = 1)
                assert np.all(images == np.round(images)) and images.min() >= 0
                expected = domain.dose * profile.simulation.pixel_size**2
                assert images.mean() == pytest.approx(expected, rel=0.1)
                # the domain's defocus (nm) measured from each scene's calibrated zero
                for i, df in enumerate(data["defocus"]):
                    with np.load(scene_path(tiny_data, profile, domain.scene_set, split, i)) as scene:
                        offset = df - float(scene["zero_defocus"]) - 10 * domain.defocus
                    assert abs(offset) < 5 * profile.simulation.defocus_sigma
    for scene_set in tiny_series.scene_sets:
        for split in SPLITS:
            for i in range(counts[split]):
                with np.load(scene_path(tiny_data, profile, scene_set, split, i), allow_pickle=False) as scene:
                    assert scene["waves"].shape == (profile.simulation.phonon_configs, n, n)
                    assert scene["waves"].dtype == np.complex64
                    layout = json.loads(str(scene["layout"]))
                    assert 1 <= len(layout["particles"]) <= profile.simulation.max_particles


def test_manifest(tiny_data, tiny_series):
    path = tiny_data / tiny_series.profile.name / tiny_series.name / "manifest.json"
    manifest = json.loads(path.read_text())
    assert manifest["series"] == "defocus"
    assert [d["name"] for d in manifest["domains"]] == ["df-5", "df0"]
    assert manifest["profile"]["simulation"]["field_of_view"] == 64.0
    assert manifest["config_hash"] == tiny_series.profile.config_hash("defocus")
    assert manifest["images_per_scene_set"] == {"train": 2, "transfer": 2, "val": 1, "test": 1}
    assert manifest["transfer_split"] == "transfer"
    assert {"abtem", "numpy", "python"} <= set(manifest["software"])


def test_no_temporary_files_are_left(tiny_data):
    leftovers = [p for p in all_files(tiny_data) if p.name.endswith(".tmp")]
    assert leftovers == []


def test_series_resumes_without_rewriting(data_copy, tiny_series):
    before = mtimes(data_copy)
    assert len(before) == 6 + 2 * 4  # 6 scenes, 2 domains x 4 splits
    simulate_series(tiny_series, data_copy, progress=False)
    assert mtimes(data_copy) == before
    # a lost scene and a lost domain file are remade, identical to the first time
    scene = scene_path(data_copy, tiny_series.profile, tiny_series.scene_sets[0], "val", 0)
    domain = domain_path(data_copy, tiny_series, tiny_series.domains[1], "val")
    with np.load(domain) as old:
        old_images = old["images"]
    old_scene = np.load(scene)["waves"]
    scene.unlink()
    domain.unlink()
    simulate_series(tiny_series, data_copy, progress=False)
    after = mtimes(data_copy)
    assert set(after) == set(before)
    assert {p for p in before if after[p] != before[p]} == {domain, scene}
    with np.load(domain) as new:
        assert np.array_equal(new["images"], old_images)
    assert np.array_equal(np.load(scene)["waves"], old_scene)
    assert not [p for p in all_files(data_copy) if p.name.endswith(".tmp")]


@pytest.mark.parametrize("stale_key", [None, "made-with-other-settings"])
def test_domain_files_made_by_other_settings_are_remade(data_copy, tiny_series, stale_key):
    domain = domain_path(data_copy, tiny_series, tiny_series.domains[0], "train")
    with np.load(domain) as data:
        stale = {k: data[k] for k in data.files if k not in ("version", "key")}
    stale["masks"] = np.zeros_like(stale["masks"])  # made under an older labelling rule
    if stale_key is not None:
        stale["key"] = np.array(stale_key)
    datasets.save_npz(domain, **stale)
    with pytest.raises(FileNotFoundError, match="other settings"):
        load_domain(tiny_series, tiny_series.domains[0].name, "train", data_copy)
    simulate_series(tiny_series, data_copy, progress=False)
    with np.load(domain) as data:
        assert int(data["version"]) == datasets.DATASET_VERSION
        assert str(data["key"]) == datasets.domain_key(tiny_series, tiny_series.domains[0], "train")
        assert data["masks"].any()


def test_scene_folder_follows_the_simulation_settings(tiny_series):
    from dataclasses import replace

    profile = tiny_series.profile
    other = replace(profile, simulation=replace(profile.simulation, pixel_size=0.6))
    scene_set = tiny_series.scene_sets[0]
    assert scene_path(Path("r"), profile, scene_set, "train", 0) != scene_path(Path("r"), other, scene_set, "train", 0)


def test_interrupted_write_leaves_no_trusted_file(tmp_path, monkeypatch):
    target = tmp_path / "a" / "b.npz"

    def broken(fh, **arrays):
        fh.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets.np, "savez", broken)
    with pytest.raises(KeyboardInterrupt):
        datasets.save_npz(target, x=np.zeros(3))
    assert not target.exists()


def test_missing_domain_says_how_to_make_it(tmp_path, tiny_series):
    with pytest.raises(FileNotFoundError, match="hrtem-tl simulate defocus --profile tiny"):
        load_domain(tiny_series, "df0", "train", tmp_path)
    with pytest.raises(ValueError, match="unknown domain"):
        load_domain(tiny_series, "df7", "train", tmp_path)


def test_montage(tiny_data, tiny_series, tmp_path):
    from PIL import Image

    path = datasets.write_montage(tiny_series, tmp_path / "m.png", tiny_data, per_domain=1)
    image = np.asarray(Image.open(path))
    n = tiny_series.profile.simulation.image_size
    assert image.shape == (n * len(tiny_series.domains), n, 3)
    assert image.std() > 0


@pytest.mark.slow
def test_parallel_simulation_matches_serial(tmp_path, tiny_series, tiny_data):
    """Two worker processes make the same files as one."""
    simulate_series(tiny_series, tmp_path, workers=2, progress=False)
    for a in all_files(tiny_data):
        if a.suffix != ".npz":
            continue
        b = tmp_path / a.relative_to(tiny_data)
        with np.load(a) as x, np.load(b) as y:
            for key in x.files:
                assert np.array_equal(x[key], y[key]), (a, key)


# -- the protocol's splits ------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory):
    """Every series of the smoke profile simulated into one root (shared scene sets are made once)."""
    from hrtem_tl.config import load_profile
    from hrtem_tl.series import SERIES_DOMAINS, Series

    root = tmp_path_factory.mktemp("smoke")
    profile = load_profile("smoke")
    series = [Series(name, profile) for name in SERIES_DOMAINS]
    for s in series:
        simulate_series(s, root, workers=2, progress=False)
    return root, series


def test_scene_sets_of_every_run_are_disjoint(smoke_data):
    """Pretraining, transfer, validation and test scenes never overlap, for every run of every series."""
    from hrtem_tl.experiment import transfer_split
    from hrtem_tl.study import plan

    root, all_series = smoke_data

    def scenes(series, domain, split, limit=None):
        return set(load_domain(series, domain, split, root)["scenes"][:limit].tolist())

    for series in all_series:
        counts = series.split_counts
        assert min(counts["train"], counts["val"], counts["test"]) >= 1
        for spec in plan(series):
            n = spec.transfer_images or series.profile.training.transfer_images
            if spec.kind == "control":  # further steps on its own pretraining scenes
                assert transfer_split(series, spec) == "train"
                continue
            roles = {
                "pretrain": scenes(series, spec.pretrain_domain, "train"),
                "transfer": scenes(series, spec.target_domain, transfer_split(series, spec), n),
                "val": scenes(series, spec.pretrain_domain, "val") | scenes(series, spec.target_domain, "val"),
                "test": set().union(*(scenes(series, d.name, "test") for d in series.domains)),
            }
            assert len(roles["transfer"]) == n
            for (a, x), (b, y) in itertools.combinations(roles.items(), 2):
                assert not x & y, (series.name, spec.run_id, a, b, sorted(x & y)[:3])


def test_every_domain_of_a_shared_scene_set_images_the_same_test_scenes(smoke_data):
    root, all_series = smoke_data
    for series in all_series:
        if not series.shares_scenes:
            continue
        test = {tuple(load_domain(series, d.name, "test", root)["scenes"]) for d in series.domains}
        assert len(test) == 1, series.name  # paired: one test scene set imaged under every condition


def test_split_scenes_differ_in_content(tiny_data, tiny_series):
    """Each split's scenes are drawn afresh (seeded by split name), not copies of another split."""
    layouts = {}
    for split, count in tiny_series.split_counts.items():
        for i in range(count):
            with np.load(scene_path(tiny_data, tiny_series.profile, tiny_series.scene_sets[0], split, i)) as scene:
                layouts[(split, i)] = str(scene["layout"])
    assert len(set(layouts.values())) == len(layouts)
