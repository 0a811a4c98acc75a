"""Miniature archives in each dataset's real format, with hand-written expected labels.

Folder names, file naming and encodings follow paper.md, section 4.2: VOC palette PNGs with 255
borders, SBD `.mat` files with a `GTcls` struct, ADE20K 0..150 PNGs, Cityscapes `*_gtFine_labelIds.png`.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

from pipelines.datasets.layout import voc_palette

B = 255  # void / ignore


def jpeg_bytes(seed: int, width: int, height: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def png_bytes(array: np.ndarray, *, palette: bool = False) -> bytes:
    image = Image.fromarray(np.asarray(array, dtype=np.uint8))
    if palette:
        image = image.convert("L")
        image.putpalette([c for colour in voc_palette(256) for c in colour])  # turns it into mode "P"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def mat_bytes(segmentation: np.ndarray) -> bytes:
    """An SBD cls/*.mat file: struct GTcls with fields Segmentation, Boundaries, CategoriesPresent."""
    buffer = io.BytesIO()
    seg = np.asarray(segmentation, dtype=np.uint8)
    boundaries = np.empty((len(np.unique(seg)), 1), dtype=object)  # a cell of per-class boundary maps
    for k in range(boundaries.shape[0]):
        boundaries[k, 0] = scipy.sparse.csc_matrix(seg.shape, dtype=bool)
    gtcls = {
        "Segmentation": seg,
        "Boundaries": boundaries,
        "CategoriesPresent": np.unique(seg[seg > 0]).astype(np.uint8),
    }
    scipy.io.savemat(buffer, {"GTcls": gtcls})
    return buffer.getvalue()


def write_tar(path: Path, files: dict[str, bytes], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        dirs = sorted({str(Path(n).parent) for n in files} - {"."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for d in sorted({str(Path(n).parent) + "/" for n in files} - {"./"}):
            zf.writestr(d, b"")
        for name, data in files.items():
            zf.writestr(name, data)
    return path


# --------------------------------------------------------------------------------------------- VOC + SBD
# VOC lists: train {032, 039}, val {033}. SBD lists: train {2008_002, 033}, val {2008_003, 039}.
# train_aug = (VOC train | SBD train | SBD val) - VOC val = {032, 039, 2008_002, 2008_003}.
VOC_TRAIN, VOC_VAL = ["2007_000032", "2007_000039"], ["2007_000033"]
SBD_TRAIN, SBD_VAL = ["2008_000002", "2007_000033"], ["2008_000003", "2007_000039"]
VOC_LABELS = {
    "2007_000032": [
        [0, 0, 0, 0, 0, 0],
        [0, B, B, B, B, 0],
        [0, B, 15, 15, B, 0],
        [0, B, 15, 15, B, 2],
        [0, B, B, B, B, 2],
    ],
    "2007_000039": [
        [20, 20, B, 0, 0, 0],
        [20, 20, B, 0, 1, 1],
        [B, B, B, 0, 1, 1],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ],
    "2007_000033": [
        [0, 0, 0, 0, 0, 0],
        [0, 7, 7, 7, 7, 0],
        [0, 7, 7, 7, 7, 0],
        [0, 0, 0, 0, B, 30],  # 30 is not a VOC class: it must become ignore
        [0, 0, 0, 0, 0, 0],
    ],
}
SBD_LABELS = {
    "2008_000002": [[0, 0, 3, 3, 3, 3], [0, 0, 3, 3, 3, 3], [0, 0, 0, 0, 0, 0], [12, 12, 0, 0, 0, 0],
                    [12, 12, 0, 0, 0, 0]],
    "2008_000003": [[19, 19, 19, 19, 19, 19], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0],
                    [0, 0, 0, 0, 0, 5]],
    # SBD also labels 2007_000039 (differently): the VOC label must win.
    "2007_000039": [[1] * 6] * 5,
    "2007_000033": [[9] * 6] * 5,
}  # fmt: skip
VOC_EXPECTED = {
    "train": {
        "2007_000032": VOC_LABELS["2007_000032"],
        "2007_000039": VOC_LABELS["2007_000039"],
        "2008_000002": SBD_LABELS["2008_000002"],
        "2008_000003": SBD_LABELS["2008_000003"],
    },
    "val": {"2007_000033": [[0] * 6, [0, 7, 7, 7, 7, 0], [0, 7, 7, 7, 7, 0], [0, 0, 0, 0, B, B], [0] * 6]},
}


def build_voc(folder: Path) -> dict:
    """VOCtrainval_11-May-2012.tar and benchmark.tgz; returns the expected images' bytes per (split, id)."""
    folder.mkdir(parents=True, exist_ok=True)
    voc = "VOCdevkit/VOC2012"
    images = {
        i: jpeg_bytes(n, 6, 5) for n, i in enumerate(sorted({*VOC_TRAIN, *VOC_VAL, *SBD_TRAIN, *SBD_VAL}))
    }
    files = {
        f"{voc}/ImageSets/Segmentation/train.txt": "\n".join(VOC_TRAIN).encode() + b"\n",
        f"{voc}/ImageSets/Segmentation/val.txt": "\n".join(VOC_VAL).encode() + b"\n",
        f"{voc}/ImageSets/Segmentation/trainval.txt": "\n".join(VOC_TRAIN + VOC_VAL).encode() + b"\n",
        f"{voc}/JPEGImages/2009_000001.jpg": jpeg_bytes(99, 6, 5),  # in no list: not converted
        f"{voc}/Annotations/2007_000032.xml": b"<annotation/>",
    }
    for image_id, data in images.items():
        if image_id != "2008_000003":  # this one only exists in SBD's img/ (fallback path)
            files[f"{voc}/JPEGImages/{image_id}.jpg"] = data
    for image_id, label in VOC_LABELS.items():
        files[f"{voc}/SegmentationClass/{image_id}.png"] = png_bytes(np.array(label), palette=True)
    write_tar(folder / "VOCtrainval_11-May-2012.tar", files)

    sbd = "benchmark_RELEASE/dataset"
    files = {
        f"{sbd}/train.txt": "\n".join(SBD_TRAIN).encode() + b"\n",
        f"{sbd}/val.txt": "\n".join(SBD_VAL).encode() + b"\n",
    }
    for image_id in {*SBD_TRAIN, *SBD_VAL}:
        files[f"{sbd}/img/{image_id}.jpg"] = images[image_id]
        files[f"{sbd}/cls/{image_id}.mat"] = mat_bytes(np.array(SBD_LABELS[image_id]))
        files[f"{sbd}/inst/{image_id}.mat"] = mat_bytes(np.zeros((5, 6)))
    write_tar(folder / "benchmark.tgz", files, mode="w:gz")
    return images


# ------------------------------------------------------------------------------------------------ ADE20K
ADE_LABELS = {
    ("training", "ADE_train_00000001"): [[0, 1, 2, 3], [150, 149, 75, 0], [1, 1, 0, 0]],
    ("training", "ADE_train_00000002"): [[5, 5, 5, 5], [5, 0, 0, 5], [12, 12, 12, 12]],
    ("validation", "ADE_val_00000001"): [[0, 0, 0, 0], [100, 101, 102, 0], [150, 150, 1, 0]],
}
ADE_EXPECTED = {
    ("train", "ADE_train_00000001"): [[B, 0, 1, 2], [149, 148, 74, B], [0, 0, B, B]],
    ("train", "ADE_train_00000002"): [[4, 4, 4, 4], [4, B, B, 4], [11, 11, 11, 11]],
    ("val", "ADE_val_00000001"): [[B, B, B, B], [99, 100, 101, B], [149, 149, 0, B]],
}


def build_ade20k(folder: Path) -> dict:
    """ADEChallengeData2016.zip; returns the image bytes per (raw split, id)."""
    folder.mkdir(parents=True, exist_ok=True)
    root = "ADEChallengeData2016"
    files = {f"{root}/sceneCategories.txt": b"ADE_train_00000001 airport_terminal\n"}
    images = {}
    for n, ((raw_split, image_id), label) in enumerate(ADE_LABELS.items()):
        images[(raw_split, image_id)] = jpeg_bytes(100 + n, 4, 3)
        files[f"{root}/images/{raw_split}/{image_id}.jpg"] = images[(raw_split, image_id)]
        files[f"{root}/annotations/{raw_split}/{image_id}.png"] = png_bytes(np.array(label))
    write_zip(folder / "ADEChallengeData2016.zip", files)
    return images


# -------------------------------------------------------------------------------------------- Cityscapes
# Real labelIds: 0 unlabeled, 1 ego vehicle, 4 static, 7 road, 8 sidewalk, 9 parking, 11 building,
# 14 guard rail, 17 pole, 21 vegetation, 23 sky, 24 person, 26 car, 29 caravan, 33 bicycle.
CITY_LABELS = {
    ("train", "aachen", "aachen_000000_000019"): [[23, 23, 23, 23, 23], [11, 17, 21, 21, 0],
                                                  [7, 7, 24, 26, 26], [8, 7, 7, 7, 9], [1, 1, 1, 1, 1]],
    ("train", "bochum", "bochum_000000_000313"): [[4, 14, 29, 33, 32], [31, 28, 27, 25, 22],
                                                  [20, 19, 13, 12, 6], [5, 3, 2, 10, 15],
                                                  [16, 18, 30, 34, 0]],
    ("val", "frankfurt", "frankfurt_000000_000294"): [[7] * 5, [7] * 5, [26] * 5, [0] * 5, [33] * 5],
    ("test", "berlin", "berlin_000000_000019"): [[0] * 5] * 5,  # test labels are dummies: not converted
}  # fmt: skip
CITY_EXPECTED = {
    ("train", "aachen_000000_000019"): [[10, 10, 10, 10, 10], [2, 5, 8, 8, B], [0, 0, 11, 13, 13],
                                        [1, 0, 0, 0, B], [B, B, B, B, B]],
    ("train", "bochum_000000_000313"): [[B, B, B, 18, 17], [16, 15, 14, 12, 9], [7, 6, 4, 3, B],
                                        [B, B, B, B, B], [B, B, B, B, B]],
    ("val", "frankfurt_000000_000294"): [[0] * 5, [0] * 5, [13] * 5, [B] * 5, [18] * 5],
}  # fmt: skip


def build_cityscapes(folder: Path) -> dict:
    """gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip; returns image bytes per (split, id)."""
    folder.mkdir(parents=True, exist_ok=True)
    gt = {"README": b"gtFine", "license.txt": b"custom terms"}
    left = {"README": b"leftImg8bit", "license.txt": b"custom terms"}
    images = {}
    for n, ((split, city, image_id), label) in enumerate(CITY_LABELS.items()):
        base = f"{split}/{city}/{image_id}"
        gt[f"gtFine/{base}_gtFine_labelIds.png"] = png_bytes(np.array(label))
        gt[f"gtFine/{base}_gtFine_instanceIds.png"] = png_bytes(np.array(label))
        gt[f"gtFine/{base}_gtFine_color.png"] = png_bytes(np.zeros((5, 5, 3)))
        gt[f"gtFine/{base}_gtFine_polygons.json"] = b"{}"
        images[(split, image_id)] = png_bytes(np.random.default_rng(n).integers(0, 256, (5, 5, 3)))
        left[f"leftImg8bit/{base}_leftImg8bit.png"] = images[(split, image_id)]
    write_zip(folder / "gtFine_trainvaltest.zip", gt)
    write_zip(folder / "leftImg8bit_trainvaltest.zip", left)
    return images
