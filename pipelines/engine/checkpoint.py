"""Atomic, safely loadable training checkpoints.

A checkpoint holds the model, optimizer, scheduler and scaler states, the RNG states (python,
numpy, torch, CUDA), the data position, the step, the resolved config and the model name and
options. Everything is stored as tensors or plain python values so that
``torch.load(..., weights_only=True)`` (no pickle code execution) can read it back. It is written
to a temporary file in the same folder and moved into place with ``os.replace``, so a killed run
never leaves a half-written ``last.pt``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


class CheckpointMismatchError(ValueError):
    """A checkpoint belongs to a different model, options or recipe than the run resuming it."""


def rng_states() -> dict[str, Any]:
    """All RNG states as tensors and plain values."""
    version, mt_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    states: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(mt_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    py = states["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npst = states["numpy"]
    np.random.set_state(
        (npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["gauss"])
    )
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        cuda_states = states["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (tensors and plain values only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist.")
    return torch.load(path, map_location=map_location, weights_only=True)


def check_compatible(
    state: dict[str, Any],
    model: str,
    model_options: dict[str, Any],
    config: dict[str, Any],
    free_fields: frozenset[str],
    path: str | Path,
) -> None:
    """Raise `CheckpointMismatchError` when ``state`` is not a checkpoint of this model and recipe."""
    fix = f"Fix: use another run_dir, or delete {path} to start over."
    if state.get("model_name") != model or dict(state.get("model_options", {})) != dict(model_options):
        raise CheckpointMismatchError(
            f"Checkpoint {path} is of model {state.get('model_name')!r} with options "
            f"{state.get('model_options')}, but this run trains {model!r} with options {model_options}. {fix}"
        )
    saved = {k: v for k, v in state.get("config", {}).items() if k not in free_fields}
    current = {k: v for k, v in config.items() if k not in free_fields}
    diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if diff:
        details = "; ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}" for k in diff)
        raise CheckpointMismatchError(
            f"Checkpoint {path} was written with a different config ({details}). {fix}"
        )
