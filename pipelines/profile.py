"""Speed and memory of every profiled variant, across input resolutions (the DVC ``profile`` stage).

``python -m pipelines.profile [--params params.yaml] [--out results/profile.csv]`` measures, for each
variant of ``suite.profile``: parameters, forward GFLOPs, and per precision (bf16, fp32) at
``crop_size`` and ``batch``: training images/s, peak training memory (allocated and reserved),
batch-1 inference latency (optionally also replayed from a CUDA graph) and batch-16 inference
throughput; then the peak training memory (and images/s) at every size of ``resolutions``
(``row_kind=sweep``). It needs no data (random inputs, perf.md's protocol: channels_last,
cudnn.benchmark and TF32 on the GPU, SGD step, loss on input-size logits). It writes one tidy CSV
row per measurement (docs/architecture.md, "Profile results", plus a few added columns) and a JSON
beside it with the settings, GPU name and versions, and logs them to MLflow (experiment
``<suite>/profile``) unless ``--no-mlflow`` is given or mlflow is not installed.

Standalone, without params.yaml settings::

    python -m pipelines.profile --variants refinenet-released,fcn8s --crop 512 --batch 8 \\
        --precisions bf16,fp32 --resolutions 256,512,768 --device cuda --out results/h100/profile.csv

A name in ``--variants`` is a variant of params.yaml when the file defines it, else a registry
model name (built with ``--backbone``).
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.config import Params, ParamsError, load_params, resolved_model_options

COLUMNS = (
    "variant",
    "model",
    "backbone",
    "precision",
    "batch",
    "height",
    "width",
    "n_params",
    "gflops",
    "train_img_per_s",
    "peak_mem_alloc_gb",
    "peak_mem_reserved_gb",
    "infer_latency_ms",
    "infer_img_per_s",
    "device_name",
    "torch_version",
    "cuda_version",
    # added columns (the contract allows more)
    "row_kind",
    "infer_batch",
    "infer_latency_graph_ms",
    "freeze_backbone_bn",
    "cuda_graph_train",
)
PROFILE_NUM_CLASSES = 21  # PASCAL VOC's count, as in perf.md
PRECISIONS = ("bf16", "fp32")


@dataclass
class ProfileSettings:
    """Everything one profile run measures (from ``suite.profile`` or the command line)."""

    variants: list[str]
    crop: int
    batch: int
    precisions: list[str]
    resolutions: list[int]
    warmup: int
    iterations: int
    device: str = "auto"
    latency_iterations: int | None = None  # default: 100 on the GPU, 2 on the CPU
    infer_batch: int | None = None  # default: 16 on the GPU, 2 on the CPU
    sweep_precision: str = "bf16"
    freeze_backbone_bn: bool = False
    cuda_graph_train: bool = False
    cuda_graph_infer: bool = True
    backbone: str | None = None
    suite_options: bool = True  # apply suite.model_options to params.yaml variants
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        bad = [p for p in [*self.precisions, self.sweep_precision] if p not in PRECISIONS]
        if bad:
            raise ParamsError(f"Unknown precision(s) {bad}. Valid precisions: {', '.join(PRECISIONS)}.")
        if not self.variants:
            raise ParamsError("No variants to profile. Fix: set suite.profile.variants or pass --variants.")
        for name, value in (("crop", self.crop), ("batch", self.batch), ("iterations", self.iterations)):
            if not isinstance(value, int) or value < 1:
                raise ParamsError(f"{name} must be an integer >= 1, got {value!r}.")
        if any(not isinstance(r, int) or r < 32 for r in self.resolutions):
            raise ParamsError(f"resolutions must be integers >= 32, got {self.resolutions!r}.")


def _device(name: str):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError("Profile device is 'cuda' but no GPU is visible. Fix: use 'auto' or 'cpu'.")
    if name not in ("cpu", "cuda"):
        raise ParamsError(f"Unknown device {name!r}. Valid devices: auto, cpu, cuda.")
    return torch.device(name)


def variant_spec(
    name: str, params: Params | None, backbone: str | None, suite_options: bool = True
) -> tuple[str, dict[str, Any]]:
    """``(registry model, builder options)`` of a params.yaml variant (with the active suite's model
    options unless ``suite_options=False``), or of a bare registry name."""
    import baselines  # noqa: F401  (registers the baselines)
    from refinenet.registry import list_models, model_options

    if params is not None and name in params.variants:
        model = params.variants[name].model
        if suite_options:
            options = resolved_model_options(params, params.suite.datasets[0], name)
        else:
            options = dict(params.variants[name].options)
    elif name in list_models():
        model, options = name, {}
    else:
        known = sorted(set(list_models()) | set(params.variants if params else ()))
        raise ParamsError(f"Unknown variant or model {name!r}. Valid names: {', '.join(known)}.")
    if backbone is not None and "backbone" in model_options(model):
        options["backbone"] = backbone
    if "weights" in options:
        options["weights"] = None  # speed and memory do not depend on the initial weights
    return model, options


def profile_rows(
    params: Params | None = None, *, device: str | None = None, settings: ProfileSettings | None = None
) -> list[dict[str, Any]]:
    """Measure every variant (main rows per precision, then the resolution sweep)."""
    import torch

    from pipelines.engine.measure import (
        count_params,
        device_info,
        forward_gflops,
        inference_time,
        set_fast_gpu_flags,
        train_throughput,
    )
    from refinenet.registry import build_model

    if settings is None:
        if params is None:
            raise ParamsError("profile_rows needs params or settings.")
        settings = settings_from_params(params)
    if device is not None:
        settings.device = device
    settings.check()
    dev = _device(settings.device)
    on_gpu = dev.type == "cuda"
    if on_gpu:
        set_fast_gpu_flags()
    latency_iterations = settings.latency_iterations or (100 if on_gpu else 2)
    infer_batch = settings.infer_batch or (16 if on_gpu else 2)
    info = device_info(dev)
    rows: list[dict[str, Any]] = []

    def fresh(name: str, options: dict[str, Any]):
        gc.collect()
        if on_gpu:
            torch.cuda.empty_cache()
        torch.manual_seed(0)
        return build_model(name, PROFILE_NUM_CLASSES, **options)

    for variant in settings.variants:
        model_name, options = variant_spec(variant, params, settings.backbone, settings.suite_options)
        model = fresh(model_name, options)
        n_params = float(count_params(model))
        gflops = forward_gflops(model, settings.crop, torch.device("cpu")) if not on_gpu else None
        base = {
            "variant": variant,
            "model": model_name,
            "backbone": options.get("backbone", ""),
            "n_params": n_params,
            "freeze_backbone_bn": settings.freeze_backbone_bn,
            **info,
        }
        if on_gpu:
            gflops = forward_gflops(model.to(dev), settings.crop, dev)
        del model
        jobs = [("main", p, settings.crop) for p in settings.precisions]
        jobs += [("sweep", settings.sweep_precision, r) for r in settings.resolutions]
        for kind, precision, size in jobs:
            model = fresh(model_name, options)
            row = {
                **base,
                "row_kind": kind,
                "precision": precision,
                "batch": settings.batch,
                "height": size,
                "width": size,
                "gflops": gflops if size == settings.crop else None,
                "cuda_graph_train": settings.cuda_graph_train and on_gpu,
            }
            try:
                row.update(
                    train_throughput(
                        model,
                        PROFILE_NUM_CLASSES,
                        size,
                        settings.batch,
                        dev,
                        precision,
                        on_gpu,
                        warmup=settings.warmup,
                        iterations=settings.iterations,
                        freeze_backbone_bn=settings.freeze_backbone_bn,
                        cuda_graph=settings.cuda_graph_train and on_gpu,
                    )
                )
                if kind == "main":
                    common = dict(
                        device=dev, precision=precision, channels_last=on_gpu, warmup=settings.warmup
                    )
                    sec = inference_time(model, size, 1, iterations=latency_iterations, **common)
                    row["infer_latency_ms"] = 1000 * sec
                    n_batches = max(2, latency_iterations // infer_batch)
                    sec = inference_time(model, size, infer_batch, iterations=n_batches, **common)
                    row["infer_img_per_s"] = infer_batch / sec
                    row["infer_batch"] = infer_batch
                    if on_gpu and settings.cuda_graph_infer:
                        sec = inference_time(
                            model, size, 1, iterations=latency_iterations, cuda_graph=True, **common
                        )
                        row["infer_latency_graph_ms"] = 1000 * sec
            except torch.OutOfMemoryError:
                row["train_img_per_s"] = float("nan")
                row["peak_mem_alloc_gb"] = float("inf")
            del model
            rows.append(row)
            print(
                f"{variant:26s} {kind:5s} {precision:4s} {size:5d}px  "
                f"{row.get('train_img_per_s', 0):8.2f} img/s  "
                f"peak {row.get('peak_mem_alloc_gb')} GB  latency {row.get('infer_latency_ms')} ms",
                file=sys.stderr,
                flush=True,
            )
    return rows


def settings_from_params(params: Params) -> ProfileSettings:
    spec = params.suite.profile
    return ProfileSettings(
        variants=list(spec.variants),
        crop=spec.crop_size,
        batch=spec.batch,
        precisions=list(spec.precisions),
        resolutions=list(spec.resolutions),
        warmup=spec.warmup,
        iterations=spec.iterations,
        device=spec.device,
        sweep_precision=spec.precisions[0] if spec.precisions else "bf16",
    )


def write_profile(rows: list[dict[str, Any]], out: Path, settings: dict[str, Any]) -> None:
    """Write ``out`` (CSV) and ``out.with_suffix('.json')`` atomically; NaN becomes an empty cell."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in COLUMNS})
    os.replace(tmp, out)
    meta = out.with_suffix(".json")
    tmp = meta.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2, default=_json_default) + "\n")
    os.replace(tmp, meta)


def _cell(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return "" if value is None else value


def _json_default(value: Any) -> Any:
    return str(value)


def log_profile_to_mlflow(
    suite: str, rows: list[dict[str, Any]], csv_path: Path, tracking_uri: str, root: Path | None = None
) -> None:
    """One MLflow run per profile (experiment ``<suite>/profile``), one nested run per row."""
    from mlflow.tracking import MlflowClient

    from pipelines.tracking import environment_tags, finite_metrics, git_state

    client = MlflowClient(tracking_uri)
    name = f"{suite}/profile"
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    tags = {"suite": suite, "kind": "profile", **environment_tags()}
    if root is not None:
        tags.update(git_state(root))
    parent = client.create_run(experiment_id, run_name="profile", tags=tags)
    metric_keys = [k for k in COLUMNS if k not in ("variant", "model", "backbone", "precision", "row_kind")]
    for row in rows:
        run_name = f"{row['variant']}-{row['row_kind']}-{row['precision']}-{row['height']}px"
        child = client.create_run(
            experiment_id,
            run_name=run_name,
            tags={
                **tags,
                "kind": "profile-row",
                "mlflow.parentRunId": parent.info.run_id,
                "variant": row["variant"],
            },
        )
        for key in ("variant", "model", "backbone", "precision", "batch", "height", "width", "row_kind"):
            client.log_param(child.info.run_id, key, str(row.get(key)))
        numeric = {k: row.get(k) for k in metric_keys if isinstance(row.get(k), int | float)}
        for key, value in finite_metrics(numeric).items():
            client.log_metric(child.info.run_id, key, value)
        client.set_terminated(child.info.run_id)
    client.log_artifact(parent.info.run_id, str(csv_path))
    client.set_terminated(parent.info.run_id)


def _csv_list(text: str, cast=str) -> list:
    return [cast(t.strip()) for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params", default="params.yaml", help="read suite.profile (absent file: flags only)"
    )
    parser.add_argument("--out", default=None, help="CSV path (default: <paths.results>/profile.csv)")
    parser.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"))
    parser.add_argument("--variants", default=None, help="comma list of variants or registry models")
    parser.add_argument("--crop", type=int, default=None, help="main crop (default suite.profile.crop_size)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--precisions", default=None, help="e.g. bf16,fp32")
    parser.add_argument("--resolutions", default=None, help="sweep sizes, e.g. 256,512,768 ('' for none)")
    parser.add_argument("--sweep-precision", default=None, choices=PRECISIONS)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--latency-iterations", type=int, default=None)
    parser.add_argument("--infer-batch", type=int, default=None)
    parser.add_argument("--backbone", default=None, help="override every variant's backbone")
    parser.add_argument("--freeze-backbone-bn", action="store_true", help="released recipe: frozen BN")
    parser.add_argument("--cuda-graph-train", action="store_true", help="replay forward+backward as a graph")
    parser.add_argument("--no-cuda-graph-infer", action="store_true")
    parser.add_argument("--no-mlflow", action="store_true")
    args = parser.parse_args(argv)
    started = time.time()
    try:
        params = load_params(args.params) if Path(args.params).is_file() else None
        if params is not None:
            settings = settings_from_params(params)
        elif args.variants is None:
            raise ParamsError(f"{args.params} does not exist. Fix: pass --params or --variants (and --out).")
        else:
            settings = ProfileSettings(
                variants=[],
                crop=512,
                batch=8,
                precisions=["bf16", "fp32"],
                resolutions=[],
                warmup=4,
                iterations=15,
            )
        if args.variants is not None:  # standalone: the variants' own options, not the suite's
            settings.variants = _csv_list(args.variants)
            settings.suite_options = False
        for key in (
            "crop",
            "batch",
            "warmup",
            "iterations",
            "latency_iterations",
            "infer_batch",
            "backbone",
            "sweep_precision",
        ):
            if getattr(args, key) is not None:
                setattr(settings, key, getattr(args, key))
        if args.precisions is not None:
            settings.precisions = _csv_list(args.precisions)
        if args.resolutions is not None:
            settings.resolutions = _csv_list(args.resolutions, int)
        if args.device is not None:
            settings.device = args.device
        settings.freeze_backbone_bn = args.freeze_backbone_bn
        settings.cuda_graph_train = args.cuda_graph_train
        settings.cuda_graph_infer = not args.no_cuda_graph_infer
        rows = profile_rows(params, settings=settings)
    except ParamsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.out:
        out = Path(args.out)
    elif params is not None:
        out = params.path(params.paths.results) / "profile.csv"
    else:
        out = Path("results/profile.csv")
    import torch

    suite = params.suite.name if params is not None else "standalone"
    meta = {
        "suite": suite,
        **{k: v for k, v in vars(settings).items() if k != "extra"},
        "num_classes": PROFILE_NUM_CLASSES,
        "protocol": "random input, channels_last+cudnn.benchmark+TF32 on GPU, SGD momentum 0.9, "
        "cross-entropy on input-size logits, peak = max_memory_allocated over the timed steps",
        "torch_version": torch.__version__,
        "cuda_version": str(torch.version.cuda),
        "cudnn_version": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "device_name": rows[0]["device_name"] if rows else None,
        "argv": sys.argv[1:] if argv is None else argv,
        "seconds": round(time.time() - started, 1),
    }
    write_profile(rows, out, meta)
    if args.no_mlflow:
        print("MLflow logging skipped (--no-mlflow).", file=sys.stderr)
    else:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            print("MLflow logging skipped: mlflow is not installed.", file=sys.stderr)
        else:
            from pipelines.tracking import default_tracking_uri

            root = params.root if params is not None else Path.cwd()
            uri = default_tracking_uri(root, params.mlflow.tracking_uri if params is not None else None)
            log_profile_to_mlflow(suite, rows, out, uri, root)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
