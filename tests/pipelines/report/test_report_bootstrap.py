"""Paired bootstrap of the mIoU difference over validation images."""

import numpy as np
import pytest

from pipelines.report.bootstrap import align, miou_from_sums, paired_bootstrap


def _stats(inter, union, ids=None):
    inter, union = np.asarray(inter), np.asarray(union)
    ids = ids if ids is not None else [f"i{k}" for k in range(len(inter))]
    return {"image_ids": np.array(ids), "intersection": inter, "union": union}


def test_miou_from_sums_is_nanmean_over_classes_of_summed_ratio():
    # class 2 has an empty union: NaN, left out of the mean
    assert miou_from_sums(np.array([1.0, 3.0, 0.0]), np.array([2.0, 4.0, 0.0])) == pytest.approx(
        (0.5 + 0.75) / 2
    )
    batched = miou_from_sums(np.array([[1.0, 1.0], [0.0, 2.0]]), np.array([[2.0, 4.0], [0.0, 0.0]]))
    assert batched[0] == pytest.approx(0.375)
    assert np.isnan(batched[1])


def test_align_uses_common_ids_in_one_order():
    a = _stats([[1, 1], [2, 2], [3, 3]], [[4, 4]] * 3, ["x", "y", "z"])
    b = _stats([[30, 30], [10, 10]], [[40, 40]] * 2, ["z", "x"])
    (ia, _), (ib, _) = align([a, b])
    assert ia[:, 0].tolist() == [1, 3] and ib[:, 0].tolist() == [10, 30]
    with pytest.raises(ValueError, match="share no validation image"):
        align([a, _stats([[1, 1]], [[2, 2]], ["q"])])


def test_exact_shift_gives_a_degenerate_interval_at_the_true_difference():
    """IoU_a = IoU_b + 0.1 on every class of every image subset: pairing makes the CI collapse."""
    rng = np.random.default_rng(0)
    union = rng.integers(100, 200, size=(40, 4)).astype(float)
    inter_b = np.floor(union * rng.uniform(0.2, 0.6, size=union.shape))
    inter_a = inter_b + 0.1 * union
    res = paired_bootstrap([(_stats(inter_a, union), _stats(inter_b, union))], n_boot=500, seed=1)
    assert res.diff == pytest.approx(0.1)
    assert res.low == pytest.approx(0.1) and res.high == pytest.approx(0.1)


def _population(rng, n, delta):
    """Per-image stats of two models; model a's per-image IoU is b's plus delta (+ noise)."""
    union = rng.integers(50, 150, size=(n, 3)).astype(float)
    iou_b = rng.uniform(0.3, 0.6, size=union.shape)
    iou_a = np.clip(iou_b + delta + rng.normal(0, 0.08, size=union.shape), 0, 1)
    return iou_a * union, iou_b * union, union


def test_interval_contains_the_true_difference_and_covers_about_95_percent():
    rng = np.random.default_rng(42)
    ia, ib, u = _population(rng, 100_000, 0.03)
    truth = miou_from_sums(ia.sum(0), u.sum(0)) - miou_from_sums(ib.sum(0), u.sum(0))
    hits, widths = 0, []
    for rep in range(60):
        k = rng.choice(len(u), size=150, replace=False)
        res = paired_bootstrap([(_stats(ia[k], u[k]), _stats(ib[k], u[k]))], n_boot=400, seed=rep)
        hits += res.low <= truth <= res.high
        widths.append(res.high - res.low)
        if rep == 0:
            assert res.low <= truth <= res.high
            assert res.low > 0  # the 3-point gap is real at 150 images
    assert 0.85 <= hits / 60 <= 1.0
    assert np.mean(widths) < 0.02


def test_pooled_pairs_average_the_per_seed_differences_and_seeding_is_reproducible():
    rng = np.random.default_rng(3)
    pairs = []
    for delta in (0.02, 0.06):
        ia, ib, u = _population(rng, 80, delta)
        pairs.append((_stats(ia, u), _stats(ib, u)))
    one = [paired_bootstrap([p], n_boot=300, seed=0).diff for p in pairs]
    pooled = paired_bootstrap(pairs, n_boot=300, seed=0)
    assert pooled.diff == pytest.approx(np.mean(one))
    assert pooled.low < pooled.diff < pooled.high
    again = paired_bootstrap(pairs, n_boot=300, seed=0)
    assert (again.low, again.high) == (pooled.low, pooled.high)
    with pytest.raises(ValueError, match="at least one"):
        paired_bootstrap([])
