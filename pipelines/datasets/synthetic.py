"""The embedded synthetic dataset: procedurally generated scenes, deterministic from a seed.

Built so that the paper's claim (section 1 and 3: fine detail is lost at output stride 32 and
recovered by multi-path refinement) can show on 2 CPU cores in minutes:
- large textured regions (`background`, `field`) beside medium objects (`blob`, `box`);
- thin structures, 1-3 px wide (`wire`, `pole`), and small objects (`dot`, 3-7 px);
- colour alone is not decisive: `wire`/`pole`, `blob`/`dot` and `field`/`box` share colour
  distributions (with per-image jitter and pixel noise) and differ in shape, size, orientation and
  texture, so the network must use spatial detail and context.
A one-pixel ring of ignore (255) surrounds each blob, as the VOC annotations do around objects.

Every example is drawn from its own `numpy.random.Generator` seeded with (seed, split, index), so
examples do not depend on the split sizes and two generations with the same seed are byte-identical.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipelines.datasets.errors import DatasetError
from pipelines.datasets.layout import IGNORE_INDEX, LayoutWriter
from pipelines.datasets.registry import DatasetSpec, register_dataset

GENERATOR_VERSION = 1
CLASSES = ("background", "field", "blob", "box", "pole", "wire", "dot")
PALETTE = (
    (0, 0, 0),
    (190, 150, 90),
    (220, 60, 60),
    (60, 120, 220),
    (250, 220, 0),
    (0, 230, 230),
    (230, 0, 230),
)
BACKGROUND, FIELD, BLOB, BOX, POLE, WIRE, DOT = range(len(CLASSES))
# Mean colours: pairs of classes share one, so that shape and texture must decide.
_COLOUR = {
    BACKGROUND: (110.0, 130.0, 100.0),
    FIELD: (150.0, 120.0, 80.0),
    BOX: (150.0, 120.0, 80.0),
    BLOB: (185.0, 75.0, 70.0),
    DOT: (185.0, 75.0, 70.0),
    POLE: (45.0, 45.0, 60.0),
    WIRE: (45.0, 45.0, 60.0),
}
_SPLITS = {"train": 0, "val": 1}


def _segment_distance(yy: np.ndarray, xx: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Distance of every pixel centre to the segment p0-p1 (points as (y, x))."""
    d = p1 - p0
    t = ((yy - p0[0]) * d[0] + (xx - p0[1]) * d[1]) / max(float(d @ d), 1e-9)
    t = np.clip(t, 0.0, 1.0)
    return np.hypot(yy - (p0[0] + t * d[0]), xx - (p0[1] + t * d[1]))


def generate_example(seed: int, split: str, index: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic example: an (size, size, 3) uint8 image and an (size, size) uint8 label."""
    rng = np.random.default_rng([seed, _SPLITS[split], index])
    s = size / 96.0  # object sizes scale with the image
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    label = np.full((size, size), BACKGROUND, dtype=np.uint8)
    image = np.zeros((size, size, 3), dtype=np.float64)
    colour = {k: np.array(v) + rng.normal(0.0, 12.0, 3) for k, v in _COLOUR.items()}

    def paint(mask: np.ndarray, cls: int, texture: np.ndarray | float = 0.0) -> None:
        label[mask] = cls
        shade = texture[mask] if isinstance(texture, np.ndarray) else texture
        image[mask] = colour[cls] + np.asarray(shade)[..., None]

    # Background: oriented low-frequency stripes.
    theta, period, phase = rng.uniform(0, np.pi), rng.uniform(12, 24) * s, rng.uniform(0, 2 * np.pi)
    stripes = 18.0 * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + phase)
    paint(np.ones_like(label, dtype=bool), BACKGROUND, stripes)

    # Field: a large region with a smooth random boundary and a grainy texture.
    smooth = np.zeros_like(xx)
    for _ in range(3):
        fy, fx = rng.normal(0, 1.5, 2) / size
        smooth += rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * (fy * yy + fx * xx) + rng.uniform(0, 2 * np.pi))
    coverage = rng.uniform(0.15, 0.45)
    field = smooth > np.quantile(smooth, 1.0 - coverage)
    paint(field, FIELD, rng.uniform(-28, 28, label.shape))

    # Boxes: rotated rectangles with a grid texture (same colour as the field).
    for _ in range(rng.integers(0, 3)):
        cy, cx = rng.uniform(0, size, 2)
        a, b = rng.uniform(5, 12, 2) * s
        ang = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang)
        v = -(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)
        grid = np.where((np.mod(u, 4.0) < 1.0) | (np.mod(v, 4.0) < 1.0), -45.0, 10.0)
        paint((np.abs(u) <= a) & (np.abs(v) <= b), BOX, grid)

    # Blobs: shaded ellipses with a one-pixel ignore ring.
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0, size, 2)
        a, b = rng.uniform(8, 18, 2) * s
        ang = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang)
        v = -(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)
        r2 = (u / a) ** 2 + (v / b) ** 2
        ring = ((u / (a + 1)) ** 2 + (v / (b + 1)) ** 2 <= 1.0) & (r2 > 1.0)
        inside = r2 <= 1.0
        paint(ring, BLOB, 0.0)
        label[ring] = IGNORE_INDEX
        paint(inside, BLOB, 35.0 * (1.0 - np.minimum(r2, 1.0)))

    # Poles: near-vertical segments, 2-3 px wide.
    for _ in range(rng.integers(0, 4)):
        x0, y0 = rng.uniform(0, size), rng.uniform(0, size * 0.6)
        length = rng.uniform(30, 80) * s
        tilt = rng.uniform(-0.17, 0.17)
        p0 = np.array([y0, x0])
        p1 = np.array([y0 + length * np.cos(tilt), x0 + length * np.sin(tilt)])
        width = rng.choice([2.0, 3.0])
        paint(_segment_distance(yy, xx, p0, p1) <= width / 2, POLE, rng.normal(0, 6, label.shape))

    # Wires: long lines at any angle, 1-2 px wide, crossing the image.
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0, size, 2)
        ang = rng.uniform(0, np.pi)
        d = np.array([np.sin(ang), np.cos(ang)]) * 2 * size
        width = rng.choice([1.0, 2.0])
        dist = _segment_distance(yy, xx, np.array([cy, cx]) - d, np.array([cy, cx]) + d)
        paint(dist <= width / 2, WIRE, rng.normal(0, 6, label.shape))

    # Dots: small discs (same colour as the blobs).
    for _ in range(rng.integers(2, 7)):
        cy, cx = rng.uniform(0, size, 2)
        radius = rng.uniform(1.5, 3.5) * s
        paint(np.hypot(yy - cy, xx - cx) <= radius, DOT, rng.uniform(0.0, 35.0))  # blob-like shades

    image += rng.normal(0.0, 10.0, image.shape) + rng.uniform(-15, 15)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


def generate(raw_dir: Path) -> None:
    """The synthetic dataset's `fetch`: no download, only a note of the generator version."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    note = {
        "dataset": "synthetic",
        "generator": "pipelines.datasets.synthetic",
        "generator_version": GENERATOR_VERSION,
        "note": "generated on the fly by `python -m pipelines.prepare synthetic`; nothing is downloaded",
    }
    (raw_dir / "generator.json").write_text(json.dumps(note, indent=2) + "\n")


def convert(
    inputs: Mapping[str, Path],
    writer: LayoutWriter,
    *,
    seed: int = 0,
    n_train: int = 160,
    n_val: int = 40,
    size: int = 96,
) -> None:
    """Write `n_train` + `n_val` generated examples of `size` x `size` pixels."""
    for key, value, low in (
        ("seed", seed, 0),
        ("n_train", n_train, 1),
        ("n_val", n_val, 1),
        ("size", size, 32),
    ):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
            raise DatasetError(f"synthetic: option {key}={value!r} must be an integer >= {low}")
    for split, count in (("train", n_train), ("val", n_val)):
        for index in range(count):
            image, label = generate_example(seed, split, index, size)
            writer.add(split, f"{split}_{index:05d}", image=image, label=label)


SPEC = register_dataset(
    DatasetSpec(
        name="synthetic",
        classes=CLASSES,
        palette=PALETTE,
        convert=convert,
        converter_version=GENERATOR_VERSION,
        generate=generate,
    )
)
