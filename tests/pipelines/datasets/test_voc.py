"""VOC 2012 + SBD: miniature archives served over HTTP, fetched through a mirror, prepared, checked."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import sha256_file
from dataset_archives import VOC_EXPECTED, build_voc
from PIL import Image

from pipelines.datasets import list_split, load_meta, read_label
from pipelines.datasets.layout import voc_palette
from pipelines.datasets.registry import get_spec
from pipelines.datasets.voc import read_sbd_label
from pipelines.fetch import fetch_dataset
from pipelines.prepare import prepare_dataset


def test_registry_keeps_the_official_urls_and_checksums():
    archives = {a.filename: a for a in get_spec("voc2012").archives}
    voc, sbd = archives["VOCtrainval_11-May-2012.tar"], archives["benchmark.tgz"]
    assert voc.url == "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
    assert voc.checksum == "md5:6cd6e144f989b92b3379bac3b3de84fd"
    assert sbd.url.endswith("/semantic_contours/benchmark.tgz")
    assert sbd.checksum == "md5:82b4d87ceb2ed10f6038a1cba92111cb"
    assert get_spec("voc2012").expected_splits == {"train": 10582, "val": 1449}


def test_voc_palette_matches_the_devkit_colours():
    palette = voc_palette(21)
    assert palette[0] == [0, 0, 0] and palette[1] == [128, 0, 0] and palette[15] == [192, 128, 128]
    assert palette[20] == [0, 64, 128]


def test_sbd_label_read_from_gtcls_segmentation(tmp_path):
    from dataset_archives import mat_bytes

    expected = np.array([[0, 1, 2], [15, 20, 0]], dtype=np.uint8)
    (tmp_path / "x.mat").write_bytes(mat_bytes(expected))
    np.testing.assert_array_equal(read_sbd_label(tmp_path / "x.mat"), expected)


@pytest.fixture
def voc_served(file_server, override_spec):
    images = build_voc(file_server.root)
    override_spec(
        "voc2012",
        {
            "VOCtrainval_11-May-2012.tar": "sha256:"
            + sha256_file(file_server.root / "VOCtrainval_11-May-2012.tar"),
            "benchmark.tgz": "sha256:" + sha256_file(file_server.root / "benchmark.tgz"),
        },
    )
    return file_server, images


def test_fetch_and_prepare_train_aug(tmp_path, voc_served):
    server, images = voc_served
    raw, prepared = tmp_path / "data" / "raw", tmp_path / "data" / "prepared"
    paths = fetch_dataset("voc2012", raw, mirror=server.url, progress=False, backoff=0.01)
    assert [p.name for p in paths] == ["VOCtrainval_11-May-2012.tar", "benchmark.tgz"]
    root = prepare_dataset("voc2012", raw, prepared)

    meta = load_meta(root)
    assert meta["splits"] == {"train": 4, "val": 1}
    assert (
        meta["classes"][0] == "background"
        and meta["classes"][20] == "tvmonitor"
        and len(meta["classes"]) == 21
    )
    assert meta["ignore_index"] == 255 and meta["palette"] == voc_palette(21)
    assert meta["sources"] == {p.name: sha256_file(p) for p in paths}
    assert meta["options"] == {"train_split": "train_aug"}
    for split, expected in VOC_EXPECTED.items():
        samples = list_split(root, split)
        assert [s.image_id for s in samples] == sorted(expected)
        for sample in samples:
            label = read_label(sample.label)
            with Image.open(sample.label) as im:
                assert im.mode == "L"
            np.testing.assert_array_equal(label, np.array(expected[sample.image_id], dtype=np.uint8))
            assert sample.image.suffix == ".jpg"
            assert sample.image.read_bytes() == images[sample.image_id]  # copied as is
    # Nothing but the prepared folder is left in data/prepared (no temporary folders).
    assert [p.name for p in prepared.iterdir()] == ["voc2012"]


def test_prepare_voc_only_train_split(tmp_path, voc_served):
    server, _ = voc_served
    raw = tmp_path / "raw"
    fetch_dataset("voc2012", raw, mirror=server.url, progress=False)
    root = prepare_dataset("voc2012", raw, tmp_path / "prepared", train_split="train")
    assert load_meta(root)["splits"] == {"train": 2, "val": 1}


def test_fetch_reuses_verified_archives_without_network(tmp_path, voc_served):
    server, _ = voc_served
    raw = tmp_path / "raw"
    fetch_dataset("voc2012", raw, mirror=server.url, progress=False)
    n = len(server.requests)
    fetch_dataset("voc2012", raw, mirror=server.url, progress=False)
    assert len(server.requests) == n
    # A local mirror folder (e.g. shared storage on a cluster) works too.
    shutil.rmtree(raw)
    fetch_dataset("voc2012", raw, mirror=str(server.root), progress=False)
    assert len(server.requests) == n and (raw / "voc2012" / "benchmark.tgz").is_file()
