"""MLflow record of sweeps and trials (docs/architecture.md, "MLflow record").

One process writes: the Ray Tune driver, through `MlflowTrialLogger` (a Tune callback). Trials never
talk to MLflow, so a SQLite store is safe and a cluster needs no MLflow access from its workers.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SECRET_ENV_VARS = ("CITYSCAPES_USERNAME", "CITYSCAPES_PASSWORD")


def default_tracking_uri(repo_root: str | Path, configured: str | None = None) -> str:
    """``configured`` if given, else ``MLFLOW_TRACKING_URI``, else an absolute sqlite store."""
    if configured:
        return configured
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(repo_root).resolve() / 'mlflow.db'}"


def git_state(repo_root: str | Path) -> dict[str, str]:
    """``git_commit`` and ``git_dirty`` of the repository (``unknown`` outside git)."""

    def run(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo_root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = run("rev-parse", "HEAD")
        dirty = "true" if run("status", "--porcelain", "--untracked-files=no") else "false"
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "unknown", "unknown"
    return {"git_commit": commit, "git_dirty": dirty}


def environment_tags() -> dict[str, str]:
    import torch

    cuda = torch.version.cuda or "none"
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "torch_version": torch.__version__,
        "cuda_version": cuda,
        "device_name": device,
        "host": platform.node(),
    }


def flatten_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested values to MLflow params (strings; ``None`` -> ``"None"``)."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        elif isinstance(value, list | tuple):
            flat[name] = json.dumps(list(value))
        else:
            flat[name] = str(value)
    return flat


def check_no_secrets(values: Mapping[str, str]) -> None:
    """Refuse to log a value equal to a dataset credential from the environment."""
    secrets = [os.environ[k] for k in SECRET_ENV_VARS if os.environ.get(k)]
    for key, value in values.items():
        if any(secret and secret in str(value) for secret in secrets):
            raise RuntimeError(f"Refusing to log {key!r} to MLflow: its value contains a dataset credential.")


def finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Numeric, finite entries of ``metrics`` (MLflow rejects NaN in some stores; absent = unknown)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out
