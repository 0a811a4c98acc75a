"""The prepared layout: the writer is atomic and strict, the reader checks what it reads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.datasets import LayoutError, list_split, load_meta, read_label
from pipelines.datasets.layout import LayoutWriter

CLASSES, PALETTE = ["a", "b", "c"], [[0, 0, 0], [255, 0, 0], [0, 255, 0]]


def _writer(target):
    return LayoutWriter(target, name="toy", classes=CLASSES, palette=PALETTE)


def _example(value=1, shape=(4, 5)):
    label = np.full(shape, value, dtype=np.uint8)
    label[0, 0] = 255
    return np.zeros((*shape, 3), dtype=np.uint8), label


def test_commit_writes_the_contract_and_the_reader_reads_it(tmp_path):
    with _writer(tmp_path / "toy") as writer:
        image, label = _example()
        writer.add("train", "x1", image=image, label=label)
        writer.add("train", "x0", image=image, label=label)
        writer.add("val", "y0", image=image, label=label)
        writer.commit(sources={"a.zip": "ab" * 32}, converter_version=3, options={"k": 1})
    meta = load_meta(tmp_path / "toy")
    assert meta == {
        "name": "toy",
        "classes": CLASSES,
        "palette": PALETTE,
        "ignore_index": 255,
        "splits": {"train": 2, "val": 1},
        "sources": {"a.zip": "ab" * 32},
        "converter_version": 3,
        "options": {"k": 1},
    }
    samples = list_split(tmp_path / "toy", "train")
    assert [s.image_id for s in samples] == ["x0", "x1"]
    assert samples[0].image == tmp_path / "toy" / "images" / "train" / "x0.png"
    np.testing.assert_array_equal(read_label(samples[0].label), label)
    assert [p.name for p in tmp_path.iterdir()] == ["toy"]  # no temporary folder left
    with pytest.raises(LayoutError, match="valid splits: \\['train', 'val'\\]"):
        list_split(tmp_path / "toy", "test")


def test_failure_inside_the_writer_leaves_the_old_version_untouched(tmp_path):
    with _writer(tmp_path / "toy") as writer:
        writer.add("train", "old", image=_example()[0], label=_example()[1])
        writer.commit(sources={}, converter_version=1)
    with pytest.raises(RuntimeError), _writer(tmp_path / "toy") as writer:
        writer.add("train", "new", image=_example()[0], label=_example()[1])
        raise RuntimeError("converter crashed")
    assert [s.image_id for s in list_split(tmp_path / "toy", "train")] == ["old"]
    assert [p.name for p in tmp_path.iterdir()] == ["toy"]
    # A successful second run replaces the old version.
    with _writer(tmp_path / "toy") as writer:
        writer.add("train", "new", image=_example()[0], label=_example()[1])
        writer.commit(sources={}, converter_version=1)
    assert [s.image_id for s in list_split(tmp_path / "toy", "train")] == ["new"]


@pytest.mark.parametrize(
    "label, image, problem",
    [
        (np.full((4, 5), 3, np.uint8), None, "neither a class id"),
        (np.zeros((4, 5), np.int64), None, "uint8"),
        (np.zeros((4, 6), np.uint8), None, "image is 5x4 but label is 6x4"),
    ],
)
def test_bad_examples_are_refused(tmp_path, label, image, problem):
    with _writer(tmp_path / "toy") as writer, pytest.raises(LayoutError, match=problem):
        writer.add("train", "x", image=_example()[0] if image is None else image, label=label)


def test_duplicate_ids_empty_output_and_bad_palette(tmp_path):
    with _writer(tmp_path / "toy") as writer:
        writer.add("train", "x", image=_example()[0], label=_example()[1])
        with pytest.raises(LayoutError, match="duplicate"):
            writer.add("train", "x", image=_example()[0], label=_example()[1])
    with _writer(tmp_path / "toy") as writer, pytest.raises(LayoutError, match="no examples"):
        writer.commit(sources={}, converter_version=1)
    with pytest.raises(LayoutError, match="palette"):
        LayoutWriter(tmp_path / "t", name="t", classes=["a"], palette=[[0, 0, 0], [1, 1, 1]])


def test_reader_errors_name_the_fix(tmp_path):
    with pytest.raises(LayoutError, match="python -m pipelines.prepare toy"):
        load_meta(tmp_path / "toy")
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "meta.json").write_text(json.dumps({"name": "toy"}))
    with pytest.raises(LayoutError, match="lacks keys"):
        load_meta(tmp_path / "toy")
