"""Segmentation metrics against hand-computed examples and brute-force definitions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hrtem_tl.metrics import HIGHER_IS_BETTER, METRICS, ConfusionCounts


def metrics_of(pred, truth, loss_sum=0.0) -> dict[str, float]:
    counts = ConfusionCounts()
    counts.update(np.asarray(pred), np.asarray(truth), loss_sum)
    return counts.metrics()


def test_hand_computed_example():
    pred = [[1, 1, 0], [0, 1, 0]]
    truth = [[1, 0, 0], [1, 1, 0]]
    # tp = 2 (0,0),(1,1); fp = 1 (0,1); fn = 1 (1,0); tn = 2
    m = metrics_of(pred, truth, loss_sum=3.0)
    assert m == pytest.approx({"loss": 0.5, "dice": 4 / 6, "iou": 2 / 4, "precision": 2 / 3, "recall": 2 / 3,
                               "accuracy": 4 / 6})


def test_second_hand_computed_example():
    pred = [[0, 1, 1, 1]]
    truth = [[0, 0, 1, 1]]
    # tp 2, fp 1, fn 0, tn 1
    m = metrics_of(pred, truth, loss_sum=0.8)
    assert m == pytest.approx({"loss": 0.2, "dice": 0.8, "iou": 2 / 3, "precision": 2 / 3, "recall": 1.0,
                               "accuracy": 0.75})


def test_pooling_is_over_pixels_not_images():
    counts = ConfusionCounts()
    counts.update(np.array([[1, 0], [0, 0]]), np.array([[1, 0], [0, 0]]), 0.4)  # perfect: dice 1
    counts.update(np.array([[1, 1], [0, 0]]), np.array([[0, 0], [1, 0]]), 2.0)  # dice 0
    m = counts.metrics()
    # pooled tp 1, fp 2, fn 1, tn 4: dice 2/5, not the mean of per-image dice (0.5)
    assert (counts.tp, counts.fp, counts.fn, counts.tn) == (1, 2, 1, 4)
    assert m["dice"] == pytest.approx(0.4)
    assert m["iou"] == pytest.approx(0.25)
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["loss"] == pytest.approx(2.4 / 8)


def test_both_empty_is_perfect():
    m = metrics_of(np.zeros((4, 4)), np.zeros((4, 4)), loss_sum=1.6)
    assert m == pytest.approx({"loss": 0.1, "dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0,
                               "accuracy": 1.0})


def test_empty_prediction_of_particles():
    truth = np.zeros((4, 4))
    truth[1:3, 1:3] = 1
    m = metrics_of(np.zeros((4, 4)), truth)
    assert m["dice"] == 0.0 and m["iou"] == 0.0 and m["recall"] == 0.0
    assert m["precision"] == 0.0  # an empty prediction is not a precise one
    assert m["accuracy"] == pytest.approx(12 / 16)


def test_prediction_of_particles_that_are_not_there():
    pred = np.zeros((4, 4))
    pred[0, :] = 1
    m = metrics_of(pred, np.zeros((4, 4)))
    assert m["dice"] == 0.0 and m["iou"] == 0.0 and m["precision"] == 0.0
    assert m["recall"] == 0.0
    assert m["accuracy"] == pytest.approx(12 / 16)


def test_no_pixels():
    assert ConfusionCounts().metrics()["loss"] == 0.0
    assert ConfusionCounts().metrics()["dice"] == 1.0


def test_metric_names():
    assert set(METRICS) == set(HIGHER_IS_BETTER) == {"loss", "dice", "iou", "precision", "recall", "accuracy"}
    assert HIGHER_IS_BETTER["loss"] is False and all(HIGHER_IS_BETTER[m] for m in METRICS if m != "loss")


masks = arrays(np.bool_, st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), truth=masks)
def test_against_definitions(data, truth):
    pred = data.draw(arrays(np.bool_, truth.shape))
    m = metrics_of(pred, truth)
    tp = sum(1 for p, t in zip(pred.ravel(), truth.ravel()) if p and t)
    fp = sum(1 for p, t in zip(pred.ravel(), truth.ravel()) if p and not t)
    fn = sum(1 for p, t in zip(pred.ravel(), truth.ravel()) if t and not p)
    n = truth.size
    for value in m.values():
        assert 0.0 <= value <= 1.0
    assert m["accuracy"] == pytest.approx((n - fp - fn) / n)
    if tp + fp + fn == 0:
        assert m["dice"] == m["iou"] == 1.0
        return
    assert m["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["iou"] == pytest.approx(tp / (tp + fp + fn))
    # dice and IoU are the same ordering: dice = 2 IoU / (1 + IoU)
    assert m["dice"] == pytest.approx(2 * m["iou"] / (1 + m["iou"]))
    # dice is the harmonic mean of precision and recall
    if tp > 0:
        p, r = tp / (tp + fp), tp / (tp + fn)
        assert m["precision"] == pytest.approx(p) and m["recall"] == pytest.approx(r)
        assert m["dice"] == pytest.approx(2 * p * r / (p + r))


@settings(max_examples=50, deadline=None)
@given(truth=masks)
def test_swapping_prediction_and_truth_swaps_precision_and_recall(truth):
    rng = np.random.default_rng(truth.size)
    pred = rng.uniform(size=truth.shape) < 0.5
    a, b = metrics_of(pred, truth), metrics_of(truth, pred)
    assert a["precision"] == pytest.approx(b["recall"]) and a["recall"] == pytest.approx(b["precision"])
    assert a["dice"] == pytest.approx(b["dice"]) and a["iou"] == pytest.approx(b["iou"])
