"""ADE20K: a miniature ADEChallengeData2016.zip served over HTTP, fetched, prepared, checked per pixel."""

from __future__ import annotations

import numpy as np
from conftest import sha256_file
from dataset_archives import ADE_EXPECTED, build_ade20k

from pipelines.datasets import list_split, load_meta, read_label
from pipelines.datasets.ade20k import LUT
from pipelines.datasets.registry import get_spec
from pipelines.fetch import fetch_dataset
from pipelines.prepare import prepare_dataset


def test_registry_keeps_the_official_url_and_checksum():
    (archive,) = get_spec("ade20k").archives
    assert archive.url == "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"
    assert archive.checksum == "sha256:7ff1be44964418441f542a7cc1e1a650e7dc0fc275f5d23252bc9bbdbc977b29"
    spec = get_spec("ade20k")
    assert len(spec.classes) == 150 and spec.classes[0] == "wall" and spec.classes[149] == "flag"
    assert spec.expected_splits == {"train": 20210, "val": 2000}


def test_reduce_zero_label_lookup():
    assert LUT[0] == 255 and LUT[1] == 0 and LUT[150] == 149 and LUT[151] == 255 and LUT[255] == 255


def test_fetch_and_prepare(tmp_path, file_server, override_spec):
    images = build_ade20k(file_server.root)
    archive = file_server.root / "ADEChallengeData2016.zip"
    override_spec("ade20k", {archive.name: "sha256:" + sha256_file(archive)})
    raw = tmp_path / "data" / "raw"
    fetch_dataset("ade20k", raw, mirror=file_server.url + "/", progress=False)
    root = prepare_dataset("ade20k", raw, tmp_path / "data" / "prepared")

    meta = load_meta(root)
    assert meta["splits"] == {"train": 2, "val": 1}
    assert meta["sources"] == {archive.name: sha256_file(archive)}
    assert len(meta["classes"]) == 150 and len(meta["palette"]) == 150
    raw_split = {"train": "training", "val": "validation"}
    for split in ("train", "val"):
        for sample in list_split(root, split):
            expected = np.array(ADE_EXPECTED[(split, sample.image_id)], dtype=np.uint8)
            np.testing.assert_array_equal(read_label(sample.label), expected)
            assert sample.image.read_bytes() == images[(raw_split[split], sample.image_id)]
