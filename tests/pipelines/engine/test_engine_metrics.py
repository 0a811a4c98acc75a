"""Metrics against hand-computed confusion matrices and an independent implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipelines.engine.metrics import ConfusionMatrix, boundary_band, intersection_union, per_class_iou


def test_hand_computed_confusion_matrix() -> None:
    target = np.array([[0, 0, 1], [1, 255, 2]])
    pred = np.array([[0, 1, 1], [1, 0, 0]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    np.testing.assert_array_equal(cm.matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    np.testing.assert_allclose(cm.iou(), [1 / 3, 2 / 3, 0.0])
    m = cm.compute()
    assert m["pixel_acc"] == pytest.approx(3 / 5)
    assert m["mean_acc"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["mIoU"] == pytest.approx(1 / 3)
    assert m["fwIoU"] == pytest.approx(2 / 5 * 1 / 3 + 2 / 5 * 2 / 3)


def test_absent_class_is_nan_and_excluded() -> None:
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]))
    iou = cm.iou()
    assert math.isnan(iou[3])
    np.testing.assert_allclose(iou[:3], [1.0, 1 / 2, 1 / 2])
    assert cm.compute()["mIoU"] == pytest.approx(2 / 3)  # mean over 3 classes, not 4
    assert cm.compute()["mean_acc"] == pytest.approx((1 + 1 + 0.5) / 3)


def test_class_only_in_prediction_counts_as_zero() -> None:
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 0, 2, 2]), np.array([0, 0, 0, 0]))
    np.testing.assert_allclose(cm.iou(), [0.5, np.nan, 0.0])
    m = cm.compute()
    assert m["mIoU"] == pytest.approx(0.25)  # class 2 (prediction only) is in the mean with IoU 0
    assert m["mean_acc"] == pytest.approx(0.5)  # accuracy only over ground-truth classes
    assert m["pixel_acc"] == pytest.approx(0.5)


def test_all_ignore_image_changes_nothing() -> None:
    cm = ConfusionMatrix(3)
    counts = cm.update(np.full((4, 5), 1), np.full((4, 5), 255))
    assert counts.sum() == 0 and cm.matrix.sum() == 0
    assert all(math.isnan(v) for v in cm.compute().values())
    cm.update(np.array([1]), np.array([1]))
    assert cm.compute()["mIoU"] == 1.0


def test_bad_class_ids_raise() -> None:
    with pytest.raises(ValueError, match=r"Ground-truth class ids must lie in \[0, 2\]"):
        ConfusionMatrix(3).update(np.array([0]), np.array([7]))


def test_against_set_based_implementation_on_random_data() -> None:
    rng = np.random.default_rng(1)
    c = 6
    cm = ConfusionMatrix(c)
    targets, preds = [], []
    for _ in range(5):
        t = rng.integers(0, c, size=(17, 23))
        t[rng.random(t.shape) < 0.1] = 255
        t[t == 4] = 5  # class 4 never in ground truth
        p = rng.integers(0, c - 1, size=t.shape)  # class 5 never predicted
        cm.update(torch.from_numpy(p), torch.from_numpy(t))
        targets.append(t.ravel())
        preds.append(p.ravel())
    t, p = np.concatenate(targets), np.concatenate(preds)
    keep = np.flatnonzero(t != 255)
    ious = []
    for k in range(c):
        gt_set, pred_set = keep[t[keep] == k], keep[p[keep] == k]
        union = np.union1d(gt_set, pred_set).size
        ious.append(np.intersect1d(gt_set, pred_set).size / union if union else np.nan)
    np.testing.assert_allclose(cm.iou(), ious)
    assert cm.compute()["mIoU"] == pytest.approx(np.nanmean(ious))
    assert cm.compute()["pixel_acc"] == pytest.approx(np.mean(t[keep] == p[keep]))
    freq = np.array([np.mean(t[keep] == k) for k in range(c)])
    assert cm.compute()["fwIoU"] == pytest.approx(np.nansum(freq * np.nan_to_num(ious)))


def test_boundary_band_and_boundary_iou() -> None:
    label = np.zeros((6, 6), np.int64)
    label[:, 3:] = 1
    band1 = boundary_band(label, 1).numpy()
    expected = np.zeros((6, 6), bool)
    expected[:, 2:4] = True
    np.testing.assert_array_equal(band1, expected)
    band2 = boundary_band(label, 2).numpy()
    expected[:, 1:5] = True
    np.testing.assert_array_equal(band2, expected)

    pred = np.zeros((6, 6), np.int64)
    pred[:, 4:] = 1  # prediction boundary one pixel to the right
    full = ConfusionMatrix(2)
    full.update(pred, label)
    assert full.compute()["mIoU"] == pytest.approx((18 / 24 + 12 / 18) / 2)
    b1 = ConfusionMatrix(2)
    b1.update(pred, label, mask=band1)
    np.testing.assert_array_equal(b1.matrix, [[6, 0], [6, 0]])
    assert b1.compute()["mIoU"] == pytest.approx(0.25)
    b2 = ConfusionMatrix(2)
    b2.update(pred, label, mask=band2)
    assert b2.compute()["mIoU"] == pytest.approx((12 / 18 + 6 / 12) / 2)


def test_boundary_band_counts_ignore_transitions_but_not_ignore_pixels() -> None:
    label = np.zeros((5, 5), np.int64)
    label[2, 2] = 255
    band = boundary_band(label, 1).numpy()
    assert not band[2, 2] and band[1, 2] and band[2, 1] and not band[0, 0]


def test_intersection_union_per_image() -> None:
    inter, union = intersection_union(np.array([0, 1, 1]), np.array([0, 0, 1]), 3)
    np.testing.assert_array_equal(inter, [1, 1, 0])
    np.testing.assert_array_equal(union, [2, 2, 0])
    np.testing.assert_allclose(per_class_iou(np.diag([2, 0, 1])), [1, np.nan, 1])
