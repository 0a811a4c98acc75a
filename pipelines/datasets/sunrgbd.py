"""SUN-RGBD (paper.md, section 4; [P] Table 3): 37 classes, the official 5,285 train / 5,050 test split.

Labels come from `SUNRGBDtoolbox/Metadata/SUNRGBD2Dseg.mat` (MATLAB v7.3, HDF5): `SUNRGBD2Dseg.seglabel`
holds one object reference per image, in the order of `SUNRGBDMeta` (`Metadata/SUNRGBDMeta.mat`). Loading
the file whole needs about 64 GB, so the converter dereferences and reads ONE label at a time (each stored
transposed, (W, H)); its memory stays flat in the number of images (benchmarks/sunrgbd_memory.py).

Matching: image i (1-based) is `SUNRGBDMeta(i).rgbpath` (e.g. `/n/fs/sun3d/data/SUNRGBD/kv1/NYUdata/
NYU0001/image/NYU0001.jpg`, read from `SUNRGBD.zip` under `SUNRGBD/...`) with `seglabel(i)`; its scene
folder (the path without `image/<name>`) is looked up in `traintestSUNRGBD/allsplit.mat`'s `alltrain`
(-> `train`) and `alltest` (-> `val`). Label 0 (void) -> 255, k -> k-1. Ids are the 1-based index in
SUNRGBDMeta, zero-padded (`00001`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io

from pipelines.datasets.download import Archive
from pipelines.datasets.errors import CorruptArchiveError
from pipelines.datasets.layout import IGNORE_INDEX, LayoutWriter, voc_palette
from pipelines.datasets.nyudv2 import missing_field
from pipelines.datasets.registry import DatasetSpec, register_dataset

# seg37list of the SUN RGB-D toolbox, in label order 1..37.
CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor_mat", "clothes",
    "ceiling", "books", "fridge", "tv", "paper", "towel", "shower_curtain", "box", "whiteboard", "person",
    "night_stand", "toilet", "sink", "lamp", "bathtub", "bag",
)  # fmt: skip
IMAGES = Archive(
    filename="SUNRGBD.zip",
    url="http://rgbd.cs.princeton.edu/data/SUNRGBD.zip",
    checksum=None,  # no public digest: recorded in checksums.lock.json at the first download
)
TOOLBOX = Archive(
    filename="SUNRGBDtoolbox.zip",
    url="http://rgbd.cs.princeton.edu/data/SUNRGBDtoolbox.zip",
    checksum="md5:18d22e1761d36352f37232cba102f91f",  # open-mmlab/mmdetection3d data/sunrgbd/README.md
)
EXPECTED_SPLITS = {"train": 5285, "val": 5050}
SEG_PATH = "SUNRGBDtoolbox/Metadata/SUNRGBD2Dseg.mat"
META_PATH = "SUNRGBDtoolbox/Metadata/SUNRGBDMeta.mat"
SPLIT_PATH = "SUNRGBDtoolbox/traintestSUNRGBD/allsplit.mat"


def relative_path(path: str) -> str:
    """`/n/fs/sun3d/data/SUNRGBD/kv1/...` -> `SUNRGBD/kv1/...` (the path in SUNRGBD.zip)."""
    path = path.strip().replace("\\", "/").rstrip("/")
    at = path.find("SUNRGBD/")
    return path[at:] if at >= 0 else path.lstrip("/")


def map_labels(raw: np.ndarray, n_classes: int = len(CLASSES)) -> np.ndarray:
    """0 (void) and values outside 1..n_classes -> 255, k -> k-1, as uint8."""
    raw = np.asarray(raw)
    out = np.full(raw.shape, IGNORE_INDEX, dtype=np.uint8)
    valid = (raw >= 1) & (raw <= n_classes)
    out[valid] = (raw[valid] - 1).astype(np.uint8)
    return out


def _strings(value: Any) -> list[str]:
    if isinstance(value, np.ndarray):
        return [str(v) for v in value.flat]
    return [str(value)]


def read_meta_paths(path: Path) -> list[str]:
    """`SUNRGBDMeta(i).rgbpath` of every image, in file order."""
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False, variable_names=["SUNRGBDMeta"])
    except (ValueError, OSError, TypeError, NotImplementedError) as e:
        raise CorruptArchiveError(f"{path.name} is not a readable MATLAB v5/v7 .mat file ({e})") from None
    if "SUNRGBDMeta" not in mat:
        raise missing_field(path, "SUNRGBDMeta", TOOLBOX, f"variable (in {META_PATH})")
    entries = mat["SUNRGBDMeta"]
    entries = list(entries.flat) if isinstance(entries, np.ndarray) else [entries]
    paths = []
    for entry in entries:
        if not hasattr(entry, "rgbpath"):
            raise missing_field(path, "SUNRGBDMeta.rgbpath", TOOLBOX, f"field (in {META_PATH})")
        paths.append(str(entry.rgbpath))
    return paths


def read_split(path: Path) -> tuple[set[str], set[str]]:
    """The scene folders of `alltrain` and `alltest` (relative, as `relative_path` gives them)."""
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, variable_names=["alltrain", "alltest"])
    except (ValueError, OSError, TypeError, NotImplementedError) as e:
        raise CorruptArchiveError(f"{path.name} is not a readable MATLAB v5/v7 .mat file ({e})") from None
    for field in ("alltrain", "alltest"):
        if field not in mat:
            raise missing_field(path, field, TOOLBOX, f"variable (in {SPLIT_PATH})")
    return (
        {relative_path(p) for p in _strings(mat["alltrain"])},
        {relative_path(p) for p in _strings(mat["alltest"])},
    )


def iter_labels(path: Path) -> Iterable[np.ndarray]:
    """Yield the raw (H, W) 37-class labels of SUNRGBD2Dseg.mat one at a time (never the whole file)."""
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise CorruptArchiveError(f"{path.name} is not an HDF5 (MATLAB v7.3) file ({e})") from None
    with f:
        if "SUNRGBD2Dseg" not in f:
            raise missing_field(path, "SUNRGBD2Dseg", TOOLBOX, f"group (in {SEG_PATH})")
        if "seglabel" not in f["SUNRGBD2Dseg"]:
            raise missing_field(path, "SUNRGBD2Dseg.seglabel", TOOLBOX, f"dataset (in {SEG_PATH})")
        seglabel = f["SUNRGBD2Dseg"]["seglabel"]
        if h5py.check_ref_dtype(seglabel.dtype) is None:
            raise CorruptArchiveError(
                f"{path.name}: SUNRGBD2Dseg.seglabel is not an array of object references"
            )
        references = seglabel[()].reshape(-1)  # N references: 8 bytes each
        for reference in references:
            yield np.asarray(f[reference][()]).T


def convert(inputs: Mapping[str, Path], writer: LayoutWriter) -> None:
    """Convert SUN-RGBD: images from SUNRGBD.zip, labels streamed from SUNRGBD2Dseg.mat."""
    toolbox, images = inputs[TOOLBOX.filename], inputs[IMAGES.filename]
    for relative in (SEG_PATH, META_PATH, SPLIT_PATH):
        if not (toolbox / relative).is_file():
            raise CorruptArchiveError(f"{TOOLBOX.filename} has no {relative}; is it the right archive?")
    rgb_paths = read_meta_paths(toolbox / META_PATH)
    train, test = read_split(toolbox / SPLIT_PATH)
    unsplit = 0
    count = 0
    for index, raw in enumerate(iter_labels(toolbox / SEG_PATH), start=1):
        if index > len(rgb_paths):
            raise CorruptArchiveError(
                f"{SEG_PATH} has more labels than {META_PATH} has images ({len(rgb_paths)}); "
                "the toolbox files do not belong together"
            )
        relative = relative_path(rgb_paths[index - 1])
        scene = relative.rsplit("/", 2)[0]
        split = "train" if scene in train else "val" if scene in test else None
        count = index
        if split is None:
            unsplit += 1
            continue
        image = images / relative
        if not image.is_file():
            raise CorruptArchiveError(
                f"sunrgbd: image {relative} (SUNRGBDMeta entry {index}) is not in {IMAGES.filename}"
            )
        writer.add(split, f"{index:05d}", image=image, label=map_labels(raw))
    if count != len(rgb_paths):
        raise CorruptArchiveError(
            f"{SEG_PATH} has {count} labels but {META_PATH} has {len(rgb_paths)} images; "
            "the toolbox files do not belong together"
        )
    if unsplit:
        print(f"sunrgbd: {unsplit} image(s) in neither alltrain nor alltest were left out", file=sys.stderr)


SPEC = register_dataset(
    DatasetSpec(
        name="sunrgbd",
        classes=CLASSES,
        palette=voc_palette(len(CLASSES)),
        convert=convert,
        converter_version=1,
        archives=(IMAGES, TOOLBOX),
        expected_splits=EXPECTED_SPLITS,
    )
)
