"""Segmentation metrics from one confusion matrix over a whole split (the paper's protocol).

Mean IoU is the nanmean of per-class IoU over the classes that appear in the ground truth or in the
prediction (a class absent from both has an undefined IoU and is left out), as in the VOC and
Cityscapes evaluation code the paper reports against. Pixels labelled ``ignore_index`` (255) count
nowhere. Beyond the paper, a boundary IoU restricts the same computation to a band around
ground-truth boundaries, since RefineNet's claim is about high-resolution predictions.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

IGNORE_INDEX = 255


class ConfusionMatrix:
    """Accumulates a ``(C, C)`` int64 matrix: rows = ground truth, columns = prediction."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(
        self,
        pred: torch.Tensor | np.ndarray,
        target: torch.Tensor | np.ndarray,
        mask: torch.Tensor | np.ndarray | None = None,
    ) -> np.ndarray:
        """Add ``pred`` vs ``target`` (same shape, integer class ids); returns this update's matrix.

        ``mask`` (bool, same shape) restricts the update to selected pixels (boundary band).
        """
        pred_t = torch.as_tensor(pred).reshape(-1).long().cpu()
        target_t = torch.as_tensor(target).reshape(-1).long().cpu()
        if pred_t.shape != target_t.shape:
            raise ValueError(f"pred and target differ in size: {tuple(pred.shape)} vs {tuple(target.shape)}.")
        valid = target_t != self.ignore_index
        if mask is not None:
            valid &= torch.as_tensor(mask).reshape(-1).bool().cpu()
        c = self.num_classes
        t, p = target_t[valid], pred_t[valid]
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= c):
            raise ValueError(
                f"Ground-truth class ids must lie in [0, {c - 1}] or be {self.ignore_index}; "
                f"found {sorted(set(t.unique().tolist()) - set(range(c)))}."
            )
        if p.numel() and (int(p.min()) < 0 or int(p.max()) >= c):
            raise ValueError(f"Predicted class ids must lie in [0, {c - 1}].")
        counts = torch.bincount(t * c + p, minlength=c * c).reshape(c, c).numpy().astype(np.int64)
        self.matrix += counts
        return counts

    def merge(self, other: ConfusionMatrix) -> None:
        self.matrix += other.matrix

    def compute(self) -> dict[str, float]:
        """Pixel accuracy, mean class accuracy, mIoU and frequency-weighted IoU (NaN if no pixels)."""
        return summary(self.matrix)

    def iou(self) -> np.ndarray:
        return per_class_iou(self.matrix)


def per_class_iou(matrix: np.ndarray) -> np.ndarray:
    """IoU per class = TP / (TP + FP + FN); NaN for classes absent from ground truth and prediction."""
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def summary(matrix: np.ndarray) -> dict[str, float]:
    """Metrics of a confusion matrix: pixel_acc, mean_acc, mIoU, fwIoU (values in [0, 1])."""
    matrix = np.asarray(matrix, dtype=np.float64)
    total = matrix.sum()
    tp = np.diag(matrix)
    gt = matrix.sum(1)
    iou = per_class_iou(matrix)
    nan = float("nan")
    if total == 0:
        return {"pixel_acc": nan, "mean_acc": nan, "mIoU": nan, "fwIoU": nan}
    class_acc = np.where(gt > 0, tp / np.where(gt > 0, gt, 1), np.nan)
    freq = gt / total
    present = gt > 0
    return {
        "pixel_acc": float(tp.sum() / total),
        "mean_acc": _nanmean(class_acc),
        "mIoU": _nanmean(iou),
        "fwIoU": float(np.sum(freq[present] * np.nan_to_num(iou[present]))),
    }


def boundary_band(
    target: torch.Tensor | np.ndarray, width: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Bool mask of pixels within ``width`` px (Chebyshev) of a ground-truth label change.

    A pixel is an edge pixel when a 4-neighbour has a different label (transitions to the ignore
    label count: VOC marks object borders with 255). The band is the edge mask dilated by a
    ``(2*width-1)``-wide max-pool, so it is ``width`` px deep on each side of a boundary. Pixels
    with the ignore label stay out of the band.
    """
    if width < 1:
        raise ValueError(f"boundary width must be >= 1, got {width}.")
    lab = torch.as_tensor(target)
    squeeze = lab.dim() == 2
    if squeeze:
        lab = lab[None]
    lab = lab.long()
    edge = torch.zeros_like(lab, dtype=torch.bool)
    dy = lab[:, 1:, :] != lab[:, :-1, :]
    dx = lab[:, :, 1:] != lab[:, :, :-1]
    edge[:, 1:, :] |= dy
    edge[:, :-1, :] |= dy
    edge[:, :, 1:] |= dx
    edge[:, :, :-1] |= dx
    k = 2 * width - 1
    band = F.max_pool2d(edge[:, None].float(), kernel_size=k, stride=1, padding=width - 1)[:, 0] > 0
    band &= lab != ignore_index
    return band[0] if squeeze else band


def intersection_union(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class intersection and union counts of one image (for paired bootstraps over images)."""
    cm = ConfusionMatrix(num_classes, ignore_index)
    m = cm.update(pred, target).astype(np.int64)
    tp = np.diag(m)
    return tp, m.sum(0) + m.sum(1) - tp
