"""The U-Net: size, encoder/decoder split, freezing during training, checkpoints."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from hrtem_testutils import set_torch_threads
from hrtem_tl import model as M
from hrtem_tl.train import Precision, train_stage

set_torch_threads()
FP32 = Precision("cpu", None)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return M.build_unet()


def small_task(n=6, size=32, seed=0):
    rng = np.random.default_rng(seed)
    masks = (rng.uniform(size=(n, size, size)) < 0.3).astype(np.uint8)
    images = (masks * 2.0 + rng.normal(0, 0.5, size=masks.shape)).astype(np.float32)
    return images, masks


def test_parameter_count(unet):
    assert M.count_parameters(unet) == 14_322_082
    encoder = sum(p.numel() for p in unet.encoder.parameters())
    decoder = sum(p.numel() for p in unet.decoder.parameters())
    head = sum(p.numel() for p in unet.segmentation_head.parameters())
    assert encoder + decoder + head == 14_322_082
    assert 0.75 < encoder / 14_322_082 < 0.81  # "about 78 % of the weights"


def test_one_channel_in_two_classes_out(unet):
    unet.eval()
    with torch.no_grad():
        out = unet(torch.randn(3, 1, 64, 96))
    assert out.shape == (3, 2, 64, 96)


@pytest.mark.parametrize("mode", ["encoder", "decoder"])
def test_freezing_counts_trainable_parameters(unet, mode):
    model = copy.deepcopy(unet)
    M.apply_freezing(model, mode)
    part = sum(p.numel() for p in M.frozen_part(model, mode).parameters())
    assert M.count_parameters(model, trainable_only=True) == 14_322_082 - part
    M.apply_freezing(model, "none")
    assert M.count_parameters(model, trainable_only=True) == 14_322_082


def test_unknown_freezing_mode(unet):
    with pytest.raises(ValueError, match="unknown freezing mode 'head'"):
        M.frozen_part(unet, "head")


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("frozen,other", [("encoder", "decoder"), ("decoder", "encoder")])
def test_frozen_part_is_bit_identical_after_training(unet, frozen, other):
    model = copy.deepcopy(unet)
    before = {"encoder": _state(model.encoder), "decoder": _state(model.decoder)}
    assert any("running_mean" in k for k in before[frozen])  # it has batch norms to protect
    train = small_task()
    val = small_task(2, seed=1)
    train_stage(model, train, val, epochs=1, steps=2, lr=1e-2, batch_size=2, crop=32, seed=0,
                freeze=frozen, precision=FP32)
    after = {"encoder": _state(model.encoder), "decoder": _state(model.decoder)}
    for key, value in before[frozen].items():
        assert torch.equal(value, after[frozen][key]), f"{frozen}.{key} moved"
    changed = [k for k, v in before[other].items() if not torch.equal(v, after[other][k])]
    weights = [k for k in before[other] if k.endswith("weight")]
    assert len([k for k in changed if k.endswith("weight")]) > 0.9 * len(weights)
    assert any("running_mean" in k for k in changed)  # the trained part's batch norms adapt
    # training leaves every weight trainable again
    assert M.count_parameters(model, trainable_only=True) == 14_322_082


def test_checkpoint_roundtrip(unet, tmp_path):
    from safetensors import safe_open

    model = copy.deepcopy(unet)
    # move the batch-norm buffers away from their initial values so the test sees them
    train_stage(model, small_task(), small_task(2, seed=1), epochs=1, steps=1, lr=1e-3, batch_size=2, crop=32,
                seed=0, precision=FP32)
    path = tmp_path / "ckpt" / "model.safetensors"
    M.save_checkpoint(model, path, {"note": "test", "best_epoch": 1})
    meta = json.loads(path.with_suffix(".json").read_text())  # the sidecar is plain JSON
    assert meta["architecture"] == M.ARCHITECTURE and meta["note"] == "test"
    with safe_open(str(path), framework="pt") as fh:  # a safetensors file, no pickle
        assert set(fh.keys()) == set(model.state_dict())
    loaded, meta2 = M.load_checkpoint(path)
    assert meta2 == meta
    original = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, original[key]), key
    # training left the model channels-last; compare outputs in one memory layout
    model.to(memory_format=torch.contiguous_format).eval()
    loaded.eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert not list(tmp_path.rglob("*.tmp"))


def test_checkpoint_of_another_architecture_is_refused(unet, tmp_path):
    path = tmp_path / "m.safetensors"
    M.save_checkpoint(unet, path, {})
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["architecture"] = meta["architecture"] | {"encoder_name": "resnet34"}
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="another architecture"):
        M.load_checkpoint(path)
