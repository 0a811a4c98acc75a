"""NYUDv2: an h5py-written MATLAB v7.3-like labeled .mat (reversed axes), scipy-written splits and mapping."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from pipelines.datasets import CorruptArchiveError, DatasetError, list_split, load_meta, read_label
from pipelines.datasets.nyudv2 import CLASSES
from pipelines.fetch import fetch_dataset
from pipelines.prepare import prepare_dataset

B = 255
H, W = 4, 6
# Raw 894-class ids per frame, as (H, W) arrays the way MATLAB shows them.
RAW = [
    np.array([[0, 1, 1, 2, 2, 894], [0, 1, 1, 2, 2, 894], [3, 3, 100, 100, 0, 0], [5, 5, 5, 5, 5, 5]]),
    np.array([[1] * 6, [2] * 6, [894] * 6, [0] * 6]),
    np.array([[100, 0, 1, 2, 3, 894]] * 4),
]
# mapClass: raw 1 -> 5, raw 2 -> 12, raw 3 -> 0 (unmapped), raw 894 -> 1, every other raw id -> 40.
# Expected training ids (k -> k-1; 0 and unmapped -> 255), written by hand:
EXPECTED = {
    "000001": [[B, 4, 4, 11, 11, 0], [B, 4, 4, 11, 11, 0], [B, B, 39, 39, B, B], [39] * 6],
    "000002": [[4] * 6, [11] * 6, [0] * 6, [B] * 6],
    "000003": [[39, B, 4, 11, B, 0]] * 4,
}
MATLAB_HEADER = (
    b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
)


def frames() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (len(RAW), H, W, 3), dtype=np.uint8)


def write_v73(path, datasets: dict[str, np.ndarray]) -> None:
    """An HDF5 file with MATLAB's 512-byte user block and header, as MATLAB v7.3 writes it."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, array in datasets.items():
            f.create_dataset(name, data=array)
    with open(path, "r+b") as f:
        f.write(MATLAB_HEADER.ljust(116) + b"\x00" * 8 + b"\x00\x02" + b"IM")


def build_nyu(root, *, drop=None):
    images = frames()
    labels = np.stack(RAW).astype(np.uint16)
    datasets = {
        "images": images.transpose(0, 3, 2, 1),  # h5py sees (N, 3, W, H)
        "labels": labels.transpose(0, 2, 1),  # (N, W, H)
        "depths": np.zeros((len(RAW), W, H), dtype=np.float32),
    }
    datasets.pop(drop, None)
    write_v73(root / "nyu_depth_v2_labeled.mat", datasets)
    map_class = np.full((1, 894), 40.0)
    map_class[0, [0, 1, 2, 893]] = [5, 12, 0, 1]
    scipy.io.savemat(
        root / "classMapping40.mat",
        {"mapClass": map_class, "className": np.array(CLASSES, dtype=object).reshape(1, -1)},
    )
    splits = {
        "trainNdxs": np.array([[1], [3]], dtype=np.float64),
        "testNdxs": np.array([[2]], dtype=np.float64),
    }
    splits.pop(drop, None)
    scipy.io.savemat(root / "splits.mat", splits)
    return images


def fetch(tmp_path, server):
    raw = tmp_path / "raw"
    fetch_dataset("nyudv2", raw, mirror=server.url, progress=False)
    return raw


def test_prepare_pixel_by_pixel_with_transposed_axes(tmp_path, file_server):
    images = build_nyu(file_server.root)
    root = prepare_dataset("nyudv2", fetch(tmp_path, file_server), tmp_path / "prepared")
    meta = load_meta(root)
    assert meta["splits"] == {"train": 2, "val": 1}
    assert len(meta["classes"]) == 40 and meta["classes"][0] == "wall" and meta["classes"][39] == "otherprop"
    assert meta["options"] == {"crop_border": False}
    assert [s.image_id for s in list_split(root, "train")] == ["000001", "000003"]
    for split in ("train", "val"):
        for sample in list_split(root, split):
            np.testing.assert_array_equal(read_label(sample.label), np.array(EXPECTED[sample.image_id]))
            with Image.open(sample.image) as im:
                np.testing.assert_array_equal(np.array(im), images[int(sample.image_id) - 1])  # (H, W, 3)


def test_crop_border_cuts_images_and_labels_alike(tmp_path, file_server):
    images = build_nyu(file_server.root)
    raw = fetch(tmp_path, file_server)
    root = prepare_dataset("nyudv2", raw, tmp_path / "prepared", crop_border=[1, 0, 2, 1])
    sample = list_split(root, "val")[0]
    np.testing.assert_array_equal(read_label(sample.label), np.array(EXPECTED["000002"])[1:, 2:5])
    with Image.open(sample.image) as im:
        np.testing.assert_array_equal(np.array(im), images[1][1:, 2:5])
    with pytest.raises(DatasetError, match="leaves nothing"):  # the 480x640 border on 4x6 frames
        prepare_dataset("nyudv2", raw, tmp_path / "prepared", crop_border=True)


@pytest.mark.parametrize(
    ("drop", "pattern"),
    [
        ("labels", r"nyu_depth_v2_labeled\.mat has no dataset 'labels'.*horatio"),
        ("testNdxs", r"splits\.mat has no field 'testNdxs'.*indoor_seg_sup/splits\.mat"),
    ],
)
def test_missing_field_names_the_field_and_the_source_file(tmp_path, file_server, drop, pattern):
    build_nyu(file_server.root, drop=drop)
    prepared = tmp_path / "prepared"
    with pytest.raises(CorruptArchiveError, match=pattern):
        prepare_dataset("nyudv2", fetch(tmp_path, file_server), prepared)
    assert list(prepared.iterdir()) == []  # nothing half-written
