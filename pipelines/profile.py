"""Speed and memory of every profiled variant, across input resolutions (the DVC ``profile`` stage).

``python -m pipelines.profile [--params params.yaml] [--out results/profile.csv]`` measures, for each
variant of ``suite.profile`` and each precision and resolution: parameters, forward GFLOPs,
training images/s and peak training memory (allocated and reserved) at the profile batch, batch-1
inference latency and batch-16 inference throughput. It needs no data (random inputs), writes one
tidy CSV row per measurement (docs/architecture.md, "Profile results") plus a JSON with the
settings, and logs them to MLflow (experiment ``<suite>/profile``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
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
)
PROFILE_NUM_CLASSES = 21  # PASCAL VOC's count, as in perf.md


def profile_rows(params: Params, *, device: str | None = None) -> list[dict[str, Any]]:
    """Measure every (variant, precision, resolution) of the active suite's profile settings."""
    import torch

    from pipelines.engine.measure import measure
    from refinenet.registry import build_model

    spec = params.suite.profile
    device_name = device or spec.device
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name == "cuda" and not torch.cuda.is_available():
        raise ParamsError(
            "suite.profile.device is 'cuda' but no GPU is visible. Fix: set it to 'auto' or 'cpu'."
        )
    on_gpu = device_name == "cuda"
    if on_gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dataset = params.suite.datasets[0]
    rows = []
    for variant in spec.variants:
        model_name = params.variants[variant].model
        options = resolved_model_options(params, dataset, variant)
        if "weights" in options:
            options["weights"] = None  # speed and memory do not depend on the initial weights
        for precision in spec.precisions:
            for resolution in spec.resolutions:
                torch.manual_seed(0)
                model = build_model(model_name, PROFILE_NUM_CLASSES, **options)
                figures = measure(
                    model,
                    PROFILE_NUM_CLASSES,
                    crop=resolution,
                    batch=spec.batch,
                    device=device_name,
                    precision=precision,
                    channels_last=on_gpu,
                    warmup=spec.warmup,
                    iterations=spec.iterations,
                    latency_iterations=100 if on_gpu else 2,
                    infer_batch=16 if on_gpu else 2,
                    copy_model=False,
                )
                del model
                row = {
                    "variant": variant,
                    "model": model_name,
                    "backbone": options.get("backbone", ""),
                    "precision": precision,
                    "batch": spec.batch,
                    "height": resolution,
                    "width": resolution,
                }
                row.update({k: figures.get(k) for k in COLUMNS if k not in row})
                rows.append(row)
                print(
                    f"{variant:28s} {precision:5s} {resolution:5d}px  {row['train_img_per_s']:8.2f} img/s  "
                    f"peak {row['peak_mem_alloc_gb']} GB",
                    file=sys.stderr,
                )
    return rows


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
    params: Params, rows: list[dict[str, Any]], csv_path: Path, tracking_uri: str
) -> None:
    """One MLflow run per profile (experiment ``<suite>/profile``), one nested run per row."""
    from mlflow.tracking import MlflowClient

    from pipelines.tracking import environment_tags, finite_metrics, git_state

    client = MlflowClient(tracking_uri)
    name = f"{params.suite.name}/profile"
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    tags = {"suite": params.suite.name, "kind": "profile", **git_state(params.root), **environment_tags()}
    parent = client.create_run(experiment_id, run_name="profile", tags=tags)
    for row in rows:
        run_name = f"{row['variant']}-{row['precision']}-{row['height']}px"
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
        for key in ("variant", "model", "backbone", "precision", "batch", "height", "width"):
            client.log_param(child.info.run_id, key, str(row[key]))
        for key, value in finite_metrics({k: row.get(k) for k in COLUMNS}).items():
            client.log_metric(child.info.run_id, key, value)
        client.set_terminated(child.info.run_id)
    client.log_artifact(parent.info.run_id, str(csv_path))
    client.set_terminated(parent.info.run_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default=None, help="CSV path (default: <paths.results>/profile.csv)")
    parser.add_argument("--device", default=None, choices=("cpu", "cuda"))
    parser.add_argument("--no-mlflow", action="store_true")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        rows = profile_rows(params, device=args.device)
    except ParamsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else params.path(params.paths.results) / "profile.csv"
    settings = {"suite": params.suite.name, **{k: v for k, v in vars(params.suite.profile).items()}}
    write_profile(rows, out, settings)
    if not args.no_mlflow:
        from pipelines.tracking import default_tracking_uri

        log_profile_to_mlflow(
            params, rows, out, default_tracking_uri(params.root, params.mlflow.tracking_uri)
        )
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
