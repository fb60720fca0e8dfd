"""Segmentation metrics for the particle class.

Pooling: pixel counts (true/false positives/negatives) are summed over every pixel
of every image of an evaluation set, then each ratio is taken once ("micro"
pooling), so large and small images weigh by their pixels. The loss is the mean
per-pixel cross-entropy on logits (its floor is 0; no offset is subtracted).
An empty denominator gives 1.0 when both prediction and truth are empty and 0.0
otherwise (an empty prediction of particles that are there has precision 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METRICS = ("loss", "dice", "iou", "precision", "recall", "accuracy")
# True where a larger value is better.
HIGHER_IS_BETTER = {"loss": False, "dice": True, "iou": True, "precision": True, "recall": True, "accuracy": True}


@dataclass
class ConfusionCounts:
    """Pixel counts for the particle class, plus the summed loss."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    loss_sum: float = 0.0

    def update(self, pred: np.ndarray, truth: np.ndarray, loss_sum: float = 0.0) -> None:
        pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
        self.tp += int(np.sum(pred & truth))
        self.fp += int(np.sum(pred & ~truth))
        self.fn += int(np.sum(~pred & truth))
        self.tn += int(np.sum(~pred & ~truth))
        self.loss_sum += float(loss_sum)

    @property
    def pixels(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    def metrics(self) -> dict[str, float]:
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn

        def ratio(num: int, den: int) -> float:
            if den == 0:  # 1.0 only when prediction and truth are both empty
                return 1.0 if tp + fp + fn == 0 else 0.0
            return num / den

        return {
            "loss": self.loss_sum / max(self.pixels, 1),
            "dice": ratio(2 * tp, 2 * tp + fp + fn),
            "iou": ratio(tp, tp + fp + fn),
            "precision": ratio(tp, tp + fp),
            "recall": ratio(tp, tp + fn),
            "accuracy": ratio(tp + tn, self.pixels),
        }
