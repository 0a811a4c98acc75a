"""SUN-RGBD: SUNRGBD.zip images, a toolbox zip with an h5py-written SUNRGBD2Dseg.mat (object references),
a scipy-written SUNRGBDMeta.mat struct array and allsplit.mat."""

from __future__ import annotations

import io

import h5py
import numpy as np
import pytest
import scipy.io
from conftest import sha256_file
from dataset_archives import jpeg_bytes, write_zip

from pipelines.datasets import CorruptArchiveError, list_split, load_meta, read_label
from pipelines.datasets.sunrgbd import iter_labels, relative_path
from pipelines.fetch import fetch_dataset
from pipelines.prepare import prepare_dataset

B = 255
ROOT = "/n/fs/sun3d/data/"
SCENES = [  # (scene folder, image name, (H, W)) in SUNRGBDMeta order
    ("SUNRGBD/kv1/NYUdata/NYU0001", "NYU0001.jpg", (3, 5)),
    ("SUNRGBD/kv2/kinect2data/000002_2014-05-26_14-23-37_rgbf000103-resize", "0000103.jpg", (2, 4)),
    ("SUNRGBD/realsense/lg/2014_10_24-11_00_00-1311000073", "0000001.jpg", (3, 3)),
    ("SUNRGBD/xtion/sun3ddata/mit_lab_16/lab_16_nov_2_2012_scan1_erika/0001", "0000002.jpg", (2, 2)),
]
RAW = [  # raw 37-class labels (H, W): 0 void, 1..37; 40 is out of range
    np.array([[0, 1, 2, 3, 37], [37, 36, 0, 0, 1], [5, 5, 5, 40, 0]]),
    np.array([[1, 1, 0, 0], [2, 2, 37, 37]]),
    np.array([[0, 0, 0], [10, 20, 30], [0, 0, 0]]),
    np.array([[1, 1], [1, 1]]),
]
EXPECTED = {
    "00001": [[B, 0, 1, 2, 36], [36, 35, B, B, 0], [4, 4, 4, B, B]],
    "00002": [[0, 0, B, B], [1, 1, 36, 36]],
    "00003": [[B, B, B], [9, 19, 29], [B, B, B]],
}
SPLIT = {"alltrain": [0, 2], "alltest": [1]}  # scene 4 is in neither list: left out


def seg_mat(path, labels, *, field="seglabel") -> None:
    """SUNRGBD2Dseg.mat: group SUNRGBD2Dseg with an (N, 1) dataset of references to (W, H) arrays."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        group = f.create_group("SUNRGBD2Dseg")
        for name in (field, "seglabelall"):
            references = []
            for i, label in enumerate(labels):
                references.append(refs.create_dataset(f"{name}{i}", data=label.T.astype(np.uint16)).ref)
            group.create_dataset(name, data=np.array(references, dtype=h5py.ref_dtype).reshape(-1, 1))


def meta_mat() -> bytes:
    meta = np.zeros((1, len(SCENES)), dtype=[(n, "O") for n in ("sequenceName", "rgbpath", "rgbname")])
    for i, (scene, name, _) in enumerate(SCENES):
        meta[0, i]["sequenceName"] = scene
        meta[0, i]["rgbpath"] = f"{ROOT}{scene}/image/{name}"
        meta[0, i]["rgbname"] = name
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"SUNRGBDMeta": meta})
    return buffer.getvalue()


def split_mat() -> bytes:
    buffer = io.BytesIO()
    cells = {
        key: np.array(
            [f"{ROOT}{SCENES[i][0]}" + ("/" if key == "alltest" else "") for i in idx], dtype=object
        )
        for key, idx in SPLIT.items()
    }
    scipy.io.savemat(buffer, {k: v.reshape(1, -1) for k, v in cells.items()})
    return buffer.getvalue()


def build_sun(root, tmp_path, *, field="seglabel"):
    write_zip(
        root / "SUNRGBD.zip",
        {f"{scene}/image/{name}": jpeg_bytes(i, w, h) for i, (scene, name, (h, w)) in enumerate(SCENES)},
    )
    seg = tmp_path / "SUNRGBD2Dseg.mat"
    seg_mat(seg, RAW, field=field)
    write_zip(
        root / "SUNRGBDtoolbox.zip",
        {
            "SUNRGBDtoolbox/Metadata/SUNRGBD2Dseg.mat": seg.read_bytes(),
            "SUNRGBDtoolbox/Metadata/SUNRGBDMeta.mat": meta_mat(),
            "SUNRGBDtoolbox/traintestSUNRGBD/allsplit.mat": split_mat(),
        },
    )


@pytest.fixture
def sun_served(file_server, override_spec, tmp_path):
    build_sun(file_server.root, tmp_path)
    override_spec(
        "sunrgbd", {"SUNRGBDtoolbox.zip": "sha256:" + sha256_file(file_server.root / "SUNRGBDtoolbox.zip")}
    )
    return file_server


def test_relative_paths_match_meta_and_split_spellings():
    assert relative_path("/n/fs/sun3d/data/SUNRGBD/kv1/NYUdata/NYU0001/") == "SUNRGBD/kv1/NYUdata/NYU0001"
    assert relative_path("SUNRGBD/kv1/b") == "SUNRGBD/kv1/b"


def test_labels_are_read_one_at_a_time_and_transposed_back(tmp_path):
    seg_mat(tmp_path / "seg.mat", RAW)
    labels = iter_labels(tmp_path / "seg.mat")
    first = next(labels)  # a generator: nothing but the first label has been read
    np.testing.assert_array_equal(first, RAW[0])
    assert [label.shape for label in labels] == [r.shape for r in RAW[1:]]


def test_fetch_and_prepare_pixel_by_pixel(tmp_path, sun_served):
    raw = tmp_path / "raw"
    fetch_dataset("sunrgbd", raw, mirror=sun_served.url, progress=False)
    root = prepare_dataset("sunrgbd", raw, tmp_path / "prepared")
    meta = load_meta(root)
    assert meta["splits"] == {"train": 2, "val": 1}
    assert len(meta["classes"]) == 37 and meta["classes"][36] == "bag"
    assert [s.image_id for s in list_split(root, "train")] == ["00001", "00003"]
    assert [s.image_id for s in list_split(root, "val")] == ["00002"]
    for split in ("train", "val"):
        for sample in list_split(root, split):
            np.testing.assert_array_equal(read_label(sample.label), np.array(EXPECTED[sample.image_id]))
            index = int(sample.image_id) - 1
            h, w = SCENES[index][2]
            assert sample.image.read_bytes() == jpeg_bytes(index, w, h)


def test_missing_seglabel_names_the_field_and_the_toolbox(tmp_path, file_server, override_spec):
    build_sun(file_server.root, tmp_path, field="seglabel_other")
    override_spec("sunrgbd", {"SUNRGBDtoolbox.zip": None})
    raw = tmp_path / "raw"
    fetch_dataset("sunrgbd", raw, mirror=file_server.url, progress=False)
    with pytest.raises(CorruptArchiveError, match=r"SUNRGBD2Dseg\.seglabel.*SUNRGBDtoolbox\.zip"):
        prepare_dataset("sunrgbd", raw, tmp_path / "prepared")
