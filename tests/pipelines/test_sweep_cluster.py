"""A two-node Ray cluster on one machine (head + a second `ray start`, loopback): trials run on both."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.pipelines.conftest import REPO, free_port, run_module

pytestmark = pytest.mark.slow


def _ray(*args: str, env: dict) -> None:
    ray_cli = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
    proc = subprocess.run([ray_cli, *args], env=env, capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        raise AssertionError(f"ray {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def test_two_node_cluster_runs_trials_on_both_nodes(tiny_project):
    root, _ = tiny_project
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    common = ["--num-cpus=1", "--disable-usage-stats", "--node-ip-address=127.0.0.1"]
    try:
        _ray(
            "start",
            "--head",
            f"--port={port}",
            "--include-dashboard=false",
            '--resources={"head_node": 1}',
            *common,
            env=env,
        )
        _ray("start", f"--address=127.0.0.1:{port}", '--resources={"second_node": 1}', *common, env=env)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        run_module(
            "pipelines.sweep", "synthetic", "--address", f"127.0.0.1:{port}", "--tracking-uri", uri, cwd=root
        )
    finally:
        subprocess.run(["ray", "stop", "--force"], env=env, capture_output=True, timeout=120)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny/synthetic")
    runs = client.search_runs([experiment.experiment_id], "tags.kind = 'trial'")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    nodes = {r.data.tags["node_id"] for r in runs}
    assert len(nodes) == 2, f"both trials ran on one node: {nodes}"
