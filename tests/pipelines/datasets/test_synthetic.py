"""The embedded synthetic dataset: deterministic, and fine structures that a stride-32 output loses."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import ndimage

from pipelines.datasets import DatasetError, list_split, load_meta, read_label
from pipelines.datasets.synthetic import BLOB, BOX, CLASSES, DOT, FIELD, POLE, WIRE, generate_example
from pipelines.fetch import fetch_dataset
from pipelines.prepare import prepare_dataset

SMALL = {"n_train": 6, "n_val": 3, "size": 64}


def _hashes(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.*")}


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    fetch_dataset("synthetic", tmp_path / "raw", progress=False)
    assert (tmp_path / "raw" / "synthetic" / "generator.json").is_file()
    a = prepare_dataset("synthetic", tmp_path / "raw", tmp_path / "a", seed=7, **SMALL)
    b = prepare_dataset("synthetic", tmp_path / "raw", tmp_path / "b", seed=7, **SMALL)
    c = prepare_dataset("synthetic", tmp_path / "raw", tmp_path / "c", seed=8, **SMALL)
    hashes_a, hashes_b, hashes_c = _hashes(a), _hashes(b), _hashes(c)
    assert len(hashes_a) == 1 + 2 * (6 + 3)
    assert hashes_a == hashes_b
    images = [k for k in hashes_a if k.startswith("images/")]
    assert all(hashes_a[k] != hashes_c[k] for k in images)
    meta = load_meta(a)
    assert meta["classes"] == list(CLASSES) and len(meta["palette"]) == len(CLASSES)
    assert meta["splits"] == {"train": 6, "val": 3} and meta["sources"] == {}
    assert meta["options"] == {"seed": 7, **SMALL}


def test_examples_do_not_depend_on_split_sizes(tmp_path):
    a = prepare_dataset("synthetic", tmp_path, tmp_path / "a", n_train=2, n_val=1, size=48)
    b = prepare_dataset("synthetic", tmp_path, tmp_path / "b", n_train=3, n_val=1, size=48)
    for sample in list_split(a, "train"):
        assert sample.image.read_bytes() == (b / "images" / "train" / sample.image.name).read_bytes()


def test_fine_structures_are_lost_by_an_output_stride_32_oracle():
    """Down-sampling the label to stride 32 (the coarsest RefineNet input, [P] section 3) and back
    loses the thin and small classes that a stride-4 version keeps."""
    n, size = 12, 96
    labels = np.stack([generate_example(0, "train", i, size)[1] for i in range(n)])
    present = np.unique(labels)
    assert set(range(len(CLASSES))) <= set(present.tolist()) and 255 in present

    def oracle_iou(stride):
        coarse = labels[:, stride // 2 :: stride, stride // 2 :: stride]
        up = np.repeat(np.repeat(coarse, stride, axis=1), stride, axis=2)
        valid = labels != 255
        return {
            c: ((up == c) & (labels == c) & valid).sum() / max((((up == c) | (labels == c)) & valid).sum(), 1)
            for c in (WIRE, POLE, DOT)
        }

    fine, coarse = oracle_iou(4), oracle_iou(32)
    for c in (WIRE, POLE, DOT):
        assert coarse[c] < 0.15 and fine[c] - coarse[c] > 0.2, (CLASSES[c], fine[c], coarse[c])


def test_wires_and_poles_are_thin():
    for i in range(8):
        label = generate_example(3, "val", i)[1]
        for c in (WIRE, POLE):
            # No pixel of a thin class has a full 5x5 neighbourhood of that class (lines are <= 3 px).
            eroded = ndimage.binary_erosion(label == c, structure=np.ones((5, 5)))
            assert not eroded.any(), CLASSES[c]


def test_colour_alone_does_not_decide_the_class():
    examples = [generate_example(1, "train", i) for i in range(10)]
    images = np.concatenate([im.reshape(-1, 3) for im, _ in examples]).astype(float)
    labels = np.concatenate([lab.ravel() for _, lab in examples])
    mean = {c: images[labels == c].mean(0) for c in range(len(CLASSES))}
    # Pairs with the same colour distribution: they differ in shape, size and texture only.
    for a, b in ((WIRE, POLE), (DOT, BLOB), (FIELD, BOX)):
        assert np.abs(mean[a] - mean[b]).max() < 20, (CLASSES[a], CLASSES[b])


def test_bad_options_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="n_train=0 must be an integer >= 1"):
        prepare_dataset("synthetic", tmp_path, tmp_path / "p", n_train=0)
    with pytest.raises(DatasetError, match="unknown prepare option.*valid options: seed"):
        prepare_dataset("synthetic", tmp_path, tmp_path / "p", sede=1)
    assert not (tmp_path / "p" / "synthetic").exists()
    assert read_label  # re-exported for the engine
