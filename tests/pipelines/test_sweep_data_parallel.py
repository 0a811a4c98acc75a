"""Data-parallel sweep trials: Ray Train workers (gloo) inside a Tune trial, logged like any trial."""

from __future__ import annotations

import pytest

from pipelines.config import ParamsError, load_params
from tests.pipelines.conftest import run_module, tiny_params


def _data_parallel_params(**resources) -> dict:
    params = tiny_params(variants=("fcn32s",))
    params["suite"]["resources"].update({"workers_per_trial": 2, "cpus_per_trial": 0.5, **resources})
    return params


@pytest.mark.slow
def test_a_two_worker_trial_completes_and_logs_like_a_normal_trial(tiny_project):
    root, write = tiny_project
    write(_data_parallel_params())
    uri = f"sqlite:///{root / 'mlflow.db'}"
    run_module("pipelines.sweep", "synthetic", "--tracking-uri", uri, cwd=root)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny/synthetic")
    runs = client.search_runs([experiment.experiment_id], "tags.kind = 'trial'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert 0.0 <= metrics["val/mIoU"] <= 1.0 and 0.0 <= metrics["val/pixel_acc"] <= 1.0
    assert metrics["world_size"] == 2 and metrics["effective_batch"] == 4
    assert run.data.params["workers_per_trial"] == "2" and run.data.params["batch_size"] == "2"
    assert run.data.params["effective_batch"] == "4"
    history = client.get_metric_history(run.info.run_id, "val/mIoU")
    assert sorted({m.step for m in history}) == [2, 4]  # the intermediate report came through Ray Train
    assert len(client.get_metric_history(run.info.run_id, "trial_done")) == 1
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "confusion_matrix.npy", "per_image_stats.npz", "predictions"} <= names
    # Ray Train kept the engine checkpoints of the trial in its own run folder.
    train_runs = list((root / "ray_results").glob("*-train/fcn32s_seed0"))
    assert len(train_runs) == 1 and any(train_runs[0].glob("checkpoint_*/last.pt"))


def test_workers_of_a_trial_need_whole_gpus(tiny_project):
    root, write = tiny_project
    path = write(_data_parallel_params(gpus_per_trial=0.5))
    with pytest.raises(ParamsError, match="need whole GPUs"):
        load_params(path)


def test_sync_bn_with_cpu_workers_fails_before_anything_runs(tiny_project):
    root, write = tiny_project
    params = _data_parallel_params()
    params["suite"]["recipe"]["sync_bn"] = True
    path = write(params)
    with pytest.raises(ParamsError, match="sync_bn: true .* needs GPUs"):
        load_params(path)
    params["suite"]["resources"]["workers_per_trial"] = 1  # one worker: sync_bn is a no-op
    assert load_params(write(params)).suite.resources.workers_per_trial == 1
