"""The Ray Tune sweep: nested MLflow runs (through a real `mlflow server`), retries, resume."""

from __future__ import annotations

import json
import sys
import time
import urllib.request

import pytest

from tests.pipelines.conftest import (
    free_port,
    kill_group,
    run_module,
    start_background,
    tiny_params,
    wait_until,
)

pytestmark = pytest.mark.slow
SECRET = "s3cr3t-cityscapes-password-123"


def _rest(base: str, path: str, payload: dict | None = None) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(f"{base}{path}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _search_runs(base: str, experiment_id: str) -> list[dict]:
    return _rest(
        base, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id], "max_results": 100}
    )["runs"]


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def test_sweep_logs_nested_trial_runs_served_by_mlflow_server(tiny_project):
    root, _ = tiny_project
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_background(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{root / 'server.db'}",
            "--default-artifact-root",
            str(root / "server-artifacts"),
            "--workers",
            "1",
        ],
        cwd=root,
    )
    try:

        def healthy():
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_until(healthy, timeout=90, what="mlflow server")
        run_module(
            "pipelines.sweep",
            "synthetic",
            "--tracking-uri",
            base,
            cwd=root,
            env={"CITYSCAPES_PASSWORD": SECRET},
        )

        experiment = _rest(base, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=tiny/synthetic")
        runs = _search_runs(base, experiment["experiment"]["experiment_id"])
        parents = [r for r in runs if _tags(r).get("kind") == "sweep"]
        trials = [r for r in runs if _tags(r).get("kind") == "trial"]
        assert len(parents) == 1 and len(trials) == 2
        parent_id = parents[0]["info"]["run_id"]
        assert parents[0]["info"]["status"] == "FINISHED"
        for trial in trials:
            tags = _tags(trial)
            assert tags["mlflow.parentRunId"] == parent_id
            assert tags["suite"] == "tiny" and tags["dataset"] == "synthetic"
            assert {"git_commit", "torch_version", "device_name", "host", "params_hash"} <= set(tags)
            assert trial["info"]["status"] == "FINISHED"
            params = {p["key"]: p["value"] for p in trial["data"]["params"]}
            assert params["opt.backbone"] == "resnet18"
            assert params["iterations"] == "4"
            metrics = {m["key"]: m["value"] for m in trial["data"]["metrics"]}
            assert 0.0 <= metrics["val/mIoU"] <= 1.0
            assert 0.0 <= metrics["val/pixel_acc"] <= 1.0
            history = _rest(
                base,
                f"/api/2.0/mlflow/metrics/get-history?run_id={trial['info']['run_id']}&metric_key=val/mIoU",
            )["metrics"]
            assert sorted(m["step"] for m in history)[:2] == [2, 4]  # a curve, not one value
            artifacts = _rest(base, f"/api/2.0/mlflow/artifacts/list?run_id={trial['info']['run_id']}")
            names = {f["path"] for f in artifacts.get("files", [])}
            assert {"metrics.json", "confusion_matrix.npy", "per_image_stats.npz"} <= names
            assert SECRET not in json.dumps(trial)
        summary = json.loads((root / "results" / "synthetic" / "trials.json").read_text())
        assert {t["trial"] for t in summary["trials"]} == {"fcn32s/seed0", "refinenet/seed0"}
        assert all(t["status"] == "FINISHED" for t in summary["trials"])
    finally:
        kill_group(server)


def test_a_trial_that_fails_once_is_retried_and_completes(tiny_project):
    root, write = tiny_project
    write(tiny_params(variants=("fcn32s",)))
    faults = root / "faults"
    run_module(
        "pipelines.sweep",
        "synthetic",
        "--tracking-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        cwd=root,
        env={"REFINENET_FAULT_ONCE_DIR": str(faults)},
    )
    assert (faults / "fcn32s_seed0.failed").exists()  # it did fail once
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny/synthetic")
    runs = client.search_runs([experiment.experiment_id], "tags.kind = 'trial'")
    assert len(runs) == 1
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.tags.get("retried") == "true"
    assert 0.0 <= runs[0].data.metrics["val/mIoU"] <= 1.0


def test_killed_sweep_resumes_without_rerunning_finished_trials(tiny_project):
    root, write = tiny_project
    params = tiny_params(
        variants=("fcn32s", "refinenet"), iterations=40, eval_interval=20, checkpoint_interval=5
    )
    params["suite"]["resources"]["max_concurrent_trials"] = 1
    write(params)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "pipelines.sweep", "synthetic", "--tracking-uri", uri]
    sweep = start_background(cmd, cwd=root)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)

    def finished_trials():
        try:
            experiment = client.get_experiment_by_name("tiny/synthetic")
            if experiment is None:
                return []
            return client.search_runs(
                [experiment.experiment_id], "tags.kind = 'trial' and attributes.status = 'FINISHED'"
            )
        except Exception:
            return []

    try:
        first = wait_until(finished_trials, timeout=240, interval=0.3, what="a finished trial")
        time.sleep(3)  # let Tune write its experiment state (TUNE_GLOBAL_CHECKPOINT_S)
    finally:
        kill_group(sweep)
    done_key = first[0].data.tags["trial_key"]
    run_module("pipelines.sweep", "synthetic", "--tracking-uri", uri, cwd=root)
    experiment = client.get_experiment_by_name("tiny/synthetic")
    runs = client.search_runs([experiment.experiment_id], "tags.kind = 'trial'")
    by_key = {r.data.tags["trial_key"]: r for r in runs}
    assert set(by_key) == {"fcn32s/seed0", "refinenet/seed0"}  # no duplicate runs
    assert all(r.info.status == "FINISHED" for r in runs)
    done_history = client.get_metric_history(by_key[done_key].info.run_id, "trial_done")
    assert len(done_history) == 1  # the finished trial did not run again
    summary = json.loads((root / "results" / "synthetic" / "trials.json").read_text())
    assert all(t["status"] == "FINISHED" for t in summary["trials"])


def test_unknown_dataset_fails_before_anything_runs(tiny_project):
    root, _ = tiny_project
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.sweep", "voc2012"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "not in the active suite" in proc.stderr
    assert not (root / "ray_results").exists()
