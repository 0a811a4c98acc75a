"""Peak memory of the SUN-RGBD converter as the number of images in SUNRGBD2Dseg.mat grows tenfold.

    python benchmarks/sunrgbd_memory.py [--n 100] [--height 480] [--width 640]

Generates two SUNRGBD2Dseg.mat-like HDF5 files (group `SUNRGBD2Dseg`, dataset `seglabel` of object
references to (W, H) uint16 labels, as MATLAB v7.3 stores them) with N and 10N images, plus the
SUNRGBDMeta.mat / allsplit.mat / image files the converter needs, and runs
`pipelines.datasets.sunrgbd.convert` on each in a fresh subprocess, printing its peak RSS
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`). For contrast, a second child reads every label into a
list first, as a whole-file load does (paper.md, section 4: the real file needs about 64 GB that way).
The streaming converter's peak should stay flat; the whole-file reader's grows with the file.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ROOT = "/n/fs/sun3d/data/"


def generate(folder: Path, n: int, height: int, width: int) -> None:
    """A toolbox folder and an images folder for `n` images of `height` x `width`."""
    toolbox = folder / "toolbox" / "SUNRGBDtoolbox"
    (toolbox / "Metadata").mkdir(parents=True)
    (toolbox / "traintestSUNRGBD").mkdir(parents=True)
    rng = np.random.default_rng(0)
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(jpeg, format="JPEG")
    first = None
    scenes = []
    for i in range(n):
        scene = f"SUNRGBD/bench/scene{i:06d}"
        image = folder / "images" / scene / "image" / "img.jpg"
        image.parent.mkdir(parents=True)
        if first is None:
            image.write_bytes(jpeg.getvalue())
            first = image
        else:
            os.link(first, image)
        scenes.append(scene)
    with h5py.File(toolbox / "Metadata" / "SUNRGBD2Dseg.mat", "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        references = []
        for i in range(n):
            label = rng.integers(0, 38, (width, height), dtype=np.uint16)  # stored transposed, (W, H)
            references.append(refs.create_dataset(f"l{i}", data=label).ref)
        f.create_group("SUNRGBD2Dseg").create_dataset(
            "seglabel", data=np.array(references, dtype=h5py.ref_dtype).reshape(-1, 1)
        )
    meta = np.zeros((1, n), dtype=[("rgbpath", "O"), ("rgbname", "O")])
    for i, scene in enumerate(scenes):
        meta[0, i]["rgbpath"] = f"{ROOT}{scene}/image/img.jpg"
        meta[0, i]["rgbname"] = "img.jpg"
    scipy.io.savemat(toolbox / "Metadata" / "SUNRGBDMeta.mat", {"SUNRGBDMeta": meta})
    half = n // 2
    split = {
        "alltrain": np.array([ROOT + s for s in scenes[:half]], dtype=object).reshape(1, -1),
        "alltest": np.array([ROOT + s for s in scenes[half:]], dtype=object).reshape(1, -1),
    }
    scipy.io.savemat(toolbox / "traintestSUNRGBD" / "allsplit.mat", split)


def child_convert(folder: Path) -> dict[str, float]:
    """Run the converter (the measured process) and return its peak RSS and wall time."""
    from pipelines.datasets.layout import LayoutWriter
    from pipelines.datasets.sunrgbd import CLASSES, IMAGES, TOOLBOX, convert

    start = time.perf_counter()
    inputs = {IMAGES.filename: folder / "images", TOOLBOX.filename: folder / "toolbox"}
    with LayoutWriter(folder / "prepared", name="sunrgbd", classes=CLASSES, palette=[[0, 0, 0]] * 37) as w:
        convert(inputs, w)
        w.commit(sources={}, converter_version=0)
        counts = w.counts
    return {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": time.perf_counter() - start,
        "images": sum(counts.values()),
    }


def child_whole(folder: Path) -> dict[str, float]:
    """Read every label into memory first (what loading the whole .mat amounts to)."""
    start = time.perf_counter()
    with h5py.File(folder / "toolbox" / "SUNRGBDtoolbox" / "Metadata" / "SUNRGBD2Dseg.mat", "r") as f:
        labels = [np.asarray(f[r][()]).T for r in f["SUNRGBD2Dseg"]["seglabel"][()].reshape(-1)]
    return {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": time.perf_counter() - start,
        "images": len(labels),
    }


def run_child(mode: str, folder: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, __file__, f"--child-{mode}", str(folder)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"child {mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="images in the small file (the large has 10x)")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--child-convert", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-whole", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_convert is not None:
        print(json.dumps(child_convert(args.child_convert)))
        return 0
    if args.child_whole is not None:
        print(json.dumps(child_whole(args.child_whole)))
        return 0
    label_mb = args.height * args.width * 2 / 2**20
    print(f"labels: {args.height}x{args.width} uint16 ({label_mb:.2f} MiB each)")
    header = ("images", ".mat MiB", "converter peak RSS MiB", "whole-file read peak RSS MiB")
    print(f"{header[0]:>7} {header[1]:>9}  {header[2]:<24}  {header[3]}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="sunrgbd-memory-") as tmp:
        for n in (args.n, 10 * args.n):
            folder = Path(tmp) / f"n{n}"
            generate(folder, n, args.height, args.width)
            size = (folder / "toolbox/SUNRGBDtoolbox/Metadata/SUNRGBD2Dseg.mat").stat().st_size / 2**20
            streamed, whole = run_child("convert", folder), run_child("whole", folder)
            assert streamed["images"] == n, streamed
            rows.append((n, streamed["peak_rss_mb"], whole["peak_rss_mb"]))
            print(
                f"{n:>7} {size:>9.0f}  {streamed['peak_rss_mb']:>8.0f} ({streamed['seconds']:>3.0f} s)"
                f"{'':<11}  {whole['peak_rss_mb']:>8.0f} ({whole['seconds']:>3.0f} s)"
            )
    (n_small, conv_small, whole_small), (n_large, conv_large, whole_large) = rows
    print(
        f"converter: x{conv_large / conv_small:.2f} peak memory for x{n_large // n_small} images; "
        f"whole-file reader: x{whole_large / whole_small:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
