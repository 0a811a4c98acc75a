"""PASCAL-Person-Part (paper.md, section 4; [P] Table 6): 7 classes on VOC2010 images.

Two sources, chosen with the prepare option `source`:

- `"png"` (default): DeepLab's release `pascal_person_part.zip`:
  `pascal_person_part/pascal_person_part_gt/<id>.png` (values 0..6; anything else -> 255) and
  `pascal_person_part/pascal_person_part_trainval_list/{train_id.txt, val_id.txt}`.
- `"mat"`: the raw Pascal-Part annotations `trainval.tar.gz` (`Annotations_Part/<id>.mat`, struct `anno`
  -> `objects` (`class`, `mask`, `parts` -> `part_name`, `mask`)). The parts of every `person` object are
  merged into the six person parts by `PART_GROUPS` (DeepLab's grouping); pixels of a person not covered
  by any part become 255 (ignore), everything else is background. Splits: the VOC2010
  `ImageSets/Main/{train,val}.txt` images that hold at least one person with part masks.

Images come from VOC2010 `JPEGImages`. The test split is named `val` in the layout. Split sizes differ by
one between sources (paper.md: 1,716/1,817 vs 1,717/1,818); meta.json records what was found.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from PIL import Image

from pipelines.datasets.download import Archive
from pipelines.datasets.errors import CorruptArchiveError, DatasetError
from pipelines.datasets.layout import IGNORE_INDEX, LayoutWriter, voc_palette
from pipelines.datasets.pascal_context import VOC2010_ARCHIVE
from pipelines.datasets.registry import DatasetSpec, register_dataset

CLASSES = ("background", "head", "torso", "upper arms", "lower arms", "upper legs", "lower legs")
# Pascal-Part person part names -> class id (1..6), the grouping of DeepLab's person-part release.
PART_GROUPS: dict[str, int] = {
    **dict.fromkeys(("head", "hair", "leye", "reye", "lear", "rear", "lebrow", "rebrow", "nose", "mouth"), 1),
    **dict.fromkeys(("torso", "neck"), 2),
    **dict.fromkeys(("luarm", "ruarm"), 3),
    **dict.fromkeys(("llarm", "rlarm", "lhand", "rhand"), 4),
    **dict.fromkeys(("luleg", "ruleg"), 5),
    **dict.fromkeys(("llleg", "rlleg", "lfoot", "rfoot"), 6),
}
PNG_ARCHIVE = Archive(
    filename="pascal_person_part.zip",
    url="http://liangchiehchen.com/data/pascal_person_part.zip",  # mirror: cvteam.net/projects/2019/figs/
    checksum=None,  # no public digest: recorded in checksums.lock.json at the first download
)
PARTS_ARCHIVE = Archive(
    filename="trainval.tar.gz",
    url="https://www.cs.stanford.edu/~roozbeh/pascal-parts/trainval.tar.gz",
    checksum=None,
)
EXPECTED_SPLITS = {"train": 1716, "val": 1817}  # DeepLab's PNG release lists (Papers-with-Code counts)

_LUT = np.full(256, IGNORE_INDEX, dtype=np.uint8)
_LUT[: len(CLASSES)] = np.arange(len(CLASSES), dtype=np.uint8)


def _read_ids(path: Path, archive: str) -> list[str]:
    if not path.is_file():
        raise CorruptArchiveError(
            f"{archive} has no {path.name} (looked at {path}); is it the right archive?"
        )
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _read_png_label(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        if im.mode in ("L", "P"):
            return np.array(im, dtype=np.uint8)
        array = np.array(im.convert("RGB"), dtype=np.uint8)
    if not ((array[..., 0] == array[..., 1]) & (array[..., 1] == array[..., 2])).all():
        raise CorruptArchiveError(f"person_part: {path.name} is a colour image; expected class ids 0..6")
    return array[..., 0]


def _items(value: Any) -> list[Any]:
    """The elements of a scipy-loaded MATLAB struct array (a lone struct is squeezed to itself)."""
    if isinstance(value, np.ndarray):
        return list(value.flat)
    return [value]


def _field(struct: Any, name: str, what: str, path: Path) -> Any:
    if not hasattr(struct, name):
        raise CorruptArchiveError(
            f"{path.name}: {what} has no field {name!r}; expected a Pascal-Part Annotations_Part/*.mat "
            f"file from {PARTS_ARCHIVE.filename} ({PARTS_ARCHIVE.url})"
        )
    return getattr(struct, name)


def read_part_label(path: Path) -> tuple[np.ndarray | None, bool]:
    """The 7-class label of one Pascal-Part `.mat` file, and whether it has a person with parts.

    Returns (None, False) for an image without objects.
    """
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except (ValueError, OSError, TypeError) as e:
        raise CorruptArchiveError(f"{path.name} is not a readable .mat file ({e})") from None
    if "anno" not in mat:
        raise CorruptArchiveError(
            f"{path.name} has no variable 'anno'; expected a Pascal-Part Annotations_Part/*.mat file "
            f"from {PARTS_ARCHIVE.filename}"
        )
    objects = _items(_field(mat["anno"], "objects", "anno", path))
    label: np.ndarray | None = None
    has_parts = False
    for obj in objects:
        mask = np.asarray(_field(obj, "mask", "anno.objects", path)).astype(bool)
        if label is None:
            label = np.zeros(mask.shape, dtype=np.uint8)
        if str(_field(obj, "class", "anno.objects", path)) != "person":
            continue
        parts = _items(_field(obj, "parts", "anno.objects", path))
        label[mask] = IGNORE_INDEX  # person pixels outside every part are ignored
        for part in parts:
            name = str(_field(part, "part_name", "anno.objects.parts", path))
            if name not in PART_GROUPS:
                raise CorruptArchiveError(f"{path.name}: unknown person part name {name!r}")
            label[np.asarray(_field(part, "mask", "anno.objects.parts", path)).astype(bool)] = PART_GROUPS[
                name
            ]
            has_parts = True
    return label, has_parts


def _convert_png(root: Path, images: Path, writer: LayoutWriter) -> None:
    base = root / "pascal_person_part"
    lists, gt = base / "pascal_person_part_trainval_list", base / "pascal_person_part_gt"
    if not gt.is_dir():
        raise CorruptArchiveError(f"{PNG_ARCHIVE.filename} has no pascal_person_part/pascal_person_part_gt/")
    for split, list_name in (("train", "train_id.txt"), ("val", "val_id.txt")):
        for image_id in _read_ids(lists / list_name, PNG_ARCHIVE.filename):
            label_path, image = gt / f"{image_id}.png", images / f"{image_id}.jpg"
            if not label_path.is_file():
                raise CorruptArchiveError(
                    f"person_part: {PNG_ARCHIVE.filename} has no label {label_path.name}"
                )
            if not image.is_file():
                raise CorruptArchiveError(f"person_part: image {image_id}.jpg is not in VOC2010 JPEGImages/")
            writer.add(split, image_id, image=image, label=_LUT[_read_png_label(label_path)])


def _convert_mat(root: Path, voc: Path, writer: LayoutWriter) -> None:
    annotations = next((p for p in (root / "Annotations_Part", root / "trainval" / "Annotations_Part")
                        if p.is_dir()), None)  # fmt: skip
    if annotations is None:
        raise CorruptArchiveError(f"{PARTS_ARCHIVE.filename} has no Annotations_Part/ folder")
    for split in ("train", "val"):
        for image_id in _read_ids(voc / "ImageSets" / "Main" / f"{split}.txt", VOC2010_ARCHIVE.filename):
            path = annotations / f"{image_id}.mat"
            if not path.is_file():
                raise CorruptArchiveError(f"person_part: {PARTS_ARCHIVE.filename} has no {path.name}")
            label, has_parts = read_part_label(path)
            if not has_parts or label is None:
                continue
            writer.add(split, image_id, image=voc / "JPEGImages" / f"{image_id}.jpg", label=label)


def convert(inputs: Mapping[str, Path], writer: LayoutWriter, *, source: str = "png") -> None:
    """Convert Person-Part from DeepLab's PNG release (`source="png"`) or the Pascal-Part .mat files."""
    voc = inputs[VOC2010_ARCHIVE.filename] / "VOCdevkit" / "VOC2010"
    if not (voc / "JPEGImages").is_dir():
        raise CorruptArchiveError(f"{VOC2010_ARCHIVE.filename} has no VOCdevkit/VOC2010/JPEGImages/")
    if source == "png":
        _convert_png(inputs[PNG_ARCHIVE.filename], voc / "JPEGImages", writer)
    elif source == "mat":
        _convert_mat(inputs[PARTS_ARCHIVE.filename], voc, writer)
    else:
        raise DatasetError(f"person_part: option source={source!r} must be 'png' or 'mat'")


SPEC = register_dataset(
    DatasetSpec(
        name="person_part",
        classes=CLASSES,
        palette=voc_palette(len(CLASSES)),
        convert=convert,
        converter_version=1,
        archives=(VOC2010_ARCHIVE, PNG_ARCHIVE, PARTS_ARCHIVE),
        expected_splits=EXPECTED_SPLITS,
    )
)
