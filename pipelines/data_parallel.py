"""Data-parallel trials: one Tune trial trained by several Ray Train workers (`TorchTrainer`).

With ``resources.workers_per_trial > 1`` the Tune function trainable of `pipelines.sweep` is a
light driver: it starts a Ray Train V2 `TorchTrainer` (the pattern of Ray's "Tune + Train" guide;
``Tuner(trainer)`` is deprecated) with ``workers_per_trial`` workers, each with
``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs, backend NCCL on GPUs and gloo on the CPU.
Every worker calls `pipelines.engine.train.train` under the process group Ray Train set up
(DistributedDataParallel, sharded data and evaluation: see `pipelines.engine.distributed`).

Reporting: every worker calls ``ray.train.report`` after each evaluation (Ray Train needs all of
them), rank 0 with the engine checkpoint. `TuneRelay` forwards rank 0's metrics to the Tune trial
(so the MLflow logger sees the same curves as for a one-worker trial); the run's checkpoints live
in the Train run's storage (``<storage>/<sweep>-train/<trial>``). The last worker report carries
the run folder's artifacts; the driver re-reports it to Tune with its checkpoint, as a one-worker
trial does. A restarted trial (Tune retry or a resumed sweep) builds the same Train run name, so
Ray Train restores its checkpoint manager and rank 0 resumes from the latest engine checkpoint.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback

FINAL_KEY = "final_artifacts"  # set on the workers' last report; the driver reports that one itself
DRIVER_CPUS = 0.1  # the Tune function only waits for the Train run


class TuneRelay(TuneReportCallback):
    """`TuneReportCallback` that leaves the workers' final report to the driver (no duplicate)."""

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if metrics and metrics[0].get(FINAL_KEY):
            return
        super().after_report(run_context, metrics, checkpoint)


def worker_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: restore rank 0's engine checkpoint, train, report on every rank."""
    import ray
    import ray.train
    import torch

    from pipelines.engine.config import TrainConfig
    from pipelines.engine.train import train
    from pipelines.sweep import _reportable, copy_final_checkpoint

    torch.set_num_threads(max(1, int(loop_config["torch_threads"])))
    rank = ray.train.get_context().get_world_rank()
    run_dir = Path(loop_config["run_dir"])
    restored = ray.train.get_checkpoint()
    if rank == 0 and restored is not None:
        target = run_dir / "checkpoints"
        target.mkdir(parents=True, exist_ok=True)
        with restored.as_directory() as ckpt_dir:
            for item in Path(ckpt_dir).iterdir():
                if item.is_file():
                    shutil.copy2(item, target / item.name)
    config = TrainConfig(**{**loop_config["config"], "run_dir": str(run_dir)})
    node_id = ray.get_runtime_context().get_node_id()

    def reporter(metrics: dict[str, float], step: int, checkpoint_dir: str | None) -> None:
        payload = {**_reportable(metrics), "step": step, "node_id": node_id}
        if checkpoint_dir and Path(checkpoint_dir).is_dir() and any(Path(checkpoint_dir).iterdir()):
            ray.train.report(payload, checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir))
        else:
            ray.train.report(payload)

    final = train(config, reporter)
    payload = {
        **_reportable(final),
        "step": final.get("step", config.iterations),
        "node_id": node_id,
        FINAL_KEY: 1,
    }
    if rank == 0:
        with tempfile.TemporaryDirectory() as tmp:
            copy_final_checkpoint(run_dir, Path(tmp))
            ray.train.report(payload, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        ray.train.report(payload)


def run_data_parallel_trial(
    *,
    key: str,
    config: dict[str, Any],
    run_dir: Path,
    workers: int,
    cpus_per_worker: float,
    gpus_per_worker: float,
    torch_threads: int,
    train_storage: str,
) -> None:
    """The Tune trial's driver: run ``workers`` Ray Train workers, report the result to Tune."""
    import ray
    from ray import train as ray_train
    from ray import tune
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipelines.sweep import _reportable

    use_gpu = gpus_per_worker > 0
    resources: dict[str, float] = {"CPU": cpus_per_worker}
    if use_gpu:
        resources["GPU"] = gpus_per_worker
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"config": config, "run_dir": str(run_dir), "torch_threads": torch_threads},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray_train.ScalingConfig(
            num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=ray_train.RunConfig(
            name=key.replace("/", "_"),
            storage_path=train_storage,
            callbacks=[TuneRelay()],
            checkpoint_config=ray_train.CheckpointConfig(num_to_keep=2),
            failure_config=ray_train.FailureConfig(max_failures=0),  # retries are Tune's
        ),
    )
    result = trainer.fit()
    metrics = result.metrics or {}
    payload = {
        **_reportable(metrics),
        "step": metrics.get("step", config.get("iterations", 0)),
        "node_id": metrics.get("node_id", ray.get_runtime_context().get_node_id()),
        "trial_done": 1,
    }
    if result.checkpoint is None:
        tune.report(payload)
        return
    with result.checkpoint.as_directory() as ckpt_dir:
        tune.report(payload, checkpoint=tune.Checkpoint.from_directory(ckpt_dir))
