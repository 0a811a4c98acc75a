"""NYUDv2 (paper.md, section 4; [P] Table 3): 40 classes (Gupta et al. [19]) on the 1,449 labeled frames.

`nyu_depth_v2_labeled.mat` is MATLAB v7.3 (HDF5): read lazily with h5py, one frame at a time. h5py
sees MATLAB's arrays with reversed axes: `images` is (1449, 3, 640, 480) and `labels` (1449, 640, 480),
so a frame is transposed to (480, 640, 3) and its label to (480, 640). `classMapping40.mat`'s `mapClass`
maps the 894 raw ids (1-based) to 1..40; raw 0 (unlabeled) and unmapped ids become 255, k becomes k-1.
`splits.mat` holds the 1-based `trainNdxs` (795) and `testNdxs` (654); the test frames form the `val`
split. Ids are the 1-based frame index, zero-padded (`000001`).

Option `crop_border`: False (default, full 640x480 frames), True (the NYU toolbox's valid area,
rows 45..471 and columns 41..601 1-based, i.e. `[44:471, 40:601]`: 561x427 frames, as in the
preprocessed release of light-weight RefineNet), or `[top, bottom, left, right]` pixel counts to cut.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io

from pipelines.datasets.download import Archive
from pipelines.datasets.errors import CorruptArchiveError, DatasetError
from pipelines.datasets.layout import IGNORE_INDEX, LayoutWriter, voc_palette
from pipelines.datasets.registry import DatasetSpec, register_dataset

CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes",
    "ceiling", "books", "refrigerator", "television", "paper", "towel", "shower curtain", "box",
    "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
)  # fmt: skip
LABELED = Archive(
    filename="nyu_depth_v2_labeled.mat",
    url="http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat",
    checksum=None,  # no public digest (about 2.8 GB): recorded in checksums.lock.json at the first download
    extract=False,
)
SPLITS = Archive(
    filename="splits.mat",
    url="http://horatio.cs.nyu.edu/mit/silberman/indoor_seg_sup/splits.mat",
    checksum=None,
    extract=False,
)
MAPPING = Archive(
    filename="classMapping40.mat",
    url="https://github.com/ankurhanda/nyuv2-meta-data/raw/master/classMapping40.mat",
    checksum=None,
    extract=False,
)
EXPECTED_SPLITS = {"train": 795, "val": 654}
# Pixels cut by crop_border=True (top, bottom, left, right) on 480x640 frames: keeps [44:471, 40:601].
NYU_BORDER = (44, 9, 40, 39)


def missing_field(path: Path, field: str, archive: Archive, what: str = "field") -> CorruptArchiveError:
    """The error for a .mat file that lacks a field: names the field and the expected source file."""
    return CorruptArchiveError(
        f"{path.name} has no {what} {field!r}; expected the file {archive.filename} from {archive.url}. "
        "Delete the raw file and fetch it again"
    )


def load_small_mat(path: Path, fields: Sequence[str], archive: Archive) -> dict[str, np.ndarray]:
    """Read small variables of a .mat file (MATLAB v5/v7 through scipy, v7.3 through h5py)."""
    try:
        mat: Mapping[str, Any] = scipy.io.loadmat(path, variable_names=list(fields))
        arrays = {k: np.asarray(v) for k, v in mat.items() if k in fields}
    except NotImplementedError:  # a v7.3 (HDF5) file: axes are reversed
        with h5py.File(path, "r") as f:
            arrays = {k: np.asarray(f[k][()]).T for k in fields if k in f}
    except (ValueError, OSError, TypeError) as e:
        raise CorruptArchiveError(f"{path.name} is not a readable .mat file ({e}); fetch it again") from None
    for field in fields:
        if field not in arrays:
            raise missing_field(path, field, archive)
    return arrays


def class_lut(map_class: np.ndarray, n_classes: int) -> np.ndarray:
    """Raw id (0..894) -> training id: 0 and ids mapped outside 1..n_classes -> 255, k -> k-1."""
    mapped = np.asarray(map_class).reshape(-1).astype(np.int64)
    lut = np.full(len(mapped) + 1, IGNORE_INDEX, dtype=np.uint8)
    valid = (mapped >= 1) & (mapped <= n_classes)
    lut[1:][valid] = (mapped[valid] - 1).astype(np.uint8)
    return lut


def _crop(crop_border: bool | Sequence[int]) -> tuple[int, int, int, int] | None:
    if crop_border is False or crop_border is None:
        return None
    if crop_border is True:
        return NYU_BORDER
    values = tuple(int(v) for v in crop_border)
    if len(values) != 4 or min(values) < 0:
        raise DatasetError(
            f"nyudv2: option crop_border={crop_border!r} must be true, false or [top, bottom, left, right]"
        )
    return values  # type: ignore[return-value]


def _indices(splits: Mapping[str, np.ndarray], name: str, n_frames: int) -> list[int]:
    indices = np.asarray(splits[name]).reshape(-1).astype(np.int64)
    if indices.size and (indices.min() < 1 or indices.max() > n_frames):
        raise CorruptArchiveError(
            f"{SPLITS.filename}: {name} holds indices outside 1..{n_frames} (they are 1-based frame numbers)"
        )
    return indices.tolist()


def convert(
    inputs: Mapping[str, Path], writer: LayoutWriter, *, crop_border: bool | list[int] = False
) -> None:
    """Convert the labeled NYUDv2 frames with the 40-class mapping and the standard 795/654 split."""
    border = _crop(crop_border)
    labeled, splits_path, mapping_path = (inputs[a.filename] for a in (LABELED, SPLITS, MAPPING))
    lut = class_lut(load_small_mat(mapping_path, ["mapClass"], MAPPING)["mapClass"], len(CLASSES))
    splits = load_small_mat(splits_path, ["trainNdxs", "testNdxs"], SPLITS)
    try:
        f = h5py.File(labeled, "r")
    except OSError as e:
        raise CorruptArchiveError(
            f"{LABELED.filename} is not an HDF5 (MATLAB v7.3) file ({e}); delete it and fetch it again"
        ) from None
    with f:
        for field in ("images", "labels"):
            if field not in f:
                raise missing_field(Path(labeled), field, LABELED, "dataset")
        images, labels = f["images"], f["labels"]
        if images.ndim != 4 or images.shape[1] != 3 or labels.shape != (images.shape[0], *images.shape[2:]):
            raise CorruptArchiveError(
                f"{LABELED.filename}: images {images.shape} and labels {labels.shape} are not (N, 3, W, H) "
                "and (N, W, H) as in the NYUDv2 labeled release"
            )
        n_frames = images.shape[0]
        height, width = images.shape[3], images.shape[2]
        if border is not None and (border[0] + border[1] >= height or border[2] + border[3] >= width):
            raise DatasetError(f"nyudv2: crop_border {border} leaves nothing of {width}x{height} frames")
        rows = slice(0, height) if border is None else slice(border[0], height - border[1])
        cols = slice(0, width) if border is None else slice(border[2], width - border[3])
        for split, name in (("train", "trainNdxs"), ("val", "testNdxs")):
            for index in _indices(splits, name, n_frames):
                image = np.asarray(images[index - 1]).transpose(2, 1, 0)  # (3, W, H) -> (H, W, 3)
                raw = np.asarray(labels[index - 1]).T.astype(np.int64)  # (W, H) -> (H, W)
                if raw.min() < 0 or raw.max() >= len(lut):
                    raise CorruptArchiveError(
                        f"{LABELED.filename}: frame {index} has raw label ids outside 0..{len(lut) - 1}, "
                        f"which {MAPPING.filename} does not map"
                    )
                writer.add(
                    split,
                    f"{index:06d}",
                    image=np.ascontiguousarray(image[rows, cols].astype(np.uint8)),
                    label=np.ascontiguousarray(lut[raw][rows, cols]),
                )


SPEC = register_dataset(
    DatasetSpec(
        name="nyudv2",
        classes=CLASSES,
        palette=voc_palette(len(CLASSES)),
        convert=convert,
        converter_version=1,
        archives=(LABELED, SPLITS, MAPPING),
        expected_splits=EXPECTED_SPLITS,
    )
)
