"""PASCAL-Context (paper.md, section 4; [P] Table 4): 60 classes (59 + background) on VOC2010 images.

Annotations come from the Detail-API file `trainval_merged.json`, parsed here directly (the Detail API
is not on PyPI). Its keys: `images` (`image_id`, `file_name`, `height`, `width`, `phase` train/val),
`categories` (`category_id`, `name`) and `annos_segmentation` (`image_id`, `category_id`,
`segmentation` as COCO RLE, compressed or not, or polygons). As the Detail API's `getMask`, the class
mask paints every annotation of an image in file order (later ones win) with its raw category id; the
60 raw ids of mmseg's `_mapping` (0 = background and the 59 classes, sorted) become 0..59, and any
other raw id becomes background. Option `classes=59`: background -> 255, k -> k-1 (mmseg's
`PascalContextDataset59`). Splits: train 4,998 / val 5,105.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from pipelines.datasets.download import Archive
from pipelines.datasets.errors import CorruptArchiveError, DatasetError
from pipelines.datasets.layout import IGNORE_INDEX, LayoutWriter, voc_palette
from pipelines.datasets.registry import DatasetSpec, register_dataset

# (raw category id in the 459-class PASCAL-Context labels, name), sorted by id (= alphabetical order).
CONTEXT_CLASSES = (
    (0, "background"), (2, "aeroplane"), (9, "bag"), (18, "bed"), (19, "bedclothes"), (22, "bench"),
    (23, "bicycle"), (25, "bird"), (31, "boat"), (33, "book"), (34, "bottle"), (44, "building"),
    (45, "bus"), (46, "cabinet"), (59, "car"), (65, "cat"), (68, "ceiling"), (72, "chair"), (80, "cloth"),
    (85, "computer"), (98, "cow"), (104, "cup"), (105, "curtain"), (113, "dog"), (115, "door"),
    (144, "fence"), (158, "floor"), (159, "flower"), (162, "food"), (187, "grass"), (189, "ground"),
    (207, "horse"), (220, "keyboard"), (232, "light"), (258, "motorbike"), (259, "mountain"),
    (260, "mouse"), (284, "person"), (295, "plate"), (296, "platform"), (308, "pottedplant"),
    (324, "road"), (326, "rock"), (347, "sheep"), (349, "shelves"), (354, "sidewalk"), (355, "sign"),
    (360, "sky"), (366, "snow"), (368, "sofa"), (397, "table"), (415, "track"), (416, "train"),
    (420, "tree"), (424, "truck"), (427, "tvmonitor"), (440, "wall"), (445, "water"), (454, "window"),
    (458, "wood"),
)  # fmt: skip
RAW_IDS = tuple(raw for raw, _ in CONTEXT_CLASSES)
CLASSES = tuple(name for _, name in CONTEXT_CLASSES)
PALETTE = voc_palette(len(CLASSES))
CLASSES_59 = CLASSES[1:]
PALETTE_59 = PALETTE[1:]

VOC2010_ARCHIVE = Archive(
    filename="VOCtrainval_03-May-2010.tar",
    url="http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar",
    # md5 from torchvision datasets/voc.py; also sha1 bf9985e9f2b064752bf6bd654d89f017c76c395a (gluon-cv).
    checksum="md5:da459979d0c395079b5c75ee67908abb",
)
JSON_ARCHIVE = Archive(
    filename="trainval_merged.json",
    url="https://codalabuser.blob.core.windows.net/public/trainval_merged.json",
    checksum="sha1:169325d9f7e9047537fedca7b04de4dddf10b881",  # gluon-cv scripts/datasets/pascal_context.py
    extract=False,
)
EXPECTED_SPLITS = {"train": 4998, "val": 5105}
_PHASES = {"train": "train", "val": "val"}


def decode_rle_string(counts: str) -> list[int]:
    """Run lengths of a compressed COCO RLE string (pycocotools' `rleFrString`).

    Each run is a variable-length number in 5-bit groups, characters offset by 48; a set bit 0x20
    continues the number, bit 0x10 of the last group is the sign; from the fourth run on, the stored
    value is the difference to the run two places back.
    """
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                raise ValueError("compressed RLE string ends inside a number")
            c = ord(counts[position]) - 48
            value |= (c & 0x1F) << (5 * shift)
            more = bool(c & 0x20)
            position += 1
            shift += 1
            if not more and c & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def rle_to_mask(counts: Sequence[int], height: int, width: int) -> np.ndarray:
    """A (height, width) bool mask from COCO run lengths (zeros first, column-major order)."""
    runs = np.asarray(counts, dtype=np.int64)
    if (runs < 0).any() or int(runs.sum()) != height * width:
        raise ValueError(f"RLE runs sum to {int(runs.sum())} pixels, expected {height}x{width}")
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape((height, width), order="F")


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons `[[x1, y1, x2, y2, ...], ...]` (union) with PIL, boundary pixels included.

    pycocotools rasterises at 5x and may differ from this by one pixel along the edges.
    """
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        if len(polygon) < 6 or len(polygon) % 2:
            raise ValueError(f"a polygon needs an even number >= 6 of coordinates, got {len(polygon)}")
        points = [(float(x), float(y)) for x, y in zip(polygon[::2], polygon[1::2], strict=True)]
        draw.polygon(points, fill=1, outline=1)
    return np.array(canvas, dtype=bool)


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Decode one COCO-style segmentation (RLE dict or polygon list) into a (height, width) bool mask."""
    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        counts = segmentation.get("counts")
        if size is None or counts is None:
            raise ValueError("an RLE segmentation needs 'size' and 'counts'")
        if [int(s) for s in size] != [height, width]:
            raise ValueError(f"RLE size {list(size)} differs from the image size {[height, width]}")
        runs = decode_rle_string(counts) if isinstance(counts, str) else list(counts)
        return rle_to_mask(runs, height, width)
    if isinstance(segmentation, list) and segmentation and all(isinstance(s, dict) for s in segmentation):
        return np.logical_or.reduce([decode_segmentation(s, height, width) for s in segmentation])
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    raise ValueError(
        f"unknown segmentation type {type(segmentation).__name__} (expected RLE dict or polygons)"
    )


def raw_lut(raw_ids: Sequence[int]) -> dict[int, int]:
    """Raw category id -> training id; ids not in `raw_ids` are absent (they become background)."""
    return {raw: index for index, raw in enumerate(raw_ids)}


def _require(mapping: Mapping[str, Any], key: str, what: str, source: str) -> Any:
    if key not in mapping:
        raise CorruptArchiveError(
            f"{source}: {what} has no field {key!r}; expected the Detail-API trainval_merged.json "
            f"({JSON_ARCHIVE.url})"
        )
    return mapping[key]


def use_classes(writer: LayoutWriter, classes: Sequence[str], palette: Sequence[Sequence[int]]) -> None:
    """Make the writer record (and check labels against) a class list other than the spec's default."""
    writer.classes = list(classes)
    writer.palette = [list(map(int, colour)) for colour in palette]


def convert(inputs: Mapping[str, Path], writer: LayoutWriter, *, classes: int = 60) -> None:
    """Convert VOC2010 JPEGImages + trainval_merged.json; `classes` is 60 (with background) or 59."""
    if classes not in (59, 60):
        raise DatasetError(f"pascal_context: option classes={classes!r} must be 60 or 59")
    voc = inputs[VOC2010_ARCHIVE.filename] / "VOCdevkit" / "VOC2010" / "JPEGImages"
    if not voc.is_dir():
        raise CorruptArchiveError(f"{VOC2010_ARCHIVE.filename} has no VOCdevkit/VOC2010/JPEGImages/")
    json_path = inputs[JSON_ARCHIVE.filename]
    try:
        data = json.loads(Path(json_path).read_text())
    except ValueError as e:
        raise CorruptArchiveError(
            f"{JSON_ARCHIVE.filename} is not valid JSON ({e}); fetch it again"
        ) from None
    source = JSON_ARCHIVE.filename
    images = _require(data, "images", "the file", source)
    annotations = _require(data, "annos_segmentation", "the file", source)
    lut = raw_lut(RAW_IDS)
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for annotation in annotations:
        by_image.setdefault(
            _require(annotation, "image_id", "an annos_segmentation entry", source), []
        ).append(annotation)
    if classes == 59:
        use_classes(writer, CLASSES_59, PALETTE_59)
        # background (0) -> ignore, k -> k-1
        final = np.array([IGNORE_INDEX] + list(range(len(CLASSES_59))), dtype=np.uint8)
    else:
        final = np.arange(len(CLASSES), dtype=np.uint8)
    for image in images:
        split = _PHASES.get(_require(image, "phase", "an images entry", source))
        if split is None:  # e.g. "test" images have no public annotations
            continue
        image_key = _require(image, "image_id", "an images entry", source)
        file_name = _require(image, "file_name", "an images entry", source)
        path = voc / file_name
        if not path.is_file():
            raise CorruptArchiveError(f"pascal_context: image {file_name} is not in VOC2010 JPEGImages/")
        if "height" in image and "width" in image:
            height, width = int(image["height"]), int(image["width"])
        else:
            with Image.open(path) as im:
                width, height = im.size
        label = np.zeros((height, width), dtype=np.uint8)  # indices into the 60 classes
        for annotation in by_image.get(image_key, []):
            category = _require(annotation, "category_id", "an annos_segmentation entry", source)
            segmentation = _require(annotation, "segmentation", "an annos_segmentation entry", source)
            try:
                mask = decode_segmentation(segmentation, height, width)
            except (ValueError, TypeError) as e:
                raise CorruptArchiveError(
                    f"{source}: bad segmentation of image {file_name} (category {category}): {e}"
                ) from None
            label[mask] = lut.get(int(category), 0)
        writer.add(split, Path(file_name).stem, image=path, label=final[label])


SPEC = register_dataset(
    DatasetSpec(
        name="pascal_context",
        classes=CLASSES,
        palette=PALETTE,
        convert=convert,
        converter_version=1,
        archives=(VOC2010_ARCHIVE, JSON_ARCHIVE),
        expected_splits=EXPECTED_SPLITS,
    )
)
