"""A tiny project for the sweep tests: a small prepared synthetic dataset and a small params.yaml."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_params(*, seeds=(0,), variants=("fcn32s", "refinenet"), **recipe) -> dict:
    """A valid params mapping for a fast CPU sweep on the tiny synthetic dataset."""
    base_recipe = {
        "iterations": 4,
        "batch_size": 2,
        "crop_size": 32,
        "optimizer": "adamw",
        "lr": 0.001,
        "backbone_lr_mult": 1.0,
        "grad_clip": 1.0,
        "eval_interval": 2,
        "checkpoint_interval": 2,
        "log_interval": 1,
        "num_workers": 0,
        "device": "cpu",
        "n_prediction_images": 1,
        "measure": False,
    }
    base_recipe.update(recipe)
    suite = {
        "name": "tiny",
        "datasets": ["synthetic"],
        "variants": list(variants),
        "seeds": list(seeds),
        "model_options": {"backbone": "resnet18", "weights": None, "feature_widths": [16, 8, 8, 8]},
        "recipe": base_recipe,
        "dataset_settings": {"synthetic": {"prepare": {"n_train": 6, "n_val": 3, "size": 32}}},
        "resources": {
            "cpus_per_trial": 1,
            "gpus_per_trial": 0,
            "max_concurrent_trials": 0,
            "max_failures": 1,
        },
    }
    return {
        "variants": {
            "fcn32s": {"model": "fcn32s"},
            "refinenet": {"model": "refinenet", "options": {"cascade": "4-cascaded"}},
        },
        "suite": suite,
        "paths": {"prepared": "data/prepared", "results": "results"},
        "ray": {"storage_path": "ray_results"},
    }


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory) -> Path:
    """data/prepared/synthetic with 6 train and 3 val images of 32x32 (made once per session)."""
    from pipelines.datasets.registry import get_spec, new_writer

    root = tmp_path_factory.mktemp("prepared")
    spec = get_spec("synthetic")
    writer = new_writer(spec, root / "synthetic")
    with writer:
        spec.convert({}, writer, seed=0, n_train=6, n_val=3, size=32)
        writer.commit(sources={}, converter_version=spec.converter_version)
    return root


@pytest.fixture
def tiny_project(tmp_path, tiny_prepared):
    """A folder with params.yaml and data/prepared/synthetic; returns a writer of params."""
    (tmp_path / "data").mkdir()
    os.symlink(tiny_prepared, tmp_path / "data" / "prepared")

    def write(params: dict) -> Path:
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        return path

    write(tiny_params())
    return tmp_path, write


def run_module(module: str, *args: str, cwd: Path, env: dict | None = None, timeout: float = 300):
    """Run ``python -m module args`` in ``cwd``; fail the test with its output on a non-zero exit."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{module} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\n"
            f"stderr:\n{proc.stderr[-6000:]}"
        )
    return proc


def start_background(cmd: list[str], *, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", **(env or {})}
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def wait_until(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
