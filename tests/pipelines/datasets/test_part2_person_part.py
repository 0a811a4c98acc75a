"""PASCAL-Person-Part from DeepLab's PNG release and from raw Pascal-Part .mat structs (scipy-written)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.io
from dataset_archives import png_bytes, write_tar, write_zip
from test_part2_pascal_context import build_voc2010

from pipelines.datasets import CorruptArchiveError, list_split, load_meta, read_label
from pipelines.datasets.person_part import PART_GROUPS
from pipelines.fetch import fetch_dataset
from pipelines.prepare import prepare_dataset

B = 255
SIZES = {"2008_000003": (4, 3), "2008_000008": (4, 3), "2008_000010": (2, 2)}  # id -> (width, height)

# PNG release: class ids 0..6; 7 is not a class and becomes ignore.
PNG_GT = {
    "2008_000003": [[0, 1, 1, 0], [2, 2, 3, 4], [5, 6, 7, 255]],
    "2008_000008": [[0, 0, 0, 0], [0, 6, 6, 0], [0, 0, 0, 0]],
}
EXPECTED_PNG = {
    "2008_000003": [[0, 1, 1, 0], [2, 2, 3, 4], [5, 6, B, B]],
    "2008_000008": PNG_GT["2008_000008"],
}
# Raw parts merged into the six person parts; person pixels outside every part are ignored.
EXPECTED_MAT = {
    "2008_000003": [[1, 2, B, 0], [3, 4, B, 0], [5, 6, B, 0]],
    "2008_000008": [[1, B, 0, 0], [0, 0, 0, 0], [0, 0, 0, B]],
}


def mask(shape, *pixels):
    m = np.zeros(shape, dtype=np.uint8)
    for r, c in pixels:
        m[r, c] = 1
    return m


def struct_array(dtype_names, rows):
    """A 1xN MATLAB struct array (numpy record array of objects) for scipy.io.savemat."""
    array = np.zeros((1, len(rows)), dtype=[(n, "O") for n in dtype_names])
    for i, row in enumerate(rows):
        for name, value in zip(dtype_names, row, strict=True):
            array[0, i][name] = value
    return array


def part_mat(image_id, objects) -> bytes:
    """Annotations_Part/<id>.mat: anno.imname, anno.objects(class, class_ind, mask, parts(part_name, mask))"""
    rows = []
    for cls, ind, obj_mask, parts in objects:
        parts_array = struct_array(("part_name", "mask"), parts) if parts else np.zeros((0, 0))
        rows.append((cls, np.array([[ind]], dtype=np.uint8), obj_mask, parts_array))
    anno = {"imname": image_id, "objects": struct_array(("class", "class_ind", "mask", "parts"), rows)}
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"anno": anno})
    return buffer.getvalue()


def build_parts(root):
    s = (3, 4)
    mats = {
        "2008_000003": part_mat("2008_000003", [
            ("dog", 12, mask(s, (0, 3)), []),
            ("person", 15, mask(s, *[(r, c) for r in range(3) for c in range(3)]), [
                ("hair", mask(s, (0, 0))), ("neck", mask(s, (0, 1))), ("ruarm", mask(s, (1, 0))),
                ("lhand", mask(s, (1, 1))), ("ruleg", mask(s, (2, 0))), ("rfoot", mask(s, (2, 1))),
            ]),
        ]),
        "2008_000008": part_mat("2008_000008", [
            ("person", 15, mask(s, (0, 0), (0, 1)), [("head", mask(s, (0, 0)))]),
            ("person", 15, mask(s, (2, 3)), []),  # a person without part masks: ignored pixels
        ]),
        "2008_000010": part_mat("2008_000010", [("cat", 8, mask((2, 2), (0, 0)), [])]),  # no person: left out
    }  # fmt: skip
    write_tar(root / "trainval.tar.gz", {f"Annotations_Part/{k}.mat": v for k, v in mats.items()}, "w:gz")


def build_png_release(root):
    base = "pascal_person_part"
    files = {f"{base}/pascal_person_part_gt/{k}.png": png_bytes(np.array(v)) for k, v in PNG_GT.items()}
    files[f"{base}/pascal_person_part_trainval_list/train_id.txt"] = b"2008_000003\n"
    files[f"{base}/pascal_person_part_trainval_list/val_id.txt"] = b"2008_000008\n"
    write_zip(root / "pascal_person_part.zip", files)


@pytest.fixture
def person_served(file_server, override_spec):
    build_voc2010(
        file_server.root,
        [(f"{k}.jpg", w, h) for k, (w, h) in SIZES.items()],
        extra={
            "VOCdevkit/VOC2010/ImageSets/Main/train.txt": b"2008_000003\n2008_000010\n",
            "VOCdevkit/VOC2010/ImageSets/Main/val.txt": b"2008_000008\n",
        },
    )
    build_png_release(file_server.root)
    build_parts(file_server.root)
    override_spec("person_part", {"VOCtrainval_03-May-2010.tar": None})  # checksums recorded in the lock
    return file_server


def test_part_grouping_covers_the_pascal_part_person_parts():
    assert sorted(k for k, v in PART_GROUPS.items() if v == 1) == sorted(
        ["head", "hair", "leye", "reye", "lear", "rear", "lebrow", "rebrow", "nose", "mouth"]
    )
    assert {k: v for k, v in PART_GROUPS.items() if v > 1} == {
        "torso": 2, "neck": 2, "luarm": 3, "ruarm": 3, "llarm": 4, "rlarm": 4, "lhand": 4, "rhand": 4,
        "luleg": 5, "ruleg": 5, "llleg": 6, "rlleg": 6, "lfoot": 6, "rfoot": 6,
    }  # fmt: skip


@pytest.mark.parametrize(("source", "expected"), [("png", EXPECTED_PNG), ("mat", EXPECTED_MAT)])
def test_either_source_prepares_pixel_by_pixel(tmp_path, person_served, source, expected):
    raw = tmp_path / "raw"
    fetch_dataset("person_part", raw, mirror=person_served.url, progress=False)
    root = prepare_dataset("person_part", raw, tmp_path / "prepared", source=source)
    meta = load_meta(root)
    assert meta["splits"] == {"train": 1, "val": 1}
    assert meta["options"] == {"source": source}
    assert meta["classes"][3] == "upper arms" and len(meta["classes"]) == 7
    seen = set()
    for split in ("train", "val"):
        for sample in list_split(root, split):
            seen.add(sample.image_id)
            np.testing.assert_array_equal(read_label(sample.label), np.array(expected[sample.image_id]))
    assert seen == {"2008_000003", "2008_000008"}


def test_missing_objects_field_names_the_field_and_the_source(tmp_path, file_server, override_spec):
    build_voc2010(
        file_server.root,
        [("2008_000003.jpg", 4, 3)],
        extra={"VOCdevkit/VOC2010/ImageSets/Main/train.txt": b"2008_000003\n"},
    )
    build_png_release(file_server.root)
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"anno": {"imname": "2008_000003"}})  # no objects field
    write_tar(file_server.root / "trainval.tar.gz", {"Annotations_Part/2008_000003.mat": buffer.getvalue()})
    override_spec("person_part", {"VOCtrainval_03-May-2010.tar": None})
    raw = tmp_path / "raw"
    fetch_dataset("person_part", raw, mirror=file_server.url, progress=False)
    with pytest.raises(CorruptArchiveError, match=r"'objects'.*trainval\.tar\.gz"):
        prepare_dataset("person_part", raw, tmp_path / "prepared", source="mat")
    with pytest.raises(Exception, match="must be 'png' or 'mat'"):
        prepare_dataset("person_part", raw, tmp_path / "prepared", source="json")
