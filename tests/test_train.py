"""Training: standardisation, D4 augmentation, learning, best-epoch restore, determinism."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hrtem_testutils import set_torch_threads
from hrtem_tl.model import build_unet
from hrtem_tl.train import Precision, dihedral, evaluate, random_batch, standardize, train_stage

set_torch_threads()
FP32 = Precision("cpu", None)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return build_unet()


def disks(n: int, size: int, rng: np.random.Generator, noise: float = 0.4):
    """Bright and dark disks (1 to 3, radius 5-10 px) in Gaussian noise; masks mark the disks."""
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n):
        mask = np.zeros((size, size), np.uint8)
        image = np.zeros((size, size), np.float32)
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.uniform(8, size - 8), rng.uniform(8, size - 8), rng.uniform(5, 10)
            disk = np.hypot(yy - cy, xx - cx) < r
            mask[disk] = 1
            image[disk] = rng.choice([-1.0, 1.0])
        images.append(image + rng.normal(0, noise, image.shape))
        masks.append(mask)
    return standardize(np.stack(images)), np.stack(masks)


# -- standardisation and augmentation ----------------------------------------------------------

def _float32_tolerance(images: np.ndarray) -> np.ndarray:
    """Per image, how far float32 standardisation may stray: rounding the inputs to float32
    moves each value by up to eps * |x|, which becomes eps * max|x| / std after dividing by
    the spread (plus the rounding of the mean and the sum of squares, a few eps more)."""
    eps = np.finfo(np.float32).eps
    with np.errstate(divide="ignore", invalid="ignore"):  # constant images: skipped by the caller
        scale = np.abs(images).max(axis=(1, 2)) / images.std(axis=(1, 2))
    return 16 * eps * (1 + scale)


@settings(max_examples=30, deadline=None)
@given(arrays(np.float64, (3, 8, 12), elements=st.floats(-1e3, 1e3)), st.floats(0.1, 100), st.floats(-50, 50))
def test_standardize(images, scale, shift):
    out = standardize(images)
    assert out.dtype == np.float32
    spread = images.std(axis=(1, 2))
    ok = spread > 1e-3
    moved = images * scale + shift
    tol = np.maximum(_float32_tolerance(images), _float32_tolerance(moved))
    for img, o, t in zip(images[ok], out[ok], tol[ok]):
        assert abs(float(o.mean())) <= t
        assert abs(float(o.std()) - 1) <= t
    # invariant to the detector's gain and offset, to float32 precision of the inputs
    diff = np.abs(standardize(moved)[ok] - out[ok]).max(axis=(1, 2))
    assert (diff <= 2 * tol[ok]).all(), (diff, tol[ok])


def test_standardize_constant_image_is_finite():
    out = standardize(np.full((1, 4, 4), 7.0))
    assert np.all(np.isfinite(out)) and np.all(out == 0)


@settings(max_examples=40, deadline=None)
@given(arrays(np.int64, st.tuples(st.integers(2, 7), st.integers(2, 7)), elements=st.integers(0, 2**40), unique=True))
def test_dihedral_is_the_group_d4(a):
    images = [dihedral(a, k) for k in range(8)]
    # a non-symmetric (all-distinct) array has 8 distinct images (or 4 if not square:
    # then transposing changes the shape, and the shapes tell them apart)
    keys = {(im.shape, im.tobytes()) for im in images}
    assert len(keys) == 8
    for im in images:
        assert sorted(im.ravel()) == sorted(a.ravel())  # a permutation of the pixels
    # closed under composition, each element has an inverse
    for j in range(8):
        composed = {(dihedral(images[j], k).shape, dihedral(images[j], k).tobytes()) for k in range(8)}
        assert composed == keys
    assert np.array_equal(dihedral(a, 0), a)
    assert np.array_equal(dihedral(a, 1), np.rot90(a))
    assert np.array_equal(dihedral(a, 4), np.fliplr(a))


def test_dihedral_acts_on_the_last_two_axes():
    a = np.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    for k in range(8):
        out = dihedral(a, k)
        for i in range(2):
            for j in range(3):
                assert np.array_equal(out[i, j], dihedral(a[i, j], k))


def test_random_batch_keeps_image_and_mask_aligned():
    rng = np.random.default_rng(0)
    masks = (rng.uniform(size=(5, 40, 40)) < 0.5).astype(np.uint8)
    images = masks.astype(np.float32) * 7.0
    for seed in range(5):
        x, y = random_batch(images, masks, 16, 24, np.random.default_rng(seed))
        assert x.shape == (16, 1, 24, 24) and x.dtype == torch.float32
        assert y.shape == (16, 24, 24) and y.dtype == torch.int64
        assert torch.equal(x[:, 0], y.float() * 7.0)


def test_random_batch_draws_crops_under_all_eight_transforms():
    """Each sample is a D4 transform of a crop of one image; all eight occur."""
    images = np.arange(3 * 20 * 20, dtype=np.float32).reshape(3, 20, 20)  # every pixel unique
    masks = (images.astype(np.int64) % 2).astype(np.uint8)
    x, y = random_batch(images, masks, 64, 8, np.random.default_rng(1))
    seen = set()
    for sample, label in zip(x[:, 0].numpy(), y.numpy()):
        i, r, c = np.unravel_index(int(sample.min()), images.shape)  # a crop's smallest value is a corner
        matches = []
        for k in range(8):
            for r0 in range(max(0, r - 7), r + 1):
                for c0 in range(max(0, c - 7), c + 1):
                    crop = images[i, r0:r0 + 8, c0:c0 + 8]
                    if crop.shape == (8, 8) and np.array_equal(dihedral(crop, k), sample):
                        matches.append(k)
                        assert np.array_equal(dihedral(masks[i, r0:r0 + 8, c0:c0 + 8], k), label)
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == set(range(8))


def test_random_batch_crop_larger_than_images():
    images = np.zeros((2, 16, 16), np.float32)
    x, y = random_batch(images, images.astype(np.uint8), 3, 64, np.random.default_rng(0))
    assert x.shape == (3, 1, 16, 16)


# -- evaluation ---------------------------------------------------------------------------------

def test_evaluate_matches_a_direct_computation(unet):
    rng = np.random.default_rng(0)
    images, masks = disks(5, 32, rng)
    m = evaluate(unet, images, masks, FP32, batch=2)
    unet.eval()
    with torch.no_grad():
        logits = unet(torch.from_numpy(images[:, None]))
    loss = F.cross_entropy(logits, torch.from_numpy(masks).long()).item()
    pred = logits.argmax(1).numpy().astype(bool)
    truth = masks.astype(bool)
    assert m["loss"] == pytest.approx(loss, rel=1e-4)
    assert m["dice"] == pytest.approx(2 * (pred & truth).sum() / (pred.sum() + truth.sum()), rel=1e-6)
    assert m["accuracy"] == pytest.approx((pred == truth).mean(), rel=1e-6)


# -- training -----------------------------------------------------------------------------------

def test_small_training_run_learns(unet):
    """Bright/dark disks in noise: the loss falls and held-out Dice exceeds 0.9 (about 25 s)."""
    rng = np.random.default_rng(0)
    train, val, test = disks(32, 64, rng), disks(8, 64, rng), disks(8, 64, rng)
    model = copy.deepcopy(unet)
    before = evaluate(model, *test, FP32)
    result = train_stage(model, train, val, epochs=4, steps=10, lr=1e-3, batch_size=4, crop=64, seed=0,
                         precision=FP32)
    history = result.history
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert [h["lr"] for h in history] == pytest.approx([1e-3 * 0.99**e for e in range(4)])
    after = evaluate(model, *test, FP32)
    assert after["loss"] < 0.5 * before["loss"]
    assert after["dice"] > 0.9, after


def test_best_epoch_is_restored(unet, monkeypatch):
    """The weights kept are those of the epoch with the lowest validation loss.

    The validation losses are scripted (the real evaluation still runs) so the best
    epoch is a middle one; the weights of every epoch are snapshotted from the
    progress callback and compared bit by bit with the weights returned.
    """
    import hrtem_tl.train as T

    script = iter([0.9, 0.3, 0.5, 0.4])
    real = T.evaluate

    def scripted(*args, **kwargs):
        return real(*args, **kwargs) | {"loss": next(script)}

    monkeypatch.setattr(T, "evaluate", scripted)
    rng = np.random.default_rng(1)
    train, val = disks(8, 32, rng), disks(2, 32, rng)
    model = copy.deepcopy(unet)
    snapshots = {}
    result = train_stage(model, train, val, epochs=4, steps=2, lr=3e-3, batch_size=2, crop=32, seed=0,
                         precision=FP32, progress=lambda e, h: snapshots.update({e: copy.deepcopy(model.state_dict())}))
    assert result.best_epoch == 2
    assert [h["val_loss"] for h in result.history] == [0.9, 0.3, 0.5, 0.4]
    kept = model.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in snapshots[2].items())
    assert not all(torch.equal(kept[k], v) for k, v in snapshots[4].items())


def test_restored_model_reproduces_its_validation_loss(unet):
    rng = np.random.default_rng(1)
    train, val = disks(8, 32, rng), disks(4, 32, rng)
    model = copy.deepcopy(unet)
    result = train_stage(model, train, val, epochs=3, steps=3, lr=3e-3, batch_size=4, crop=32, seed=0,
                         precision=FP32)
    losses = [h["val_loss"] for h in result.history]
    assert result.best_epoch == int(np.argmin(losses)) + 1
    assert evaluate(model, *val, FP32)["loss"] == pytest.approx(min(losses), rel=1e-5)
    assert result.wall_time > 0


def test_same_seed_same_history(unet):
    rng = np.random.default_rng(2)
    train, val = disks(6, 32, rng), disks(2, 32, rng)
    kwargs = dict(epochs=2, steps=2, lr=1e-3, batch_size=2, crop=32, precision=FP32)
    a, b, c = copy.deepcopy(unet), copy.deepcopy(unet), copy.deepcopy(unet)
    ha = train_stage(a, train, val, seed=5, **kwargs).history
    hb = train_stage(b, train, val, seed=5, **kwargs).history
    hc = train_stage(c, train, val, seed=6, **kwargs).history
    assert ha == hb
    assert ha != hc
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_precision_choice():
    assert Precision("cpu", None).name == "fp32"
    assert Precision("cpu", torch.bfloat16).name == "bf16"
    assert Precision.choose(mixed=False, device="cpu").dtype is None
    chosen = Precision.choose(mixed=True, device="cpu")
    assert chosen.device == "cpu" and chosen.name in ("fp32", "bf16")
