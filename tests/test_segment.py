"""Model folders, ``hrtem-tl segment``, ``finetune``, ``models`` and ``export-model``.

The model: a U-Net trained here for 30 steps (3 epochs of 10 batches of 4 crops of
64 px, lr 1e-3, fp32) on synthetic bright disks (radius 6-12 px) on Gaussian noise
(sigma 0.5 of the disk contrast) at 2 Å/px. On held-out disk images it reaches a
Dice of about 0.95 (measured); the bound checked is ``DICE_BOUND = 0.8``. The test
images are new disk scenes (other seeds) at 1 Å/px, so segmenting them also
exercises resampling to the model's pixel size and back.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from hrtem_testutils import disk_scene, run_cli, set_torch_threads, train_disk_model, write_tiff

DICE_BOUND = 0.8
MODEL_PIXEL = 2.0  # [Å]
FILE_PIXEL = 1.0  # [Å] of the test files
BF16_TOLERANCE = 0.005  # fraction of mask pixels that 16-bit weights may change


def dice(a, b) -> float:
    a, b = a > 0, b > 0
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A model folder of a U-Net trained for 30 steps on disks at 2 Å/px."""
    return train_disk_model(tmp_path_factory.mktemp("models") / "disks", MODEL_PIXEL)


def file_scene(seed: int, size: int = 256):
    """A test scene at 1 Å/px: disks of radius 12-24 px (6-12 px at the model's 2 Å)."""
    return disk_scene(size, seed, 12, 24, gap=16)


def write_mrc(path, image, pixel_a=FILE_PIXEL):
    import mrcfile

    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(image)
        m.voxel_size = pixel_a
    return path


def write_emd(path, image, pixel_a=FILE_PIXEL):
    from rsciio.emd import file_writer

    axes = [{"name": n, "size": s, "scale": pixel_a / 10, "offset": 0.0, "units": "nm", "navigate": False}
            for n, s in zip("yx", image.shape)]
    file_writer(str(path), {"data": image, "axes": axes, "metadata": {"General": {"title": "t"}, "Signal": {}},
                            "original_metadata": {}})
    return path


def test_calibrated_files_segment_to_the_known_disks(model_dir, tmp_path):
    from hrtem_tl.segment import read_micrograph, segment_files

    set_torch_threads()
    image, mask, areas = file_scene(7)
    files = [write_tiff(tmp_path / "tiff.tif", image), write_mrc(tmp_path / "mrc.mrc", image),
             write_emd(tmp_path / "emd.emd", image)]
    for f in files:
        assert read_micrograph(f).pixel_size == pytest.approx(FILE_PIXEL, rel=1e-4), f
    done, errors = segment_files(files, model_dir, tmp_path / "out", progress=False)
    assert not errors
    assert len(done) == 3
    for s in done:
        assert s["mask"].shape == image.shape
        assert dice(s["mask"], mask) > DICE_BOUND, (s["file"], dice(s["mask"], mask))
    written = tifffile.TiffFile(done[0]["paths"]["mask"])
    assert written.imagej_metadata["unit"] == "nm"
    assert read_micrograph(done[0]["paths"]["mask"]).pixel_size == pytest.approx(FILE_PIXEL, rel=1e-4)
    table = np.genfromtxt(done[0]["paths"]["table"], delimiter=",", names=True)
    table = np.atleast_1d(table)
    assert len(table) == len(areas)
    expected = np.sort(np.array(areas) * (FILE_PIXEL / 10) ** 2)  # [nm²]
    # the 30-step model's boundaries sit up to about one model pixel (2 Å) off: for disks of
    # radius 1.2-2.4 nm that is up to ~25 % in area and ~12 % in diameter
    assert np.allclose(np.sort(table["area_nm2"]), expected, rtol=0.3), (table["area_nm2"], expected)
    diameters = np.sort(2 * np.sqrt(expected / np.pi))
    assert np.allclose(np.sort(table["equivalent_diameter_nm"]), diameters, rtol=0.15)
    assert abs(table["area_nm2"].sum() - expected.sum()) < 0.3 * expected.sum()
    assert (tmp_path / "out" / "tiff_overlay.png").is_file()


def test_pixel_size_override_and_missing_calibration(model_dir, tmp_path, capsys):
    image, mask, _ = file_scene(8)
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, image)
    code, out, err = run_cli(capsys, "segment", plain, "--model", model_dir, "--out", tmp_path / "o")
    assert code == 2
    assert "plain.tif" in err and "--pixel-size" in err and len(err.strip().splitlines()) == 1
    wrong = write_tiff(tmp_path / "wrong.tif", image, pixel_a=5.0)  # a wrong calibration, overridden
    code, out, err = run_cli(capsys, "segment", plain, wrong, "--model", model_dir, "--pixel-size", FILE_PIXEL,
                             "--out", tmp_path / "o")
    assert code == 0, err
    for stem in ("plain", "wrong"):
        got = tifffile.imread(tmp_path / "o" / f"{stem}_mask.tif")
        assert got.shape == image.shape and dice(got, mask) > DICE_BOUND
    assert out.count("particles") == 2


def test_bad_inputs_get_one_line_each_and_the_rest_run(model_dir, tmp_path, capsys):
    from PIL import Image

    image, _, _ = file_scene(9)
    good = write_tiff(tmp_path / "good.tif", image)
    bad = {"junk.mrc": "unreadable"}
    (tmp_path / "junk.mrc").write_bytes(b"not an mrc file" * 20)
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([image] * 3), imagej=True, resolution=(10, 10),
                     metadata={"unit": "nm", "axes": "ZYX"})
    bad["stack.tif"] = "--frame"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    bad["rgb.png"] = "colour"
    tifffile.imwrite(tmp_path / "ev.tif", image, imagej=True, resolution=(10, 10), metadata={"unit": "eV"})
    bad["ev.tif"] = "not a length"
    write_tiff(tmp_path / "small.tif", image[:100, :100])  # 50 px at 2 Å: under the 64 px field
    bad["small.tif"] = "smaller than the model's field"
    tifffile.imwrite(tmp_path / "nocal.tif", image)
    bad["nocal.tif"] = "--pixel-size"
    bad["missing.tif"] = "no such file"
    files = [tmp_path / n for n in bad] + [good]
    files.insert(3, files.pop())  # the good file in the middle of the batch
    code, out, err = run_cli(capsys, "segment", *files, "--model", model_dir, "--out", tmp_path / "o")
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("hrtem-tl: error: ")]
    assert len(lines) == len(bad), err
    for name, problem in bad.items():
        (line,) = [x for x in lines if name in x]
        assert problem in line, line
    assert "good.tif: " in out and (tmp_path / "o" / "good_mask.tif").is_file()
    code, out, err = run_cli(capsys, "segment", tmp_path / "stack.tif", "--frame", 1, "--model", model_dir,
                             "--out", tmp_path / "o")
    assert code == 0, err
    assert tifffile.imread(tmp_path / "o" / "stack_frame1_mask.tif").shape == image.shape


def test_16bit_weights_give_the_same_mask(model_dir, tmp_path):
    from hrtem_tl.models import load_model, save_model
    from hrtem_tl.segment import segment_image

    model, card = load_model(model_dir)
    half = save_model(model, tmp_path / "disks-bf16", {k: v for k, v in card.items() if k != "weights"}, weights="bf16")
    model16, card16 = load_model(half)
    assert card16["weights"] == "bf16"
    size32 = (model_dir / "model.safetensors").stat().st_size
    assert (half / "model.safetensors").stat().st_size < 0.55 * size32
    image, mask, _ = file_scene(10, size=384)
    m32 = segment_image(model, card, image, FILE_PIXEL) > 0.5
    m16 = segment_image(model16, card16, image, FILE_PIXEL) > 0.5
    assert (m32 != m16).mean() <= BF16_TOLERANCE
    assert dice(m16, mask) > DICE_BOUND


def test_tiles_blend_without_seams(model_dir):
    """A large image (several tiles) segments as well as the small ones, at every tile size."""
    from hrtem_tl.models import load_model
    from hrtem_tl.segment import segment_image

    model, card = load_model(model_dir)
    image, mask, _ = disk_scene(300, 11, 6, 12, count=(8, 14))
    a = segment_image(model, card, image, MODEL_PIXEL, tile=64, overlap=32) > 0.5
    b = segment_image(model, card, image, MODEL_PIXEL, tile=320) > 0.5
    assert dice(a, mask) > DICE_BOUND and dice(b, mask) > DICE_BOUND
    assert (a != b).mean() < 0.02


def test_finetune_writes_a_model_folder_naming_its_parent(model_dir, tmp_path, capsys):
    images, masks = [], []
    for i in range(3):
        image, mask, _ = file_scene(20 + i, size=192)
        images.append(write_tiff(tmp_path / f"im{i}.tif", image))
        masks.append(tmp_path / f"mask{i}.tif")
        tifffile.imwrite(masks[-1], mask * 255)
    out = tmp_path / "mine"
    code, stdout, err = run_cli(capsys, "finetune", *images, "--masks", *masks, "--from", model_dir,
                                "--out", out, "--epochs", 1, "--steps", 2)
    assert code == 0, err
    assert "freezing: decoder (default" in err and "faster" in err
    card = json.loads((out / "config.json").read_text())
    assert card["parent"]["name"] == "disks" and card["freezing"] == "decoder"
    assert card["held_out"]["images"] == 1 and card["held_out"]["dice"] > DICE_BOUND
    assert card["pixel_size"] == MODEL_PIXEL and len(card["data"]) == 3
    assert all(len(d["image_sha256"]) == 64 for d in card["data"])
    assert "held-out Dice" in stdout
    code, _, err = run_cli(capsys, "finetune", images[0], "--masks", *masks[:2], "--from", model_dir, "--out", out)
    assert code == 2 and "masks" in err


def test_models_listing_and_missing_model(model_dir, tmp_path, monkeypatch, capsys):
    from hrtem_tl import models

    empty = tmp_path / "none"
    monkeypatch.setenv("XDG_DATA_HOME", str(empty))
    monkeypatch.setenv("HRTEM_TL_MODELS", str(empty))
    monkeypatch.setattr(models, "REPO_MODELS", empty / "repo")
    image, _, _ = file_scene(12)
    f = write_tiff(tmp_path / "a.tif", image)
    code, out, err = run_cli(capsys, "segment", f)
    assert code == 2 and "finetune" in err and "export-model" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(capsys, "segment", f, "--model", tmp_path / "nowhere")
    assert code == 2 and "nowhere" in err and "does not exist" in err
    monkeypatch.setenv("HRTEM_TL_MODELS", str(model_dir.parent))
    code, out, err = run_cli(capsys, "models")
    assert code == 0 and "disks" in out and "2 Å/px" in out and "synthetic disks" in out
    code, out, err = run_cli(capsys, "segment", f, "--model", "disks", "--out", tmp_path / "o")
    assert code == 0, err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"x")
    code, out, err = run_cli(capsys, "segment", f, "--model", tmp_path / "broken")
    assert code == 2 and "config.json" in err and len(err.strip().splitlines()) == 1


def test_export_study_checkpoint(model_dir, tmp_path, capsys):
    from hrtem_tl.model import save_checkpoint
    from hrtem_tl.models import load_model, read_card

    model, _ = load_model(model_dir)
    ckpt = tmp_path / "checkpoints" / "smoke" / "noise" / "pretrain_dose30_s0_0123456789abcdef.safetensors"
    save_checkpoint(model, ckpt, {"evaluations": {"dose30": {"dice": 0.9, "loss": 0.1}}, "precision": "fp32",
                                  "stage": {}, "config_hash": "0123456789abcdef"})
    code, out, err = run_cli(capsys, "export-model", ckpt, tmp_path / "exported", "--weights", "bf16")
    assert code == 0, err
    card = read_card(tmp_path / "exported")
    assert card["pixel_size"] == 0.5 and card["crop"] == 64 and card["domains"] == ["dose30"]
    assert card["test_scores"]["dose30"]["dice"] == 0.9 and card["weights"] == "bf16" and card["profile"] == "smoke"
    code, out, err = run_cli(capsys, "export-model", tmp_path / "nope.safetensors", tmp_path / "x")
    assert code == 2 and "nope.safetensors" in err
