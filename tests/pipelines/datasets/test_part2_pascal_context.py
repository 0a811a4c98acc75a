"""PASCAL-Context: a miniature VOC2010 tar and a Detail-API trainval_merged.json (RLE and polygons)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import sha256_file
from dataset_archives import jpeg_bytes, write_tar

from pipelines.datasets import CorruptArchiveError, list_split, load_meta, read_label
from pipelines.datasets.pascal_context import (
    CLASSES,
    decode_rle_string,
    decode_segmentation,
    polygons_to_mask,
)
from pipelines.fetch import fetch_dataset
from pipelines.prepare import prepare_dataset

B = 255
# (file name, width, height, phase)
IMAGES = [
    ("2008_000002.jpg", 5, 4, "train"),
    ("2008_000003.jpg", 4, 3, "val"),
    ("2008_000004.jpg", 2, 2, "val"),
    ("2010_000001.jpg", 3, 3, "test"),  # no public annotations: left out
]
EXPECTED_60 = {
    "2008_000002": [
        [0, 0, 0, 56, 56],
        [0, 0, 0, 56, 56],
        [1, 1, 37, 37, 37],
        [1, 1, 37, 37, 37],
    ],
    "2008_000003": [[15] * 4] * 3,
    "2008_000004": [[0, 0], [0, 0]],
}
EXPECTED_59 = {
    "2008_000002": [
        [B, B, B, 55, 55],
        [B, B, B, 55, 55],
        [0, 0, 36, 36, 36],
        [0, 0, 36, 36, 36],
    ],
    "2008_000003": [[14] * 4] * 3,
    "2008_000004": [[B, B], [B, B]],
}


def detail_json() -> dict:
    """trainval_merged.json's structure: images, categories, annos_segmentation (file order = paint order)."""
    images = [
        {
            "image_id": int(name[:4] + name[5:11]),
            "file_name": name,
            "width": w,
            "height": h,
            "phase": phase,
        }
        for name, w, h, phase in IMAGES
    ]
    return {
        "info": {"description": "miniature"},
        "images": images,
        "categories": [
            {"category_id": 2, "name": "aeroplane"},
            {"category_id": 65, "name": "cat"},
            {"category_id": 284, "name": "person"},
            {"category_id": 440, "name": "wall"},
        ],
        "annos_segmentation": [
            # aeroplane: columns 0-1, uncompressed RLE (column-major runs, zeros first)
            {"id": 1, "image_id": 2008000002, "category_id": 2,
             "segmentation": {"size": [4, 5], "counts": [0, 8, 12]}},
            # wall: rows 0-1 of columns 3-4, compressed RLE of runs [12, 2, 2, 2, 2]
            {"id": 2, "image_id": 2008000002, "category_id": 440,
             "segmentation": {"size": [4, 5], "counts": "<2200"}},
            # a category outside the 59 classes paints background over the aeroplane's top
            {"id": 3, "image_id": 2008000002, "category_id": 999, "segmentation": [[0, 0, 1, 0, 1, 1, 0, 1]]},
            # person: polygon rows 2-3, columns 2-4 (boundary included)
            {"id": 4, "image_id": 2008000002, "category_id": 284, "segmentation": [[2, 2, 4, 2, 4, 3, 2, 3]]},
            {"id": 5, "image_id": 2008000003, "category_id": 65,
             "segmentation": {"size": [3, 4], "counts": [0, 12]}},
        ],
        "parts": [],
    }  # fmt: skip


def build_voc2010(root, names_sizes, extra=None):
    """VOCtrainval_03-May-2010.tar with JPEGImages (and optional extra members)."""
    files = {
        f"VOCdevkit/VOC2010/JPEGImages/{name}": jpeg_bytes(i, w, h)
        for i, (name, w, h) in enumerate(names_sizes)
    }
    files.update(extra or {})
    return write_tar(root / "VOCtrainval_03-May-2010.tar", files)


@pytest.fixture
def context_served(file_server, override_spec):
    build_voc2010(file_server.root, [(n, w, h) for n, w, h, p in IMAGES if p != "test"])
    (file_server.root / "trainval_merged.json").write_text(json.dumps(detail_json()))
    override_spec(
        "pascal_context",
        {name: "sha256:" + sha256_file(file_server.root / name)
         for name in ("VOCtrainval_03-May-2010.tar", "trainval_merged.json")},
    )  # fmt: skip
    return file_server


def test_compressed_rle_strings_decode_to_hand_computed_runs():
    assert decode_rle_string("13") == [1, 3]
    assert decode_rle_string("T3") == [100]  # 100 = 4 + 3 * 32, continuation bit set on the first group
    # from the fourth run on, the difference to the run two places back: 2 - 9 = -7 is "I" (25 = -7 & 31)
    assert decode_rle_string("593I") == [5, 9, 3, 2]
    assert decode_rle_string("523O") == [5, 2, 3, 1]
    assert decode_rle_string("<2200") == [12, 2, 2, 2, 2]


def test_segmentation_decoders_against_hand_written_masks():
    rle = decode_segmentation({"size": [2, 3], "counts": [1, 2, 3]}, 2, 3)
    np.testing.assert_array_equal(rle, [[0, 1, 0], [1, 0, 0]])
    triangle = polygons_to_mask([[0, 0, 3, 0, 0, 3]], 4, 4)
    np.testing.assert_array_equal(triangle, [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]])
    rles = [{"size": [2, 3], "counts": [5, 1]}, {"size": [2, 3], "counts": "015"}]
    several = decode_segmentation(rles, 2, 3)
    np.testing.assert_array_equal(several, [[1, 0, 0], [0, 0, 1]])  # a list of RLEs is their union
    with pytest.raises(ValueError, match="RLE size"):
        decode_segmentation({"size": [3, 3], "counts": [9]}, 2, 3)
    with pytest.raises(ValueError, match="sum to"):
        decode_segmentation({"size": [2, 3], "counts": [1, 2]}, 2, 3)


@pytest.mark.parametrize(("classes", "expected"), [(60, EXPECTED_60), (59, EXPECTED_59)])
def test_fetch_and_prepare_pixel_by_pixel(tmp_path, context_served, classes, expected):
    raw = tmp_path / "raw"
    fetch_dataset("pascal_context", raw, mirror=context_served.url, progress=False)
    root = prepare_dataset("pascal_context", raw, tmp_path / "prepared", classes=classes)
    meta = load_meta(root)
    assert meta["splits"] == {"train": 1, "val": 2}
    assert meta["options"] == {"classes": classes}
    assert len(meta["classes"]) == classes == len(meta["palette"])
    assert meta["classes"] == (list(CLASSES) if classes == 60 else list(CLASSES[1:]))
    for split in ("train", "val"):
        for sample in list_split(root, split):
            np.testing.assert_array_equal(read_label(sample.label), np.array(expected[sample.image_id]))
            assert sample.image.suffix == ".jpg"


def test_missing_json_field_is_a_clear_error_and_leaves_nothing(tmp_path, file_server, override_spec):
    build_voc2010(file_server.root, [("2008_000002.jpg", 5, 4)])
    data = detail_json()
    del data["annos_segmentation"]
    (file_server.root / "trainval_merged.json").write_text(json.dumps(data))
    override_spec("pascal_context", {"VOCtrainval_03-May-2010.tar": None, "trainval_merged.json": None})
    raw, prepared = tmp_path / "raw", tmp_path / "prepared"
    fetch_dataset("pascal_context", raw, mirror=file_server.url, progress=False)
    with pytest.raises(CorruptArchiveError, match="annos_segmentation.*trainval_merged.json"):
        prepare_dataset("pascal_context", raw, prepared)
    assert list(prepared.iterdir()) == []


def test_bad_classes_option(tmp_path, context_served):
    raw = tmp_path / "raw"
    fetch_dataset("pascal_context", raw, mirror=context_served.url, progress=False)
    with pytest.raises(Exception, match="must be 60 or 59"):
        prepare_dataset("pascal_context", raw, tmp_path / "prepared", classes=21)
