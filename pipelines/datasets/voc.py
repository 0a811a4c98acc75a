"""PASCAL VOC 2012 with the SBD augmentation (paper.md, section 4.2; [P] section 4.2 uses it with COCO).

`train` = VOC train ∪ SBD train ∪ SBD val − VOC val ("train_aug", 10,582 images on the full data);
`val` = VOC val (1,449). VOC labels are palette PNGs read as indices (0..20, 255 = void); SBD labels
are `.mat` files read from `GTcls.Segmentation`. Where an image has a VOC label, it is preferred.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import scipy.io

from pipelines.datasets.download import Archive
from pipelines.datasets.errors import CorruptArchiveError, DatasetError
from pipelines.datasets.layout import IGNORE_INDEX, LayoutWriter, read_label, voc_palette
from pipelines.datasets.registry import DatasetSpec, register_dataset

CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
VOC_ARCHIVE = Archive(
    filename="VOCtrainval_11-May-2012.tar",
    url="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
    # md5 from torchvision datasets/voc.py; also sha1 4e443f8a2eca6b1dac8a6c57641b67dd40621a49 (gluon-cv).
    checksum="md5:6cd6e144f989b92b3379bac3b3de84fd",
)
SBD_ARCHIVE = Archive(
    filename="benchmark.tgz",
    url="http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
    # md5 from torchvision datasets/sbd.py; also sha1 7129e0a480c2d6afb02b517bb18ac54283bfaa35 (gluon-cv).
    checksum="md5:82b4d87ceb2ed10f6038a1cba92111cb",
)
EXPECTED_SPLITS = {"train": 10582, "val": 1449}

# Label values 0..20 are classes; everything else (255 = void in the devkit) becomes ignore.
_LUT = np.full(256, IGNORE_INDEX, dtype=np.uint8)
_LUT[: len(CLASSES)] = np.arange(len(CLASSES), dtype=np.uint8)


def read_ids(path: Path) -> list[str]:
    """Image ids of an ImageSets-style list file (one id per line)."""
    if not path.is_file():
        raise CorruptArchiveError(f"{path} is missing: the archive does not have the expected layout")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def read_sbd_label(path: Path) -> np.ndarray:
    """The class label of an SBD `cls/<id>.mat` file (`GTcls.Segmentation`), as uint8."""
    mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    try:
        segmentation = mat["GTcls"].Segmentation
    except (KeyError, AttributeError):
        raise CorruptArchiveError(
            f"{path} has no GTcls.Segmentation field; is it an SBD cls/*.mat file?"
        ) from None
    return np.asarray(segmentation).astype(np.uint8)


def convert(inputs: Mapping[str, Path], writer: LayoutWriter, *, train_split: str = "train_aug") -> None:
    """Convert VOC 2012 (+ SBD): `train_split` is "train_aug" (VOC + SBD) or "train" (VOC only)."""
    if train_split not in ("train_aug", "train"):
        raise DatasetError(f"voc2012: option train_split={train_split!r} must be 'train_aug' or 'train'")
    voc = inputs[VOC_ARCHIVE.filename] / "VOCdevkit" / "VOC2012"
    sbd = inputs[SBD_ARCHIVE.filename] / "benchmark_RELEASE" / "dataset"
    for root, archive in ((voc, VOC_ARCHIVE), (sbd, SBD_ARCHIVE)):
        if not root.is_dir():
            raise CorruptArchiveError(
                f"{archive.filename} has no {root.relative_to(inputs[archive.filename])}/"
            )
    lists = voc / "ImageSets" / "Segmentation"
    voc_train, voc_val = read_ids(lists / "train.txt"), read_ids(lists / "val.txt")
    train_ids = set(voc_train)
    if train_split == "train_aug":
        train_ids |= set(read_ids(sbd / "train.txt")) | set(read_ids(sbd / "val.txt"))
    train_ids -= set(voc_val)
    for split, ids in (("train", sorted(train_ids)), ("val", sorted(voc_val))):
        for image_id in ids:
            image = voc / "JPEGImages" / f"{image_id}.jpg"
            if not image.is_file():
                image = sbd / "img" / f"{image_id}.jpg"
            voc_label, sbd_label = (
                voc / "SegmentationClass" / f"{image_id}.png",
                sbd / "cls" / f"{image_id}.mat",
            )
            if voc_label.is_file():
                label = read_label(voc_label)
            elif sbd_label.is_file() and split == "train":
                label = read_sbd_label(sbd_label)
            else:
                raise CorruptArchiveError(f"voc2012: no label for image {image_id!r} in VOC or SBD")
            if not image.is_file():
                raise CorruptArchiveError(f"voc2012: no image {image_id}.jpg in VOC JPEGImages or SBD img")
            writer.add(split, image_id, image=image, label=_LUT[label])


SPEC = register_dataset(
    DatasetSpec(
        name="voc2012",
        classes=CLASSES,
        palette=voc_palette(len(CLASSES)),
        convert=convert,
        converter_version=1,
        archives=(VOC_ARCHIVE, SBD_ARCHIVE),
        expected_splits=EXPECTED_SPLITS,
    )
)
