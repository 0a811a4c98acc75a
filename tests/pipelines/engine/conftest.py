"""Fixtures of the engine tests: a tiny prepared dataset written here and tiny registered models."""

from __future__ import annotations

import functools
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from refinenet import registry

# Class colours of the fixture dataset: the label of a pixel is a function of its colour.
COLOURS = np.array([[0, 0, 220], [230, 0, 0], [0, 210, 0]], dtype=np.uint8)
IGNORE_COLOUR = np.array([255, 255, 255], dtype=np.uint8)
CLASSES = ["background", "box", "disc"]


def make_sample(rng: np.random.Generator, h: int = 40, w: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A blue background with a red box and a green disc; a 1-px white ring (label 255) around the disc."""
    label = np.zeros((h, w), np.uint8)
    y0, x0 = rng.integers(0, h - 12), rng.integers(0, w - 12)
    bh, bw = rng.integers(8, 16), rng.integers(8, 20)
    label[y0 : y0 + bh, x0 : x0 + bw] = 1
    cy, cx, r = rng.integers(8, h - 8), rng.integers(8, w - 8), rng.integers(4, 8)
    yy, xx = np.mgrid[:h, :w]
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    label[(d2 <= (r + 1) ** 2) & (d2 > r**2)] = 255
    label[d2 <= r**2] = 2
    image = np.where(label[..., None] == 255, IGNORE_COLOUR, COLOURS[np.minimum(label, 2)])
    return image.astype(np.uint8), label


def write_prepared(root: Path, n_train: int = 12, n_val: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image, label = make_sample(rng)
            Image.fromarray(image).save(root / "images" / split / f"{split}_{i:03d}.png")
            Image.fromarray(label, mode="L").save(root / "labels" / split / f"{split}_{i:03d}.png")
    meta = {
        "name": root.name,
        "classes": CLASSES,
        "palette": COLOURS.tolist(),
        "ignore_index": 255,
        "splits": {"train": n_train, "val": n_val},
        "sources": {},
        "converter_version": 1,
    }
    (root / "meta.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared dataset: 12 train and 4 val 48x40 images (read-only for tests)."""
    return write_prepared(tmp_path_factory.mktemp("prepared") / "shapes")


class TinyNet(nn.Module):
    """conv3x3-BN-ReLU backbone and a 1x1 head: enough to learn colour -> class."""

    def __init__(self, num_classes: int, width: int = 8, nan_after: int | None = None) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Conv2d(width, num_classes, 1)
        self.nan_after = nan_after
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.backbone(x))
        if self.training:
            self.calls += 1
            if self.nan_after is not None and self.calls > self.nan_after:
                out = out * float("nan")
        return out


def tiny_test_net(num_classes: int, width: int = 8, nan_after: int | None = None) -> nn.Module:
    return TinyNet(num_classes, width, nan_after)


def tiny_test_net_b(num_classes: int, width: int = 8) -> nn.Module:
    return TinyNet(num_classes, width)


@functools.cache
def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:  # a model module other helpers are still writing
        return False
    return True


@pytest.fixture(autouse=True)
def _test_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the tiny test models for the engine tests only (other tests see the real registry).

    Also lets `build_model` work while some builder modules of the registry do not exist yet.
    """
    monkeypatch.setitem(registry._REGISTRY, "tiny_test_net", tiny_test_net)
    monkeypatch.setitem(registry._REGISTRY, "tiny_test_net_b", tiny_test_net_b)
    monkeypatch.setattr(
        registry, "_BUILDER_MODULES", tuple(m for m in registry._BUILDER_MODULES if _importable(m))
    )
