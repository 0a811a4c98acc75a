"""A fixture MLflow store shaped like the sweep's record (docs/architecture.md, "MLflow record").

Suite ``quick``, experiment ``quick/synthetic``: a parent sweep run and nested trial runs of eight
variants over seeds 0, 1, 2 with params, tags, final metrics, curves (steps) and artifacts; a FAILED
run with an error tag, a variant whose only run failed, a missing seed and a superseded re-run.
Suite ``paper``, experiment ``paper/nyudv2``: two seeds of RefineNet-Res152 for the paper comparison.
Built once per test session (the SQLite store costs seconds).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ["background", "square", "circle"]
PALETTE = [[0, 0, 0], [200, 30, 30], [30, 30, 200]]
IMAGE_IDS = ["img_000", "img_001"]
N_VAL = 12  # images in per_image_stats
SEED_OFFSETS = (0.0, 0.01, 0.03)  # added to a variant's base metrics for seeds 0, 1, 2
STEPS = (10, 20, 30)

# variant -> (model, opts, base mIoU, seeds that finish)
VARIANTS: dict[str, tuple[str, dict[str, object], float, tuple[int, ...]]] = {
    "refinenet": (
        "refinenet",
        {"backbone": "resnet18", "cascade": 4, "crp_blocks": 2, "preset": "paper"},
        0.60,
        (0, 1, 2),
    ),
    "refinenet-single": (
        "refinenet",
        {"backbone": "resnet18", "cascade": "single", "crp_blocks": 2, "preset": "paper"},
        0.50,
        (0, 1, 2),
    ),
    "refinenet-2cascaded": (
        "refinenet",
        {"backbone": "resnet18", "cascade": 2, "crp_blocks": 2, "preset": "paper"},
        0.55,
        (0, 1),
    ),
    "refinenet-no-crp": (
        "refinenet",
        {"backbone": "resnet18", "cascade": 4, "crp_blocks": 0, "preset": "paper"},
        0.52,
        (0, 1, 2),
    ),
    "refinenet-released": (
        "refinenet",
        {"backbone": "resnet18", "cascade": 4, "crp_blocks": 4, "preset": "released"},
        0.63,
        (0, 1, 2),
    ),
    "fcn8s": ("fcn8s", {"backbone": "resnet18", "weights": None}, 0.40, (0, 1)),
    "deeplabv2": ("deeplabv2", {"backbone": "resnet18", "weights": None}, 0.45, (0, 1, 2)),
    "unet": ("unet", {"backbone": "resnet18", "weights": None}, 0.0, ()),
}
PAPER_VARIANTS = {
    "refinenet-res152": (
        "refinenet",
        {"backbone": "resnet152", "cascade": 4, "crp_blocks": 2, "preset": "paper"},
        0.45,
        (0, 1),
    ),
}
ALL_VARIANTS = {**VARIANTS, **PAPER_VARIANTS}
FAILED = [("fcn8s", 2, "RuntimeError: CUDA out of memory"), ("unet", 0, "ValueError: bad crop size")]


def metric_values(variant: str, seed: int, base: float) -> dict[str, float]:
    """The final metrics a trial logs (deterministic, so tests can recompute them)."""
    o = SEED_OFFSETS[seed]
    m = {
        "val/mIoU": base + o,
        "val/pixel_acc": min(0.99, base + 0.30 + o / 2),
        "val/mean_acc": base + 0.10 + o,
        "val/fwIoU": base + 0.2,
        "val/boundary_IoU": base - 0.2 + o,
        "train/loss": 1.0 - base,
        "n_params": 1_000_000 + 250_000 * len(variant),
        "gflops": 2.0 + 0.5 * len(variant),
        "train_img_per_s": 100.0 - 3 * len(variant) + seed,
        "peak_mem_alloc_gb": 0.5 + 0.01 * len(variant),
    }
    if variant.startswith("refinenet") and variant != "refinenet-single":
        m["val/mIoU_ms"] = base + o + 0.02
    if variant == "refinenet-no-crp":
        del m["val/mIoU_ms"]  # this variant was not evaluated multi-scale
    return m


def per_image_stats(variant: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(len(variant) * 10 + seed)
    union = rng.integers(50, 200, size=(N_VAL, len(CLASSES))).astype(np.int64)
    frac = np.clip(ALL_VARIANTS[variant][2] + rng.normal(0, 0.1, size=union.shape), 0.05, 1.0)
    inter = (union * frac).astype(np.int64)
    union[0, 2] = 0  # class absent from image 0
    inter[0, 2] = 0
    return {"image_ids": np.array([f"v{i:03d}" for i in range(N_VAL)]), "intersection": inter, "union": union}


@dataclass
class Store:
    uri: str
    root: Path
    prepared_root: Path
    profile: Path
    runs: dict[tuple[str, str, int], str] = field(default_factory=dict)  # (dataset, variant, seed) -> run id
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # run id -> final metrics
    stats: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # run id -> per-image stats


def _write_run_folder(
    folder: Path, variant: str, seed: int, metrics: dict[str, float]
) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"variant": variant, "seed": seed}))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    iou = [metrics["val/mIoU"] + d for d in (0.2, -0.1, -0.1)]
    iou[2] = None if variant == "deeplabv2" else iou[2]  # a null (NaN) class IoU
    (folder / "per_class_iou.json").write_text(json.dumps({"classes": CLASSES, "iou": iou}))
    stats = per_image_stats(variant, seed)
    np.savez(folder / "per_image_stats.npz", **stats)
    np.save(folder / "confusion_matrix.npy", np.eye(3, dtype=np.int64))
    (folder / "predictions").mkdir()
    for k, image_id in enumerate(IMAGE_IDS):
        pred = np.zeros((32, 32), dtype=np.uint8)
        pred[4 + k : 20 + len(variant) % 6, 6:22] = 1
        pred[22:30, 20:30] = 2
        im = Image.fromarray(pred, mode="P")
        im.putpalette([c for rgb in PALETTE for c in rgb])
        im.save(folder / "predictions" / f"{image_id}.png")
    return stats


def _log_trial(
    client,
    exp_id: str,
    parent: str,
    suite: str,
    dataset: str,
    variant: str,
    seed: int,
    status: str,
    store: Store,
    error: str = "",
    shift: float = 0.0,
) -> str:
    from mlflow.entities import Metric, Param, RunTag

    model, opts, base, _ = ALL_VARIANTS[variant]
    tags = {
        "kind": "trial",
        "mlflow.parentRunId": parent,
        "suite": suite,
        "dataset": dataset,
        "model": model,
        "variant": variant,
        "seed": str(seed),
        "git_commit": "abc123def4567890",
        "git_dirty": "False",
    }
    if error:
        tags["error"] = error
    run = client.create_run(exp_id, tags=tags, run_name=f"{variant}-s{seed}")
    rid = run.info.run_id
    params = {
        "model": model,
        "variant": variant,
        "seed": seed,
        "iterations": 30,
        "batch_size": 2,
        **{f"opt.{k}": ("None" if v is None else v) for k, v in opts.items()},
    }
    ts = int(time.time() * 1000)
    metrics: list = []
    if status == "FINISHED":
        final = metric_values(variant, seed, base)
        final["val/mIoU"] += shift
        for k, v in final.items():
            if k == "val/mIoU":
                metrics += [
                    Metric(k, v * f, ts + i, step)
                    for i, (step, f) in enumerate(zip(STEPS, (0.5, 0.8, 1.0), strict=True))
                ]
            else:
                metrics.append(Metric(k, v, ts, STEPS[-1]))
        folder = store.root / "runs" / rid
        store.stats[rid] = _write_run_folder(folder, variant, seed, final)
        client.log_artifacts(rid, str(folder))
        store.metrics[rid] = final
    else:
        metrics.append(Metric("train/loss", 2.0, ts, 0))
    client.log_batch(
        rid,
        metrics=metrics,
        params=[Param(k, str(v)) for k, v in params.items()],
        tags=[RunTag("mlflow.note.content", "fixture")],
    )
    client.set_terminated(rid, status)
    return rid


def _prepared(root: Path) -> Path:
    ds = root / "synthetic"
    (ds / "images" / "val").mkdir(parents=True)
    (ds / "labels" / "val").mkdir(parents=True)
    meta = {
        "name": "synthetic",
        "classes": CLASSES,
        "palette": PALETTE,
        "ignore_index": 255,
        "splits": {"train": 0, "val": 2},
        "sources": {},
        "converter_version": 1,
    }
    (ds / "meta.json").write_text(json.dumps(meta))
    rng = np.random.default_rng(0)
    for image_id in IMAGE_IDS:
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            ds / "images" / "val" / f"{image_id}.png"
        )
        lab = np.zeros((32, 32), dtype=np.uint8)
        lab[4:20, 6:22] = 1
        lab[22:30, 20:30] = 2
        lab[0, :] = 255
        Image.fromarray(lab).save(ds / "labels" / "val" / f"{image_id}.png")
    return root


def _profile(path: Path) -> Path:
    lines = [
        "variant,model,backbone,precision,batch,height,width,n_params,gflops,train_img_per_s,"
        "peak_mem_alloc_gb,peak_mem_reserved_gb,infer_latency_ms,infer_img_per_s,device_name,"
        "torch_version,cuda_version"
    ]
    for variant, model, mem, speed in (
        ("refinenet", "refinenet", 1.0, 40.0),
        ("deeplabv2", "deeplabv2", 2.0, 25.0),
        ("fcn8s", "fcn8s", None, 60.0),
    ):
        for side in (256, 512):
            scale = (side / 256) ** 2
            m = "" if mem is None else f"{mem * scale:.3f}"
            lines.append(
                f"{variant},{model},resnet18,fp32,2,{side},{side},{11e6:.0f},{10 * scale},{speed / scale},"
                f"{m},{m},{5 * scale},{200 / scale},NVIDIA H100,2.14.1,13.0"
            )
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Store:
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    s = Store(
        uri=uri, root=root, prepared_root=_prepared(root / "prepared"), profile=_profile(root / "profile.csv")
    )
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("quick/synthetic", artifact_location=str(root / "artifacts"))
    parent = client.create_run(
        exp, tags={"kind": "sweep", "suite": "quick", "dataset": "synthetic"}
    ).info.run_id
    # An older finished run of deeplabv2 seed 0 that a re-run supersedes (logged first = earlier start).
    old = _log_trial(
        client,
        exp,
        parent,
        "quick",
        "synthetic",
        "deeplabv2",
        0,
        "FINISHED",
        Store(uri, root, root, root),
        shift=-0.3,
    )
    s.runs[("synthetic", "deeplabv2-old", 0)] = old
    time.sleep(0.01)
    for variant, (_, _, _, seeds) in VARIANTS.items():
        for seed in seeds:
            s.runs[("synthetic", variant, seed)] = _log_trial(
                client, exp, parent, "quick", "synthetic", variant, seed, "FINISHED", s
            )
    for variant, seed, error in FAILED:
        s.runs[("synthetic", f"{variant}-failed", seed)] = _log_trial(
            client, exp, parent, "quick", "synthetic", variant, seed, "FAILED", s, error
        )
    client.set_terminated(parent, "FINISHED")
    # Paper suite: RefineNet-Res152 on NYUDv2, two seeds.
    exp2 = client.create_experiment("paper/nyudv2", artifact_location=str(root / "artifacts2"))
    parent2 = client.create_run(exp2, tags={"kind": "sweep"}).info.run_id
    for seed in (0, 1):
        s.runs[("nyudv2", "refinenet-res152", seed)] = _log_trial(
            client, exp2, parent2, "paper", "nyudv2", "refinenet-res152", seed, "FINISHED", s
        )
    return s
