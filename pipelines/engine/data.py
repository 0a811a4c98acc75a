"""Data pipeline over the prepared layout (docs/architecture.md) with the paper's augmentation.

Training augmentation (paper.md §2): random scaling in [0.7, 1.3], random square crop, horizontal
flip, then ImageNet normalisation. Where the scaled image is smaller than the crop it is padded:
the label with the ignore index 255, the image with the ImageNet mean (0 after normalisation).
Images are resized bilinearly, labels with nearest neighbour, so labels stay aligned.

Reproducibility: every training sample's augmentation is drawn from a seed derived from
``(seed, position in the sample stream)``, and the sample order is a per-epoch permutation of
``(seed, epoch)``. The data order therefore depends only on how many samples were consumed, not
on worker count or prefetching: a resumed run continues exactly where the checkpoint left off.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg")


class DatasetNotPreparedError(FileNotFoundError):
    """The prepared dataset folder (or one of its parts) is missing."""


def _prepare_hint(root: Path) -> str:
    return f"Prepare it first: `python -m pipelines.prepare {root.name}` (or pass the right --dataset-root)."


def read_meta(root: str | Path) -> dict[str, Any]:
    """Read ``meta.json`` of a prepared dataset; a missing folder or file names the fix."""
    root = Path(root)
    meta_path = root / "meta.json"
    if not root.is_dir():
        raise DatasetNotPreparedError(f"Prepared dataset folder {root} does not exist. {_prepare_hint(root)}")
    if not meta_path.is_file():
        raise DatasetNotPreparedError(
            f"{meta_path} is missing: {root} is not a prepared dataset. {_prepare_hint(root)}"
        )
    meta = json.loads(meta_path.read_text())
    if not isinstance(meta.get("classes"), list) or not meta["classes"]:
        raise ValueError(f"{meta_path}: 'classes' must be a non-empty list.")
    return meta


def normalise(image: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` -> float ``(3, H, W)`` with ImageNet mean and std."""
    x = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1).div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def denormalise(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalise`, to ``[0, 255]`` float ``(..., 3, H, W)``."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x * std + mean) * 255.0


@dataclass(frozen=True)
class TrainTransform:
    """Random scale -> pad (mean / 255) -> random crop -> random horizontal flip -> normalise."""

    crop_size: int
    scale_range: tuple[float, float] = (0.7, 1.3)
    hflip: bool = True

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = label.shape
        scale = float(rng.uniform(*self.scale_range))
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        if (nh, nw) != (h, w):
            image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
            label = np.asarray(Image.fromarray(label).resize((nw, nh), Image.NEAREST))
        c = self.crop_size
        ph, pw = max(c - nh, 0), max(c - nw, 0)
        if ph or pw:
            mean = np.round(np.array(IMAGENET_MEAN) * 255).astype(np.uint8)
            padded = np.empty((nh + ph, nw + pw, 3), dtype=np.uint8)
            padded[:] = mean
            padded[:nh, :nw] = image
            image = padded
            label = np.pad(label, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
        H, W = label.shape
        top = int(rng.integers(0, H - c + 1))
        left = int(rng.integers(0, W - c + 1))
        image = image[top : top + c, left : left + c]
        label = label[top : top + c, left : left + c]
        if self.hflip and rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        return normalise(image), torch.from_numpy(np.array(label, dtype=np.int64))


class SegmentationDataset(Dataset):
    """Images and labels of one split of a prepared dataset, listed by sorted id.

    Indexed by an int (evaluation: normalised full-size image, label, id) or, for training, by a
    ``(index, sample_seed)`` pair from `InfiniteBatchSampler` (augmented crop, label).
    """

    def __init__(self, root: str | Path, split: str, transform: TrainTransform | None = None) -> None:
        self.root = Path(root)
        self.meta = read_meta(self.root)
        self.split = split
        self.transform = transform
        label_dir = self.root / "labels" / split
        image_dir = self.root / "images" / split
        if not label_dir.is_dir() or not image_dir.is_dir():
            raise DatasetNotPreparedError(
                f"Split {split!r} is missing in {self.root} (expected {image_dir} and {label_dir}). "
                f"Splits in meta.json: {sorted(self.meta.get('splits', {}))}. {_prepare_hint(self.root)}"
            )
        self.ids = sorted(p.stem for p in label_dir.glob("*.png"))
        if not self.ids:
            raise DatasetNotPreparedError(f"No labels in {label_dir}. {_prepare_hint(self.root)}")
        images = {p.stem: p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        missing = [i for i in self.ids if i not in images]
        if missing:
            raise DatasetNotPreparedError(
                f"{len(missing)} image(s) missing in {image_dir}, e.g. {missing[0]!r}."
            )
        self.image_paths = [images[i] for i in self.ids]
        self.label_paths = [label_dir / f"{i}.png" for i in self.ids]
        self.num_classes = len(self.meta["classes"])

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw uint8 image ``(H, W, 3)`` and label ``(H, W)`` of sample ``index``."""
        with Image.open(self.image_paths[index]) as im:
            image = np.asarray(im.convert("RGB"))
        with Image.open(self.label_paths[index]) as lb:
            label = np.asarray(lb if lb.mode in ("L", "P") else lb.convert("L"))
        if image.shape[:2] != label.shape:
            raise ValueError(
                f"{self.ids[index]}: image {image.shape[:2]} and label {label.shape} differ in size."
            )
        return image, label

    def __getitem__(self, item: int | tuple[int, int]) -> Any:
        if isinstance(item, tuple):
            index, sample_seed = item
            image, label = self.load(index)
            if self.transform is None:
                raise ValueError("Training access (index, seed) needs a transform.")
            return self.transform(image, label, np.random.default_rng(sample_seed))
        image, label = self.load(item)
        return normalise(image), torch.from_numpy(label.astype(np.int64)), self.ids[item]


def sample_seed(seed: int, position: int) -> int:
    """The augmentation seed of the ``position``-th sample of the stream (independent of workers)."""
    return int(np.random.SeedSequence([seed, position]).generate_state(1)[0])


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 7919]).permutation(n)


class InfiniteBatchSampler(Sampler):
    """Endless batches of ``(index, sample_seed)``: a fresh permutation each epoch.

    ``start`` is the number of samples already consumed; its (epoch, index) position is
    `position(start, n)`. Resuming with the same ``start`` gives the same stream.

    Data parallel (``world_size > 1``): the stream is cut into global batches of
    ``batch_size * world_size`` samples, and rank ``r`` yields the ``r``-th slice of ``batch_size``
    samples of each. The union over ranks is the global batch of a single process with batch
    ``batch_size * world_size`` (same samples, same augmentation seeds); ``start`` counts global
    samples.
    """

    def __init__(
        self, n: int, batch_size: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size}).")
        self.n, self.batch_size, self.seed, self.start = n, batch_size, seed, start
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        pos = self.start
        epoch, i = divmod(pos, self.n)
        order = epoch_order(self.seed, epoch, self.n)
        lo = self.rank * self.batch_size
        hi = lo + self.batch_size
        while True:
            batch = []
            for k in range(self.batch_size * self.world_size):
                if i == self.n:
                    epoch, i = epoch + 1, 0
                    order = epoch_order(self.seed, epoch, self.n)
                if lo <= k < hi:
                    batch.append((int(order[i]), sample_seed(self.seed, pos)))
                i += 1
                pos += 1
            yield batch

    def __len__(self) -> int:  # an infinite sampler; DataLoader only needs it to be defined
        return 2**62


def position(samples_consumed: int, n: int) -> tuple[int, int]:
    """(epoch, index within epoch) after ``samples_consumed`` samples."""
    return divmod(samples_consumed, n)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def train_loader(
    dataset: SegmentationDataset,
    batch_size: int,
    seed: int,
    start: int,
    num_workers: int,
    pin_memory: bool,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """Endless training loader starting after ``start`` consumed samples; seeded workers.

    With ``world_size > 1`` it yields this rank's ``batch_size`` slice of every global batch
    (`InfiniteBatchSampler`); ``start`` counts global samples.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_sampler=InfiniteBatchSampler(len(dataset), batch_size, seed, start, rank, world_size),
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=_seed_worker,
        generator=generator,
        persistent_workers=False,
        prefetch_factor=2 if num_workers > 0 else None,
    )
