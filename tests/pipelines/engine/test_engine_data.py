"""Data pipeline: reading the prepared layout, augmentation alignment, reproducible order."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.engine.data import (
    IMAGENET_MEAN,
    DatasetNotPreparedError,
    InfiniteBatchSampler,
    SegmentationDataset,
    TrainTransform,
    denormalise,
    read_meta,
    train_loader,
)


def label_from_colour(image: np.ndarray, colours: list, tol: float = 1.0) -> np.ndarray:
    """The class of pixels whose colour is (within ``tol``) a pure class colour, else -1.

    The fixture dataset paints class k with ``meta["palette"][k]``.
    """
    out = np.full(image.shape[:2], -1)
    for k, colour in enumerate(np.array(colours, dtype=np.float64)):
        out[np.abs(image - colour).max(-1) <= tol] = k
    return out


def test_dataset_reads_layout(prepared: Path) -> None:
    ds = SegmentationDataset(prepared, "val")
    assert len(ds) == 4 and ds.ids == sorted(ds.ids) and ds.num_classes == 3
    image, label, image_id = ds[0]
    assert image.shape == (3, 40, 48) and image.dtype == torch.float32
    assert label.shape == (40, 48) and image_id == "val_000"
    raw, raw_label = ds.load(0)
    np.testing.assert_array_equal(
        label_from_colour(raw, ds.meta["palette"])[raw_label != 255], raw_label[raw_label != 255]
    )


def test_missing_dataset_names_path_and_fix(tmp_path: Path) -> None:
    missing = tmp_path / "voc2012"
    with pytest.raises(DatasetNotPreparedError, match=r"voc2012.*python -m pipelines\.prepare voc2012"):
        read_meta(missing)
    missing.mkdir()
    with pytest.raises(DatasetNotPreparedError, match="meta.json is missing"):
        read_meta(missing)


def test_missing_split_is_clear(prepared: Path) -> None:
    with pytest.raises(DatasetNotPreparedError, match="Split 'test' is missing"):
        SegmentationDataset(prepared, "test")


@pytest.mark.parametrize("crop", [24, 64])
def test_augmentation_keeps_labels_aligned(prepared: Path, crop: int) -> None:
    ds = SegmentationDataset(prepared, "train")
    transform = TrainTransform(crop, (0.7, 1.3), hflip=True)
    checked = 0
    for i in range(len(ds)):
        image, label = ds.load(i)
        for seed in range(4):
            x, y = transform(image, label, np.random.default_rng(seed))
            assert x.shape == (3, crop, crop) and y.shape == (crop, crop)
            pixels = denormalise(x).permute(1, 2, 0).numpy()
            y = y.numpy()
            derived = label_from_colour(pixels, ds.meta["palette"], tol=1.0)
            sure = (derived >= 0) & (y != 255)
            # Pure-colour pixels carry their class; only bilinear-blended edge pixels are not pure.
            np.testing.assert_array_equal(y[sure], derived[sure])
            assert sure.sum() >= 0.7 * (y != 255).sum()
            checked += int(sure.sum())
            if crop > 48:  # padding: label 255, image the ImageNet mean
                pad = y == 255
                assert pad.sum() >= crop * crop - 52 * 52
    assert checked > 10_000


def test_flip_happens_and_mirrors_image_and_label(prepared: Path) -> None:
    ds = SegmentationDataset(prepared, "train")
    image, label = ds.load(0)
    transform = TrainTransform(48, (1.0, 1.0), hflip=True)  # no scaling; crop = pad to 48x48
    outcomes = set()
    for seed in range(12):
        x, y = transform(image, label, np.random.default_rng(seed))
        y = y.numpy()
        if np.array_equal(y[:40], label):
            outcomes.add("same")
            pixels = denormalise(x).permute(1, 2, 0).numpy()[:40]
        else:
            np.testing.assert_array_equal(y[:40], label[:, ::-1])
            outcomes.add("flipped")
            pixels = denormalise(x).permute(1, 2, 0).numpy()[:40, ::-1]
        np.testing.assert_allclose(pixels, image, atol=0.01)
        np.testing.assert_array_equal(y[40:], 255)
        mean = np.broadcast_to(np.array(IMAGENET_MEAN)[:, None, None] * 255, (3, 8, 48))
        np.testing.assert_allclose(denormalise(x)[:, 40:], mean, atol=0.6)
    assert outcomes == {"same", "flipped"}


def test_sampler_resumes_the_exact_stream() -> None:
    full = list(itertools.islice(iter(InfiniteBatchSampler(5, 3, seed=4)), 6))
    resumed = list(itertools.islice(iter(InfiniteBatchSampler(5, 3, seed=4, start=2 * 3)), 4))
    assert resumed == full[2:]
    flat = [i for batch in full for i, _ in batch]
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:10]) == list(
        range(5)
    )  # one permutation per epoch
    assert flat[:5] != flat[5:10] or flat[5:10] != flat[10:15]
    assert len({s for batch in full for _, s in batch}) == 18  # a fresh augmentation seed per sample


def test_loader_order_independent_of_workers(prepared: Path) -> None:
    ds = SegmentationDataset(prepared, "train", TrainTransform(24))
    a = list(itertools.islice(iter(train_loader(ds, 4, 3, 0, num_workers=0, pin_memory=False)), 3))
    b = list(itertools.islice(iter(train_loader(ds, 4, 3, 0, num_workers=2, pin_memory=False)), 3))
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
