"""Evaluation over a whole split at the labels' original resolution (paper.md §2).

Modes: single scale; multi-scale (softmax score maps of each scale resized back to the original
size and averaged, then argmax, as in the released `fuse_multiscale_results.m`) with an optional
horizontal flip; sliding window (overlapping crops, softmax averaged where they overlap) for
images larger than the crop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Subset

from pipelines.engine.metrics import ConfusionMatrix, boundary_band


@dataclass
class EvalResult:
    """Accumulated evaluation of one split."""

    confusion: ConfusionMatrix
    boundary: ConfusionMatrix
    image_ids: list[str] = field(default_factory=list)
    intersection: np.ndarray | None = None  # (n_images, C)
    union: np.ndarray | None = None  # (n_images, C)

    def metrics(self, prefix: str = "val/") -> dict[str, float]:
        m = self.confusion.compute()
        out = {f"{prefix}{k}": v for k, v in m.items()}
        out[f"{prefix}boundary_IoU"] = self.boundary.compute()["mIoU"]
        return out


def _window_starts(size: int, crop: int, stride: int) -> list[int]:
    if size <= crop:
        return [0]
    starts = list(range(0, size - crop + 1, stride))
    if starts[-1] != size - crop:
        starts.append(size - crop)
    return starts


def _forward_probs(
    model: nn.Module, x: torch.Tensor, num_classes: int, sliding_window: tuple[int, int] | None
) -> torch.Tensor:
    """Softmax scores ``(N, C, H, W)`` in float32 for a normalised batch, optionally window by window."""

    def run(inp: torch.Tensor) -> torch.Tensor:
        out = model(inp)
        if out.shape[-2:] != inp.shape[-2:] or out.shape[1] != num_classes:
            raise ValueError(
                f"The model returned {tuple(out.shape)} for input {tuple(inp.shape)}: it must return "
                f"{num_classes}-class logits at the input size."
            )
        return out.float().softmax(1)

    if sliding_window is None:
        return run(x)
    crop, stride = sliding_window
    n, _, h, w = x.shape
    ph, pw = max(crop - h, 0), max(crop - w, 0)
    if ph or pw:  # zero = the ImageNet mean after normalisation
        x = F.pad(x, (0, pw, 0, ph))
    H, W = x.shape[-2:]
    probs = x.new_zeros((n, num_classes, H, W), dtype=torch.float32)
    count = x.new_zeros((1, 1, H, W), dtype=torch.float32)
    for top in _window_starts(H, crop, stride):
        for left in _window_starts(W, crop, stride):
            window = x[:, :, top : top + crop, left : left + crop]
            probs[:, :, top : top + crop, left : left + crop] += run(window)
            count[:, :, top : top + crop, left : left + crop] += 1
    return (probs / count)[:, :, :h, :w]


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    image: torch.Tensor,
    num_classes: int,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    sliding_window: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Averaged softmax scores ``(N, C, H, W)`` at the input's resolution over scales (and flips)."""
    h, w = image.shape[-2:]
    total = None
    n_maps = 0
    for s in scales:
        if s == 1.0:
            x = image
        else:
            size = (max(1, round(h * s)), max(1, round(w * s)))
            x = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        inputs = [(x, False)] + ([(x.flip(-1), True)] if flip else [])
        for xi, flipped in inputs:
            p = _forward_probs(model, xi, num_classes, sliding_window)
            if flipped:
                p = p.flip(-1)
            if p.shape[-2:] != (h, w):
                p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
            total = p if total is None else total + p
            n_maps += 1
    return total / n_maps


def save_palette_png(pred: np.ndarray, palette: Sequence[Sequence[int]], path: str | Path) -> None:
    """Save a class-id map as a palette ('P' mode) PNG."""
    im = Image.fromarray(pred.astype(np.uint8), mode="P")
    flat = [int(v) for rgb in palette for v in rgb][:768]
    im.putpalette(flat + [0] * (768 - len(flat)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset,
    num_classes: int,
    device: torch.device | str = "cpu",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    sliding_window: tuple[int, int] | None = None,
    boundary_width: int = 3,
    prediction_dir: str | Path | None = None,
    n_prediction_images: int = 0,
    palette: Sequence[Sequence[int]] | None = None,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    max_images: int | None = None,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> EvalResult:
    """Evaluate ``model`` on every image of ``dataset`` (items: normalised image, label, id).

    One confusion matrix over the split at each label's original resolution (ignore 255), one
    restricted to a ``boundary_width`` band around ground-truth boundaries, per-image intersection
    and union counts, and palette PNGs of the first ``n_prediction_images`` ids in sorted order.

    Data parallel (``world_size > 1``, process group initialised): rank ``r`` evaluates images
    ``r, r + world_size, ...``; the confusion matrices are summed and the per-image counts gathered
    (in dataset order), so every rank returns the result of the whole split. Rank 0 alone writes
    the prediction PNGs.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    confusion = ConfusionMatrix(num_classes)
    boundary = ConfusionMatrix(num_classes)
    ids: list[str] = []
    indices: list[int] = []
    inters, unions = [], []
    to_write: dict[str, np.ndarray] = {}
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    ids_sorted = sorted(dataset.ids[i] for i in range(n)) if hasattr(dataset, "ids") else []
    to_save = set(ids_sorted[:n_prediction_images]) if prediction_dir is not None else set()
    if palette is None:
        rng = np.random.default_rng(0)
        palette = rng.integers(0, 256, size=(256, 3)).tolist()
    autocast = (
        torch.autocast(device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    try:
        shard = range(rank, n, world_size)
        if num_workers > 0:  # decode images in worker processes, one full-size image at a time
            items = DataLoader(Subset(dataset, shard), batch_size=None, num_workers=num_workers)
        else:
            items = (dataset[i] for i in shard)
        for index, (image, label, image_id) in zip(shard, items, strict=True):
            x = image[None].to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                probs = predict_probs(model, x, num_classes, scales, flip, sliding_window)
            pred = probs.argmax(1)[0].cpu()
            if pred.shape != label.shape:
                raise ValueError(
                    f"{image_id}: image {tuple(image.shape[-2:])} and label {tuple(label.shape)} "
                    "differ in size."
                )
            counts = confusion.update(pred, label)
            boundary.update(pred, label, mask=boundary_band(label, boundary_width))
            tp = np.diag(counts)
            inters.append(tp)
            unions.append(counts.sum(0) + counts.sum(1) - tp)
            ids.append(str(image_id))
            indices.append(index)
            if image_id in to_save:
                to_write[str(image_id)] = pred.numpy().astype(np.uint8)
    finally:
        model.train(was_training)
    if world_size > 1:
        ids, inters, unions, to_write = _merge_shards(
            confusion, boundary, indices, ids, inters, unions, to_write
        )
    if prediction_dir is not None and rank == 0:
        for image_id, pred in to_write.items():
            save_palette_png(pred, palette, Path(prediction_dir) / f"{image_id}.png")
    shape = (0, num_classes)
    return EvalResult(
        confusion=confusion,
        boundary=boundary,
        image_ids=ids,
        intersection=np.stack(inters) if inters else np.zeros(shape, np.int64),
        union=np.stack(unions) if unions else np.zeros(shape, np.int64),
    )


def _merge_shards(
    confusion: ConfusionMatrix,
    boundary: ConfusionMatrix,
    indices: list[int],
    ids: list[str],
    inters: list[np.ndarray],
    unions: list[np.ndarray],
    to_write: dict[str, np.ndarray],
) -> tuple[list[str], list[np.ndarray], list[np.ndarray], dict[str, np.ndarray]]:
    """Sum the confusion matrices over ranks (in place) and gather per-image counts in dataset order."""
    from pipelines.engine.distributed import all_gather_objects, all_reduce_sum

    summed = all_reduce_sum(torch.from_numpy(np.stack([confusion.matrix, boundary.matrix])))
    confusion.matrix = summed[0].numpy().astype(np.int64)
    boundary.matrix = summed[1].numpy().astype(np.int64)
    shards = all_gather_objects((indices, ids, inters, unions, to_write))
    rows = sorted(
        (index, image_id, inter, union)
        for shard in shards
        for index, image_id, inter, union in zip(shard[0], shard[1], shard[2], shard[3], strict=True)
    )
    merged_preds = {k: v for shard in shards for k, v in shard[4].items()}
    return [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows], merged_preds
