"""ADE20K, MIT Scene Parsing 2016 (paper.md, section 4.2; [P] Table 8): 150 classes.

Raw label 0 ("other") becomes ignore and k becomes k-1 (mmseg's `reduce_zero_label`);
`training` -> `train` (20,210 images), `validation` -> `val` (2,000).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipelines.datasets.download import Archive
from pipelines.datasets.errors import CorruptArchiveError
from pipelines.datasets.layout import IGNORE_INDEX, LayoutWriter, read_label, voc_palette
from pipelines.datasets.registry import DatasetSpec, register_dataset

# Class names in label order 1..150 (objectInfo150 of the SceneParsing devkit, short names).
CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence",
    "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)  # fmt: skip
ARCHIVE = Archive(
    filename="ADEChallengeData2016.zip",
    url="http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",
    # sha256 from tensorflow/datasets url_checksums/ade20k.txt (967,382,037 bytes);
    # also sha1 219e1696abb36c8ba3a3afe7fb2f4b4606a897c7 (gluon-cv).
    checksum="sha256:7ff1be44964418441f542a7cc1e1a650e7dc0fc275f5d23252bc9bbdbc977b29",
)
EXPECTED_SPLITS = {"train": 20210, "val": 2000}

# 0 -> ignore, k -> k-1 for k in 1..150, anything above 150 -> ignore.
LUT = np.full(256, IGNORE_INDEX, dtype=np.uint8)
LUT[1 : len(CLASSES) + 1] = np.arange(len(CLASSES), dtype=np.uint8)


def convert(inputs: Mapping[str, Path], writer: LayoutWriter) -> None:
    """Convert ADEChallengeData2016/{images,annotations}/{training,validation}."""
    root = inputs[ARCHIVE.filename] / "ADEChallengeData2016"
    for raw_split, split in (("training", "train"), ("validation", "val")):
        annotations = root / "annotations" / raw_split
        if not annotations.is_dir():
            raise CorruptArchiveError(
                f"{ARCHIVE.filename} has no ADEChallengeData2016/annotations/{raw_split}/"
            )
        for annotation in sorted(annotations.glob("*.png")):
            image = root / "images" / raw_split / f"{annotation.stem}.jpg"
            if not image.is_file():
                raise CorruptArchiveError(f"ade20k: annotation {annotation.name} has no image {image.name}")
            writer.add(split, annotation.stem, image=image, label=LUT[read_label(annotation)])


SPEC = register_dataset(
    DatasetSpec(
        name="ade20k",
        classes=CLASSES,
        palette=voc_palette(len(CLASSES)),
        convert=convert,
        converter_version=1,
        archives=(ARCHIVE,),
        expected_splits=EXPECTED_SPLITS,
    )
)
