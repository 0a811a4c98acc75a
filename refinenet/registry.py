"""The one model registry shared by RefineNet and the baselines.

Every builder is registered by name with `register_model` and called as
``builder(num_classes=..., **options)``. Its keyword arguments are its options: `build_model`
rejects unknown names and options with an error listing the valid ones.

Contract for every registered model (tests/test_registry.py checks it for all of them):
- ``forward(x)`` takes a normalised ``(N, 3, H, W)`` batch of any size and returns logits of shape
  ``(N, num_classes, H, W)``;
- ``model.backbone`` is the ImageNet-initialisable encoder (its parameters get the backbone
  learning-rate multiplier and its BatchNorm can be frozen); everything else is the head.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

ModelBuilder = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelBuilder] = {}
# Modules whose import registers builders; imported lazily (smp alone costs seconds to import).
_BUILDER_MODULES = ("refinenet.model", "baselines.fcn", "baselines.unet", "baselines.deeplab")


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: register ``builder`` under ``name`` (duplicates are an error)."""

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY and _REGISTRY[name] is not builder:
            raise ValueError(f"Model name {name!r} is registered twice.")
        _REGISTRY[name] = builder
        return builder

    return decorator


def _load_builders() -> None:
    for module in _BUILDER_MODULES:
        importlib.import_module(module)


def list_models() -> list[str]:
    """All registered model names, sorted."""
    _load_builders()
    return sorted(_REGISTRY)


def model_options(name: str) -> dict[str, Any]:
    """The options of model ``name`` with their defaults (``inspect.Parameter.empty`` if required)."""
    builder = _get_builder(name)
    params = inspect.signature(builder).parameters
    return {k: p.default for k, p in params.items() if k != "num_classes"}


def _get_builder(name: str) -> ModelBuilder:
    _load_builders()
    if name not in _REGISTRY:
        raise KeyError(f"Unknown model {name!r}. Valid models: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]


def build_model(name: str, num_classes: int, **options: Any) -> nn.Module:
    """Build registered model ``name`` with ``num_classes`` outputs and the given options."""
    builder = _get_builder(name)
    valid = model_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(
            f"Unknown option(s) {', '.join(map(repr, unknown))} for model {name!r}. "
            f"Valid options: {', '.join(sorted(valid)) or '(none)'}."
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    return builder(num_classes=num_classes, **options)
