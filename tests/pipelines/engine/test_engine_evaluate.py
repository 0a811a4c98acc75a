"""Evaluation modes: multi-scale, flip and sliding window agree with single scale where they must."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pipelines.engine.data import normalise
from pipelines.engine.evaluate import evaluate, predict_probs

PURE = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)


class BlockDataset:
    """Images of 4x4 blocks (aligned to even coordinates) in pure red/green/blue; label = colour."""

    def __init__(self, n: int = 3, h: int = 24, w: int = 32) -> None:
        rng = np.random.default_rng(0)
        self.items = []
        for i in range(n):
            blocks = rng.integers(0, 3, size=(h // 4, w // 4))
            label = np.kron(blocks, np.ones((4, 4), np.int64))
            label[:2, :2] = 255  # some ignored pixels
            image = PURE[np.where(label == 255, 0, label)]
            self.items.append((normalise(image), torch.from_numpy(label), f"img{i}"))
        self.ids = [it[2] for it in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def colour_model() -> nn.Module:
    """A 1x1 conv: logit_k = 10 x (normalised channel k); pixel-local, so scale-equivariant."""
    conv = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(10 * torch.eye(3).view(3, 3, 1, 1))
        conv.bias.zero_()
    return conv


def test_single_scale_is_exact_on_blocks() -> None:
    ds = BlockDataset()
    result = evaluate(colour_model(), ds, 3)
    m = result.confusion.matrix
    assert np.count_nonzero(m - np.diag(np.diag(m))) == 0 and m.sum() == 3 * (24 * 32 - 4)
    metrics = result.metrics()
    assert (
        metrics["val/mIoU"] == 1.0 and metrics["val/boundary_IoU"] == 1.0 and metrics["val/pixel_acc"] == 1.0
    )
    assert result.intersection.shape == (3, 3) and (result.intersection == result.union).all()


@pytest.mark.parametrize(
    ("scales", "flip", "window"),
    [
        ((1.0,), True, None),
        ((0.5, 1.0, 2.0), False, None),
        ((0.5, 1.0, 2.0), True, None),
        ((1.0,), False, (16, 10)),
        ((0.5, 1.0, 2.0), True, (16, 10)),
        ((1.0,), False, (40, 40)),
    ],
)
def test_modes_equal_single_scale_for_pixel_local_model(scales, flip, window) -> None:
    # Why exact: bilinear resampling by 2 or 1/2 of even-aligned 4x4 blocks mixes a pixel with its
    # neighbours at weight <= 1/4 per side, so with logits linear in colour the own class keeps the
    # largest logit; flipping and windowing a pixel-local model change nothing.
    ds = BlockDataset()
    single = evaluate(colour_model(), ds, 3)
    other = evaluate(colour_model(), ds, 3, scales=scales, flip=flip, sliding_window=window)
    np.testing.assert_array_equal(other.confusion.matrix, single.confusion.matrix)
    np.testing.assert_array_equal(other.boundary.matrix, single.boundary.matrix)


def test_worker_processes_give_the_same_result() -> None:
    ds = BlockDataset()
    single = evaluate(colour_model(), ds, 3)
    workers = evaluate(colour_model(), ds, 3, num_workers=2)
    np.testing.assert_array_equal(workers.confusion.matrix, single.confusion.matrix)
    assert workers.image_ids == single.image_ids == ["img0", "img1", "img2"]


def test_sliding_window_probabilities_match_whole_image() -> None:
    x = torch.randn(1, 3, 23, 37)
    model = colour_model()
    whole = predict_probs(model, x, 3)
    windows = predict_probs(model, x, 3, sliding_window=(16, 7))
    torch.testing.assert_close(windows, whole)
    flipped = predict_probs(model, x, 3, flip=True)
    torch.testing.assert_close(flipped, whole)


def test_predictions_written_as_palette_pngs(tmp_path: Path) -> None:
    ds = BlockDataset(n=3)
    palette = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    evaluate(colour_model(), ds, 3, prediction_dir=tmp_path, n_prediction_images=2, palette=palette)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img0.png", "img1.png"]
    with Image.open(tmp_path / "img1.png") as im:
        assert im.mode == "P" and im.getpalette()[:9] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
        pred = np.asarray(im)
    label = ds[1][1].numpy()
    np.testing.assert_array_equal(pred[label != 255], label[label != 255])


def test_model_returning_wrong_size_is_an_error() -> None:
    with pytest.raises(ValueError, match="logits at the input size"):
        evaluate(nn.Conv2d(3, 3, 2, stride=2), BlockDataset(n=1), 3)
