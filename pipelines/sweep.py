"""The Ray Tune sweep of one dataset: every (variant x seed) trial of the active suite.

``python -m pipelines.sweep <dataset>`` (the DVC ``sweep@<dataset>`` stage):
- trials run `pipelines.engine.train.train` on local Ray by default, or on an existing cluster
  (``--address``, ``ray.address`` in params.yaml, or ``RAY_ADDRESS``);
- resources per trial, retries (``FailureConfig``) and concurrency come from params.yaml; with
  ``resources.workers_per_trial > 1`` a trial is data parallel over that many Ray Train workers
  (`pipelines.data_parallel`, docs/multi_gpu.md);
- each trial reports its engine checkpoints through ``tune.report``; re-running an interrupted sweep
  restores the Tune experiment (``Tuner.restore``): finished trials are not run again, unfinished
  ones continue from their last checkpoint;
- the driver alone writes MLflow (`MlflowTrialLogger`): one parent run per sweep, one nested run per
  trial with params, tags, metric curves and artifacts;
- ``results/<dataset>/trials.json`` (and ``summary.json``, the DVC metrics) list every trial.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ray import tune

from pipelines.config import Params, ParamsError, load_params, params_hash, plan_dataset_trials
from pipelines.engine.measure import MEASUREMENT_KEYS as ENGINE_MEASUREMENT_KEYS
from pipelines.tracking import (
    check_no_secrets,
    default_tracking_uri,
    environment_tags,
    finite_metrics,
    flatten_params,
    git_state,
)

# Result keys logged to MLflow besides the "train/..." and "val/..." curves.
MEASUREMENT_KEYS = (*ENGINE_MEASUREMENT_KEYS, "world_size", "effective_batch")
ARTIFACT_FILES = (
    "config.json",
    "metrics.json",
    "history.jsonl",
    "confusion_matrix.npy",
    "per_class_iou.json",
    "per_image_stats.npz",
)
FAULT_ENV = "REFINENET_FAULT_ONCE_DIR"  # testing hook: each trial fails once when set (see tests)


class SweepError(RuntimeError):
    """The sweep cannot start (missing data, bad address, ...)."""


def resolved_options(model: str, options: dict[str, Any]) -> dict[str, Any]:
    """Every option of ``model`` with the value it takes: builder defaults, the given options, and
    the values a preset fills in (``model.options``, built on the meta device: no memory, no weights)."""
    import torch

    from refinenet.registry import build_model, model_options

    resolved = {**model_options(model), **options}
    build_options = {**options, **({"weights": None} if "weights" in resolved else {})}
    with torch.device("meta"):
        net = build_model(model, 2, **build_options)
    preset_values = {k: v for k, v in (getattr(net, "options", None) or {}).items() if k != "weights"}
    return {**resolved, **preset_values}


def _reportable(metrics: dict[str, Any]) -> dict[str, float]:
    keep = {k: v for k, v in metrics.items() if "/" in k or k in MEASUREMENT_KEYS or k == "trial_done"}
    return finite_metrics(keep)


# ---------------------------------------------------------------------------------------------
# The trainable (runs in a Ray worker)


def copy_final_checkpoint(run_dir: Path, out: Path) -> None:
    """``last.pt`` and ``artifacts/`` (run folder files and predictions) of a finished run into ``out``."""
    checkpoints = run_dir / "checkpoints"
    for item in checkpoints.iterdir() if checkpoints.is_dir() else []:
        if item.is_file():
            shutil.copy2(item, out / item.name)
    artifacts = out / "artifacts"
    artifacts.mkdir()
    for name in ARTIFACT_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, artifacts / name)
    if (run_dir / "predictions").is_dir():
        shutil.copytree(run_dir / "predictions", artifacts / "predictions")


def run_trial(
    trial: dict[str, Any],
    *,
    configs: dict[str, dict[str, Any]],
    torch_threads: int,
    data_parallel: dict[str, Any] | None = None,
) -> None:
    """Ray Tune function trainable: one trial = one `train` call, reporting through ``tune.report``.

    ``data_parallel`` (``workers``, ``cpus_per_worker``, ``gpus_per_worker``, ``train_storage``):
    the trial runs on several Ray Train workers instead (`pipelines.data_parallel`).
    """
    import ray
    import torch

    from pipelines.engine.config import TrainConfig
    from pipelines.engine.train import train

    torch.set_num_threads(max(1, torch_threads))
    key = trial["trial"]
    context = tune.get_context()
    run_dir = Path(context.get_trial_dir()) / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as ckpt_dir:
            target = run_dir / "checkpoints"
            target.mkdir(exist_ok=True)
            for item in Path(ckpt_dir).iterdir():
                if item.is_file():
                    shutil.copy2(item, target / item.name)

    fault_dir = os.environ.get(FAULT_ENV)
    if fault_dir:
        marker = Path(fault_dir) / (key.replace("/", "_") + ".failed")
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("injected failure\n")
            raise RuntimeError(f"Injected failure for {key} ({FAULT_ENV} is set).")

    if data_parallel is not None:
        from pipelines.data_parallel import run_data_parallel_trial

        run_data_parallel_trial(
            key=key, config=configs[key], run_dir=run_dir, torch_threads=torch_threads, **data_parallel
        )
        return

    config = TrainConfig(**{**configs[key], "run_dir": str(run_dir)})
    node_id = ray.get_runtime_context().get_node_id()

    def reporter(metrics: dict[str, float], step: int, checkpoint_dir: str | None) -> None:
        payload = {**_reportable(metrics), "step": step, "node_id": node_id}
        if checkpoint_dir and Path(checkpoint_dir).is_dir() and any(Path(checkpoint_dir).iterdir()):
            tune.report(payload, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))
        else:
            tune.report(payload)

    final = train(config, reporter)
    # The last report carries the trial's artifacts, so that the driver can log them to MLflow
    # wherever the trial ran (they travel through the Tune storage path).
    with tempfile.TemporaryDirectory() as tmp:
        copy_final_checkpoint(run_dir, Path(tmp))
        payload = {
            **_reportable(final),
            "step": final.get("step", config.iterations),
            "node_id": node_id,
            "trial_done": 1,
        }
        tune.report(payload, checkpoint=tune.Checkpoint.from_directory(tmp))


# ---------------------------------------------------------------------------------------------
# The MLflow logger (runs in the driver)


class MlflowTrialLogger(tune.Callback):
    """Tune callback: nested MLflow run per trial under the sweep's parent run.

    Holds only strings, so that Tune can pickle it with the experiment state (resume).
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        trials: dict[str, dict[str, Any]],
        base_tags: dict[str, str],
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.trials = trials  # key -> {"variant", "seed", "params"}
        self.base_tags = base_tags
        self._run_ids: dict[str, str] = {}
        self._client = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def _run_id(self, trial) -> str:
        key = trial.config["trial"]
        if key in self._run_ids:
            return self._run_ids[key]
        existing = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' and tags.trial_key = '{key}'",
            max_results=1,
        )
        if existing:
            run_id = existing[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            info = self.trials[key]
            tags = {
                **self.base_tags,
                "kind": "trial",
                "mlflow.parentRunId": self.parent_run_id,
                "trial_key": key,
                "variant": info["variant"],
                "model": info["model"],
                "seed": str(info["seed"]),
                "params_hash": params_hash(info["params"]),
            }
            run = self.client.create_run(self.experiment_id, run_name=key.replace("/", "-"), tags=tags)
            run_id = run.info.run_id
            params = info["params"]
            check_no_secrets(params)
            items = list(params.items())
            from mlflow.entities import Param

            for start in range(0, len(items), 90):
                self.client.log_batch(
                    run_id, params=[Param(k, v[:6000]) for k, v in items[start : start + 90]]
                )
        self._run_ids[key] = run_id
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._run_id(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        from mlflow.entities import Metric

        run_id = self._run_id(trial)
        step = int(result.get("step", 0))
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in _reportable(result).items()]
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)
        if "node_id" in result:
            self.client.set_tag(run_id, "node_id", str(result["node_id"]))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        run_id = self._run_id(trial)
        checkpoint = trial.checkpoint
        if checkpoint is not None:
            with checkpoint.as_directory() as path:
                artifacts = Path(path) / "artifacts"
                if artifacts.is_dir():
                    self.client.log_artifacts(run_id, str(artifacts))
        self.client.set_terminated(run_id, status="FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        run_id = self._run_id(trial)
        message = _trial_error_text(trial)
        self.client.set_tag(run_id, "error", message[-4000:])
        self.client.set_terminated(run_id, status="FAILED")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        run_id = self._run_id(trial)
        self.client.set_tag(run_id, "retried", "true")


def _trial_error_text(trial) -> str:
    path = getattr(trial, "error_file", None) or ""
    for candidate in (path, os.path.join(getattr(trial, "local_path", "") or "", "error.txt")):
        if candidate and os.path.isfile(candidate):
            return Path(candidate).read_text(errors="replace")
    return str(getattr(trial, "error_msg", None) or "trial failed")


# ---------------------------------------------------------------------------------------------
# The driver


def _ensure_parent_run(client, experiment_name: str, sweep_key: str, tags: dict[str, str]) -> tuple[str, str]:
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(experiment_name)
    existing = client.search_runs(
        [experiment_id],
        filter_string=f"tags.kind = 'sweep' and tags.sweep_key = '{sweep_key}'",
        max_results=1,
    )
    if existing:
        run_id = existing[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return experiment_id, run_id
    run = client.create_run(
        experiment_id, run_name=f"sweep-{sweep_key}", tags={**tags, "kind": "sweep", "sweep_key": sweep_key}
    )
    return experiment_id, run.info.run_id


def _init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(**kwargs)


def run_sweep(
    params: Params,
    dataset: str,
    *,
    address: str | None = None,
    tracking_uri: str | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) the sweep of ``dataset``; return one summary row per trial."""
    from mlflow.tracking import MlflowClient

    if dataset not in params.suite.datasets:
        raise SweepError(
            f"Dataset {dataset!r} is not in the active suite {params.suite.name!r} "
            f"(its datasets: {', '.join(params.suite.datasets)})."
        )
    prepared = params.path(params.paths.prepared) / dataset
    if not (prepared / "meta.json").is_file():
        raise SweepError(
            f"Prepared dataset {prepared} is missing. Fix: run `python -m pipelines.prepare {dataset}` "
            f"(or `dvc repro prepare@{dataset}`) first."
        )
    trials = plan_dataset_trials(params, dataset)
    suite = params.suite
    sweep_key = f"{suite.name}-{dataset}-{params_hash([t.config for t in trials])}"
    storage = params.ray.storage_path
    storage_path = storage if "://" in storage else str(params.path(storage))
    if "://" not in storage_path:
        Path(storage_path).mkdir(parents=True, exist_ok=True)
    tracking_uri = default_tracking_uri(params.root, tracking_uri or params.mlflow.tracking_uri)

    base_tags = {"suite": suite.name, "dataset": dataset, **git_state(params.root), **environment_tags()}
    client = MlflowClient(tracking_uri)
    experiment_id, parent_run_id = _ensure_parent_run(client, f"{suite.name}/{dataset}", sweep_key, base_tags)

    resources = suite.resources
    workers = resources.workers_per_trial
    trial_info = {}
    for t in trials:
        options = resolved_options(t.config["model"], t.config["model_options"])
        flat = {
            "model": t.config["model"],
            "variant": t.variant,
            "seed": str(t.seed),
            **flatten_params(
                {k: v for k, v in t.config.items() if k not in ("model_options", "run_dir", "model")}
            ),
            **flatten_params(options, prefix="opt."),
            "workers_per_trial": str(workers),
            "effective_batch": str(t.config["batch_size"] * workers),
        }
        trial_info[t.key] = {"variant": t.variant, "seed": t.seed, "model": t.config["model"], "params": flat}
    logger = MlflowTrialLogger(tracking_uri, experiment_id, parent_run_id, trial_info, base_tags)

    # Save Tune's experiment state often, so that a killed sweep resumes where it stopped.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    _init_ray(address or params.ray.address)
    experiment_path = f"{storage_path.rstrip('/')}/{sweep_key}"
    data_parallel = None
    trial_resources = {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial}
    if workers > 1:  # the trial function only drives a Ray Train run; the workers hold the resources
        from pipelines.data_parallel import DRIVER_CPUS

        data_parallel = {
            "workers": workers,
            "cpus_per_worker": resources.cpus_per_trial,
            "gpus_per_worker": resources.gpus_per_trial,
            "train_storage": f"{experiment_path}-train",
        }
        trial_resources = {"cpu": DRIVER_CPUS, "gpu": 0}
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial,
            configs={t.key: t.config for t in trials},
            torch_threads=resources.torch_threads,
            data_parallel=data_parallel,
        ),
        trial_resources,
    )
    if tune.Tuner.can_restore(experiment_path):
        print(f"Resuming the interrupted sweep {experiment_path}", file=sys.stderr)
        tuner = tune.Tuner.restore(experiment_path, trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([t.key for t in trials])},
            tune_config=tune.TuneConfig(max_concurrent_trials=resources.max_concurrent_trials or None),
            run_config=tune.RunConfig(
                name=sweep_key,
                storage_path=storage_path,
                failure_config=tune.FailureConfig(max_failures=resources.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[logger],
                verbose=1,
            ),
        )
    grid = tuner.fit()

    rows = []
    for result in grid:
        key = result.config.get("trial") if result.config else None
        info = trial_info.get(key, {})
        metrics = _reportable(result.metrics or {})
        rows.append(
            {
                "trial": key,
                "variant": info.get("variant"),
                "seed": info.get("seed"),
                "status": "FAILED" if result.error else "FINISHED",
                "error": str(result.error).splitlines()[0] if result.error else None,
                "metrics": metrics,
            }
        )
    rows.sort(key=lambda r: str(r["trial"]))
    failed = [r["trial"] for r in rows if r["status"] == "FAILED"]
    client.set_tag(parent_run_id, "failed_trials", ",".join(failed) or "none")
    client.set_terminated(parent_run_id, status="FAILED" if failed else "FINISHED")

    results_dir = params.path(params.paths.results) / dataset
    results_dir.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(
        results_dir / "trials.json",
        {
            "suite": suite.name,
            "dataset": dataset,
            "sweep_key": sweep_key,
            "mlflow_parent_run": parent_run_id,
            "trials": rows,
        },
    )
    summary = {
        r["trial"]: {k: r["metrics"].get(k) for k in ("val/mIoU", "val/pixel_acc", "val/mean_acc")}
        for r in rows
    }
    _write_json_atomic(results_dir / "summary.json", summary)
    if failed:
        print(
            f"WARNING: {len(failed)} trial(s) failed: {', '.join(failed)} (listed in the report).",
            file=sys.stderr,
        )
    return rows


def _write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument(
        "--address", default=None, help="Ray cluster address (default: params, RAY_ADDRESS, local)"
    )
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a trial failed")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        rows = run_sweep(params, args.dataset, address=args.address, tracking_uri=args.tracking_uri)
    except (ParamsError, SweepError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.strict and any(r["status"] == "FAILED" for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
