"""The prepared dataset layout (docs/architecture.md), its writer and its reader.

```
<root>/meta.json           name, classes, palette, ignore_index (255), splits with counts,
                           sources {archive: sha256}, converter_version (+ options used)
<root>/images/<split>/<id>.jpg|png
<root>/labels/<split>/<id>.png    single-channel uint8 class ids, 255 = ignore
```
The writer fills a temporary folder next to the target and renames it into place at the end, so a
failed conversion never leaves a half-written dataset where the engine looks for one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

from pipelines.datasets.errors import LayoutError

IGNORE_INDEX = 255
META_NAME = "meta.json"
META_KEYS = ("name", "classes", "palette", "ignore_index", "splits", "sources", "converter_version")
_IMAGE_SUFFIXES = {".jpg": ".jpg", ".jpeg": ".jpg", ".png": ".png"}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class Sample:
    """One prepared example: its id and the paths of its image and label."""

    image_id: str
    image: Path
    label: Path


def read_label(path: Path) -> np.ndarray:
    """Read a label PNG as an (H, W) uint8 array of indices (palette PNGs give their indices)."""
    with Image.open(path) as im:
        if im.mode not in ("L", "P"):
            raise LayoutError(
                f"label {path} has PIL mode {im.mode!r}; expected a single-channel ('L') or palette ('P') PNG"
            )
        return np.array(im, dtype=np.uint8)


def write_png(path: Path, array: np.ndarray) -> None:
    """Write an (H, W) uint8 label or (H, W, 3) uint8 image as PNG, byte-for-byte deterministically."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise LayoutError(
            f"cannot write {path}: expected uint8 (H, W) or (H, W, 3), got {array.dtype} {array.shape}"
        )
    Image.fromarray(array).save(path, format="PNG", compress_level=6)


def _check_palette(classes: Sequence[str], palette: Sequence[Sequence[int]]) -> list[list[int]]:
    if len(palette) != len(classes):
        raise LayoutError(
            f"palette has {len(palette)} colours for {len(classes)} classes; give one per class"
        )
    out = [[int(c) for c in colour] for colour in palette]
    if any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in out):
        raise LayoutError("palette entries must be [r, g, b] with values in 0..255")
    return out


class LayoutWriter:
    """Write a prepared dataset into a temporary folder, then move it to `target` on `commit()`.

    Use as a context manager: an exception inside the `with` block removes the temporary folder.
    """

    def __init__(
        self,
        target: Path,
        *,
        name: str,
        classes: Sequence[str],
        palette: Sequence[Sequence[int]],
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        if len(classes) == 0 or len(classes) > 255:
            raise LayoutError(f"{name}: need 1..255 classes (255 is the ignore index), got {len(classes)}")
        self.target = Path(target)
        self.name = name
        self.classes = list(classes)
        self.palette = _check_palette(classes, palette)
        self.ignore_index = ignore_index
        self.counts: dict[str, int] = {}
        self._ids: set[tuple[str, str]] = set()
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        self.tmp.chmod(0o755)  # mkdtemp makes it private; the prepared data is meant to be shared

    def __enter__(self) -> LayoutWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abort()

    def abort(self) -> None:
        """Remove the temporary folder (no-op after `commit`)."""
        shutil.rmtree(self.tmp, ignore_errors=True)

    def add(self, split: str, image_id: str, *, image: Path | np.ndarray, label: np.ndarray) -> None:
        """Add one example. `image` is a JPEG/PNG file (copied as is) or an (H, W, 3) uint8 array.

        `label` is an (H, W) uint8 array of class ids in 0..C-1 or the ignore index, of the image's size.
        """
        if not _ID.match(split) or not _ID.match(image_id):
            raise LayoutError(f"{self.name}: bad split or id {split!r}/{image_id!r} (letters, digits, '_-.')")
        if (split, image_id) in self._ids:
            raise LayoutError(f"{self.name}: duplicate id {image_id!r} in split {split!r}")
        label = np.asarray(label)
        if label.dtype != np.uint8 or label.ndim != 2:
            raise LayoutError(
                f"{self.name}/{image_id}: label must be (H, W) uint8, got {label.dtype} {label.shape}"
            )
        bad = (label >= len(self.classes)) & (label != self.ignore_index)
        if bad.any():
            raise LayoutError(
                f"{self.name}/{image_id}: label values {np.unique(label[bad]).tolist()} are neither a "
                f"class id (0..{len(self.classes) - 1}) nor the ignore index {self.ignore_index}"
            )
        (self.tmp / "images" / split).mkdir(parents=True, exist_ok=True)
        (self.tmp / "labels" / split).mkdir(parents=True, exist_ok=True)
        if isinstance(image, np.ndarray):
            size = (image.shape[1], image.shape[0])
            write_png(self.tmp / "images" / split / f"{image_id}.png", image)
        else:
            image = Path(image)
            suffix = _IMAGE_SUFFIXES.get(image.suffix.lower())
            if suffix is None:
                raise LayoutError(f"{self.name}: image {image} is not a .jpg or .png file")
            with Image.open(image) as im:
                size = im.size
            shutil.copyfile(image, self.tmp / "images" / split / f"{image_id}{suffix}")
        if size != (label.shape[1], label.shape[0]):
            raise LayoutError(
                f"{self.name}/{image_id}: image is {size[0]}x{size[1]} "
                f"but label is {label.shape[1]}x{label.shape[0]}"
            )
        write_png(self.tmp / "labels" / split / f"{image_id}.png", label)
        self._ids.add((split, image_id))
        self.counts[split] = self.counts.get(split, 0) + 1

    def commit(
        self, *, sources: Mapping[str, str], converter_version: int, options: Mapping[str, Any] | None = None
    ) -> Path:
        """Write meta.json and move the folder to `target`, replacing an older version."""
        if not self.counts:
            raise LayoutError(f"{self.name}: the converter wrote no examples; check the raw archives")
        meta = {
            "name": self.name,
            "classes": self.classes,
            "palette": self.palette,
            "ignore_index": self.ignore_index,
            "splits": dict(sorted(self.counts.items())),
            "sources": dict(sorted(sources.items())),
            "converter_version": int(converter_version),
            "options": dict(options or {}),
        }
        text = json.dumps(meta, indent=2)
        text = re.sub(r"\[\s+(\d+),\s+(\d+),\s+(\d+)\s+\]", r"[\1, \2, \3]", text)  # one colour per line
        (self.tmp / META_NAME).write_text(text + "\n")
        old = None
        if self.target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.old-", dir=self.target.parent))
            os.replace(self.target, old / "previous")
        os.replace(self.tmp, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.target


def load_meta(root: Path) -> dict[str, Any]:
    """Read and check `<root>/meta.json` of a prepared dataset."""
    path = Path(root) / META_NAME
    if not path.is_file():
        raise LayoutError(
            f"no prepared dataset at {root} ({META_NAME} missing); run "
            f"`python -m pipelines.prepare {Path(root).name}` first"
        )
    try:
        meta = json.loads(path.read_text())
    except ValueError as e:
        raise LayoutError(f"{path} is not valid JSON ({e}); prepare the dataset again") from None
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise LayoutError(f"{path} lacks keys {missing}; prepare the dataset again")
    return meta


def list_split(root: Path, split: str) -> list[Sample]:
    """The examples of one split of a prepared dataset, sorted by id."""
    root = Path(root)
    meta = load_meta(root)
    if split not in meta["splits"]:
        raise LayoutError(f"{meta['name']} has no split {split!r}; valid splits: {sorted(meta['splits'])}")
    images = {p.stem: p for p in sorted((root / "images" / split).iterdir()) if p.suffix in (".jpg", ".png")}
    samples = []
    for label in sorted((root / "labels" / split).glob("*.png")):
        if label.stem not in images:
            raise LayoutError(f"{root}: label {label.name} of split {split!r} has no image; prepare again")
        samples.append(Sample(label.stem, images[label.stem], label))
    if len(samples) != meta["splits"][split]:
        raise LayoutError(
            f"{root}: split {split!r} has {len(samples)} examples, "
            f"but meta.json says {meta['splits'][split]}; "
            "the folder was modified after prepare, prepare it again"
        )
    return samples


def voc_palette(n: int) -> list[list[int]]:
    """The first `n` colours of the PASCAL VOC devkit colour map (`VOClabelcolormap`)."""
    palette = []
    for index in range(n):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette.append([r, g, b])
    return palette
