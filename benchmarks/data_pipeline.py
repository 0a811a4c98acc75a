"""Does the data pipeline keep the GPU busy? The same training loop fed by the prepared layout
(JPEG decode, random scale/crop/flip, normalisation in DataLoader workers) and by in-memory tensors.

    python benchmarks/data_pipeline.py [--model refinenet --preset released] [--workers 12] [--out DIR]

Writes a synthetic prepared dataset (docs/architecture.md layout; VOC-like 500x375 JPEG images and
PNG labels) to a temporary folder, then times ``--steps`` training steps of the model (bf16, batch 8,
512 crop, channels_last, frozen backbone BatchNorm as the released recipe) twice: once on one batch
kept on the GPU, once reading through `pipelines.engine.data.train_loader` (pinned memory,
non-blocking copies). The target (issue 8): the loader loop within 10% of the in-memory loop.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.engine.data import SegmentationDataset, TrainTransform, train_loader  # noqa: E402
from pipelines.engine.measure import autocast, device_info, set_fast_gpu_flags, train_mode  # noqa: E402

NUM_CLASSES = 21


def write_dataset(root: Path, n: int, seed: int = 0) -> None:
    """``n`` smooth random 500x375 JPEG images with blocky labels in the prepared layout."""
    rng = np.random.default_rng(seed)
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for i in range(n):
        h, w = (375, 500) if i % 3 else (500, 375)
        coarse = rng.integers(0, 256, size=(h // 25 + 1, w // 25 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
        noise = rng.integers(-12, 13, size=(h, w, 3))
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
        image.save(root / "images" / "train" / f"{i:06d}.jpg", quality=90)
        blocks = rng.integers(0, NUM_CLASSES, size=(h // 50 + 1, w // 50 + 1), dtype=np.uint8)
        label = np.kron(blocks, np.ones((50, 50), dtype=np.uint8))[:h, :w]
        label[rng.random((h, w)) < 0.02] = 255
        Image.fromarray(label, mode="L").save(root / "labels" / "train" / f"{i:06d}.png")
    meta = {
        "name": "synthetic",
        "classes": [f"c{i}" for i in range(NUM_CLASSES)],
        "palette": [[i, i, i] for i in range(NUM_CLASSES)],
        "ignore_index": 255,
        "splits": {"train": n},
        "sources": {},
        "converter_version": 1,
    }
    (root / "meta.json").write_text(json.dumps(meta))


def run(args) -> dict:
    import baselines  # noqa: F401
    from refinenet.registry import build_model

    set_fast_gpu_flags()
    device = torch.device("cuda")
    options = {"backbone": args.backbone}
    if args.model == "refinenet":
        options["preset"] = args.preset
    torch.manual_seed(0)
    model = build_model(args.model, NUM_CLASSES, **options).to(device, memory_format=torch.channels_last)
    train_mode(model, args.freeze_backbone_bn)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6, momentum=0.9)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(device, args.precision):
            logits = model(x)
        F.cross_entropy(logits.float(), y, ignore_index=255).backward()
        opt.step()

    def timed(batches) -> float:
        for _ in range(args.warmup):
            step(*next(batches))
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.steps):
            step(*next(batches))
        torch.cuda.synchronize()
        return args.batch * args.steps / (time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synthetic"
        t0 = time.perf_counter()
        write_dataset(root, args.images)
        print(f"wrote {args.images} images in {time.perf_counter() - t0:.1f} s", flush=True)
        dataset = SegmentationDataset(root, "train", TrainTransform(args.crop))

        def from_loader():
            loader = train_loader(
                dataset, args.batch, seed=0, start=0, num_workers=args.workers, pin_memory=True
            )
            for x, y in loader:
                yield (
                    x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last),
                    y.to(device, non_blocking=True),
                )

        x0, y0 = next(
            iter(train_loader(dataset, args.batch, seed=0, start=0, num_workers=0, pin_memory=False))
        )
        x0 = x0.to(device).contiguous(memory_format=torch.channels_last)
        y0 = y0.to(device)

        def in_memory():
            while True:
                yield x0, y0

        results = {}
        for rnd in range(args.rounds):  # A B A B: the two loops alternate
            results.setdefault("in_memory_img_per_s", []).append(timed(in_memory()))
            results.setdefault("loader_img_per_s", []).append(timed(from_loader()))
            print(
                f"round {rnd}: in-memory {results['in_memory_img_per_s'][-1]:.1f} img/s, "
                f"loader {results['loader_img_per_s'][-1]:.1f} img/s",
                flush=True,
            )
    mem = float(np.median(results["in_memory_img_per_s"]))
    load = float(np.median(results["loader_img_per_s"]))
    results.update(
        {
            "in_memory_median": mem,
            "loader_median": load,
            "loader_over_in_memory": load / mem,
            "settings": {**vars(args), **device_info(device), "cpu_count": os.cpu_count()},
        }
    )
    print(f"loader / in-memory = {load / mem:.3f} (target >= 0.90)", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="refinenet")
    parser.add_argument("--preset", default="released")
    parser.add_argument("--backbone", default="resnet101")
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    parser.add_argument("--freeze-backbone-bn", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--workers", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 2)))
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=None, help="folder for data_pipeline.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: benchmarks/data_pipeline.py needs a CUDA GPU.", file=sys.stderr)
        return 2
    results = run(args)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "data_pipeline.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
