"""Paired bootstrap over validation images of an mIoU difference (beyond the paper).

The paper (§4) compares single numbers. Here each model's mIoU is recomputed from per-image
intersections and unions (``per_image_stats.npz``), so that resampling the *same* image indices for both
models gives the sampling distribution of the difference: mIoU = nanmean over classes of
sum(I) / sum(U) over the resampled images (a class with an empty union is NaN, as in the evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BootstrapResult:
    """Observed difference (a - b) in mIoU and its percentile confidence interval, in [0, 1] units."""

    diff: float
    low: float
    high: float
    n_images: int
    n_boot: int
    level: float


def miou_from_sums(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """mIoU from summed intersections/unions; works on (C,) or batched (..., C) arrays."""
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, intersection / np.where(union > 0, union, 1), np.nan)
    all_nan = np.all(np.isnan(iou), axis=-1)
    out = np.full(iou.shape[:-1], np.nan)
    if np.any(~all_nan):
        out[~all_nan] = np.nanmean(iou[~all_nan], axis=-1)
    return out if out.ndim else float(out)


def align(stats: Sequence[dict[str, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(intersection, union) of every run restricted to the image ids all runs share, in one order."""
    id_lists = [[str(i) for i in s["image_ids"]] for s in stats]
    common_set = set(id_lists[0]).intersection(*id_lists[1:])
    common = [i for i in id_lists[0] if i in common_set]
    if not common:
        raise ValueError("The runs share no validation image ids; they were not evaluated on the same split.")
    if len({s["intersection"].shape[1] for s in stats}) != 1:
        raise ValueError("The runs have different numbers of classes; they cannot be compared.")
    out = []
    for s, ids in zip(stats, id_lists, strict=True):
        where = {i: k for k, i in enumerate(ids)}
        rows = np.array([where[i] for i in common])
        out.append((np.asarray(s["intersection"], float)[rows], np.asarray(s["union"], float)[rows]))
    return out


def paired_bootstrap(
    pairs: Sequence[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]],
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """CI of mean-over-pairs of mIoU(a) - mIoU(b), resampling validation images with replacement.

    ``pairs`` holds (stats of model a, stats of model b) per seed; each dict has ``image_ids``,
    ``intersection`` (n, C) and ``union`` (n, C); only image ids common to all runs are used. One set
    of resampled image indices per bootstrap replicate is applied to both models of every pair (all
    pairs are evaluated on the same images), so the interval reflects which validation images were
    drawn, not seed-to-seed variation.
    With one pair this is the plain per-seed paired bootstrap.
    """
    if not pairs:
        raise ValueError("paired_bootstrap needs at least one (a, b) pair of per-image stats.")
    flat = align([s for pair in pairs for s in pair])
    aligned = [(*flat[2 * k], *flat[2 * k + 1]) for k in range(len(pairs))]
    n = aligned[0][0].shape[0]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    # counts[b, i]: how often image i was drawn in replicate b (sums over a resample = counts @ stats).
    flat_idx = (np.arange(n_boot)[:, None] * n + idx).ravel()
    counts = np.bincount(flat_idx, minlength=n_boot * n).reshape(n_boot, n).astype(float)
    observed = []
    replicates = np.zeros(n_boot)
    for ia, ua, ib, ub in aligned:
        observed.append(miou_from_sums(ia.sum(0), ua.sum(0)) - miou_from_sums(ib.sum(0), ub.sum(0)))
        da = miou_from_sums(counts @ ia, counts @ ua)
        db = miou_from_sums(counts @ ib, counts @ ub)
        replicates += da - db
    replicates /= len(aligned)
    alpha = (1.0 - level) / 2.0
    low, high = np.nanquantile(replicates, [alpha, 1.0 - alpha])
    return BootstrapResult(
        diff=float(np.mean(observed)),
        low=float(low),
        high=float(high),
        n_images=n,
        n_boot=n_boot,
        level=level,
    )
