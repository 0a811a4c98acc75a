"""params.yaml -> typed, validated suite configuration (the only place that reads the params file).

`params.yaml` holds the suites (``suites.quick``, ``suites.paper``) and the switch ``suite:`` that
aliases one of them (``suite: *quick`` or ``suite: *paper``). Everything a stage needs is validated
here once, before anything runs: unknown keys, wrong types, unknown datasets, models, model
options and recipe fields fail with a message naming the key and the allowed values. Plain values
(`TrainConfig`, lists of trials) flow inward from here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ParamsError(ValueError):
    """params.yaml has a key or value that is not allowed."""


# ---------------------------------------------------------------------------------------------
# Generic validation of a mapping against a dataclass (types from the type hints)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_value(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, key)
            except ParamsError as error:
                errors.append(str(error))
        raise ParamsError(f"{key}: {value!r} is not a {_type_name(tp)}.")
    if origin is typing.Literal:
        if value not in args:
            raise ParamsError(
                f"{key}: {value!r} is not allowed. Allowed values: {', '.join(map(repr, args))}."
            )
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ParamsError(f"{key}: expected a list, got {value!r}.")
        item_type = args[0] if args else Any
        items = [_check_value(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{key}: expected a mapping, got {value!r}.")
        value_type = args[1] if len(args) == 2 else Any
        return {str(k): _check_value(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, key)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamsError(f"{key}: expected a number, got {value!r}.")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key}: expected an integer, got {value!r}.")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{key}: expected true or false, got {value!r}.")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key}: expected a string, got {value!r}.")
        return value
    return value


def from_mapping(cls: type, mapping: Any, key: str) -> Any:
    """Build dataclass ``cls`` from ``mapping``; unknown keys and wrong types raise `ParamsError`."""
    if not isinstance(mapping, dict):
        raise ParamsError(
            f"{key}: expected a mapping with keys {', '.join(_field_names(cls))}, got {mapping!r}."
        )
    hints = typing.get_type_hints(cls)
    names = _field_names(cls)
    unknown = sorted(set(mapping) - set(names))
    if unknown:
        raise ParamsError(
            f"{key}: unknown key(s) {', '.join(map(repr, unknown))}. Allowed keys: {', '.join(names)}."
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in mapping:
            kwargs[f.name] = _check_value(mapping[f.name], hints[f.name], f"{key}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ParamsError(f"{key}: missing required key {f.name!r}.")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as error:
        if isinstance(error, ParamsError):
            raise
        raise ParamsError(f"{key}: {error}") from error


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


# ---------------------------------------------------------------------------------------------
# The suite schema


@dataclass(frozen=True)
class VariantSpec:
    """A named model configuration: a registry name and its options."""

    model: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    """Per-dataset settings of a suite: converter options, recipe and model-option overrides."""

    prepare: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ResourcesSpec:
    """Ray resources per trial (fractions allowed) and retry policy.

    ``workers_per_trial > 1``: each trial is data parallel over that many Ray Train workers, and
    ``cpus_per_trial`` / ``gpus_per_trial`` are per worker (docs/multi_gpu.md); the recipe's
    ``batch_size`` is then per worker.
    """

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent_trials: int = 0  # 0 = as many as resources allow
    max_failures: int = 1
    torch_threads: int = 1
    workers_per_trial: int = 1


@dataclass(frozen=True)
class ProfileSpec:
    """What the `profile` stage measures (speed and memory, no data needed)."""

    variants: list[str] = field(default_factory=list)
    batch: int = 2
    crop_size: int = 64
    precisions: list[Literal["fp32", "bf16"]] = field(default_factory=lambda: ["fp32"])
    resolutions: list[int] = field(default_factory=lambda: [64])
    warmup: int = 1
    iterations: int = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass(frozen=True)
class SuiteSpec:
    """One suite: which datasets, variants and seeds, with which recipe and resources."""

    name: str
    datasets: list[str]
    variants: list[str]
    seeds: list[int]
    recipe: dict[str, Any] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)
    dataset_settings: dict[str, DatasetSpec] = field(default_factory=dict)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    profile: ProfileSpec = field(default_factory=ProfileSpec)


@dataclass(frozen=True)
class PathsSpec:
    raw: str = "data/raw"
    prepared: str = "data/prepared"
    results: str = "results"
    reports: str = "reports"


@dataclass(frozen=True)
class RaySpec:
    """``address``: None starts a local Ray (or joins ``RAY_ADDRESS`` when set)."""

    address: str | None = None
    storage_path: str = "ray_results"


@dataclass(frozen=True)
class MlflowSpec:
    """``tracking_uri``: None = ``MLFLOW_TRACKING_URI`` if set, else sqlite at ``<repo>/mlflow.db``."""

    tracking_uri: str | None = None


@dataclass(frozen=True)
class Params:
    suite: SuiteSpec
    variants: dict[str, VariantSpec]
    paths: PathsSpec = field(default_factory=PathsSpec)
    ray: RaySpec = field(default_factory=RaySpec)
    mlflow: MlflowSpec = field(default_factory=MlflowSpec)
    suites: dict[str, Any] = field(default_factory=dict)  # every suite; `suite` is the active one
    root: str = "."  # folder of params.yaml; relative paths resolve against it

    def path(self, relative: str) -> Path:
        """``relative`` resolved against the folder of params.yaml."""
        p = Path(relative)
        return p if p.is_absolute() else (Path(self.root) / p).resolve()


def known_datasets() -> list[str]:
    from pipelines.datasets.registry import list_datasets

    return list_datasets()


def _validate_params(params: Params) -> None:
    from pipelines.engine.config import TrainConfig
    from refinenet.registry import list_models, model_options

    suite = params.suite
    valid_datasets = known_datasets()
    for ds in suite.datasets:
        if ds not in valid_datasets:
            raise ParamsError(
                f"suite.datasets: unknown dataset {ds!r}. Valid datasets: {', '.join(valid_datasets)}."
            )
    for ds in suite.dataset_settings:
        if ds not in valid_datasets:
            raise ParamsError(
                f"suite.dataset_settings: unknown dataset {ds!r}. "
                f"Valid datasets: {', '.join(valid_datasets)}."
            )
    models = list_models()
    for name, variant in params.variants.items():
        if variant.model not in models:
            raise ParamsError(
                f"variants.{name}.model: unknown model {variant.model!r}. Valid models: {', '.join(models)}."
            )
        valid = model_options(variant.model)
        for opt in variant.options:
            if opt not in valid:
                raise ParamsError(
                    f"variants.{name}.options: unknown option {opt!r} for model {variant.model!r}. "
                    f"Valid options: {', '.join(sorted(valid))}."
                )
    for name in suite.variants + suite.profile.variants:
        if name not in params.variants:
            raise ParamsError(
                f"suite.variants: unknown variant {name!r}. Defined variants: {', '.join(params.variants)}."
            )
    if not suite.seeds:
        raise ParamsError("suite.seeds: give at least one seed, e.g. [0].")
    _validate_resources(suite.resources)
    recipe_fields = {f.name for f in dataclasses.fields(TrainConfig)} - _ENGINE_OWNED_FIELDS
    recipes = [("suite.recipe", suite.recipe)] + [
        (f"suite.dataset_settings.{ds}.recipe", s.recipe) for ds, s in suite.dataset_settings.items()
    ]
    for key, recipe in recipes:
        for name in recipe:
            if name not in recipe_fields:
                raise ParamsError(
                    f"{key}: unknown recipe field {name!r}. "
                    f"Allowed fields: {', '.join(sorted(recipe_fields))}."
                )
    # Type-check every resolved trial config, and build every model on the meta device (no memory,
    # no weights) so that a bad option value fails here, before anything runs.
    import torch

    from refinenet.registry import build_model

    for ds in suite.datasets:
        for variant in dict.fromkeys(suite.variants + suite.profile.variants):
            config = trial_config(params, ds, variant, suite.seeds[0], run_dir="-")
            resources = suite.resources
            if config.sync_bn and resources.workers_per_trial > 1 and resources.gpus_per_trial == 0:
                raise ParamsError(
                    f"recipe sync_bn: true (dataset {ds}) needs GPUs: SyncBatchNorm does not run on the "
                    "CPU. Fix: set gpus_per_trial >= 1, or sync_bn false for CPU data-parallel trials."
                )
            options = dict(config.model_options)
            if config.freeze_backbone_bn and options.get("weights") is None:
                raise ParamsError(
                    f"suite.recipe.freeze_backbone_bn: true with variant {variant!r} on a randomly "
                    "initialised "
                    "backbone (weights: null) leaves its BatchNorm statistics at their initial values, so "
                    "deep ResNets diverge. Fix: weights: imagenet, or freeze_backbone_bn: false."
                )
            if "weights" in options:
                options["weights"] = None
            try:
                with torch.device("meta"):
                    build_model(config.model, 2, **options)
            except (ValueError, TypeError, KeyError) as error:
                raise ParamsError(f"variants.{variant} (dataset {ds}): {error}") from error


def _validate_resources(resources: ResourcesSpec) -> None:
    key = "suite.resources"
    if resources.workers_per_trial < 1:
        raise ParamsError(f"{key}.workers_per_trial: {resources.workers_per_trial} must be >= 1.")
    if resources.cpus_per_trial <= 0 or resources.gpus_per_trial < 0:
        raise ParamsError(f"{key}: cpus_per_trial must be > 0 and gpus_per_trial >= 0.")
    if resources.workers_per_trial > 1 and 0 < resources.gpus_per_trial < 1:
        raise ParamsError(
            f"{key}.gpus_per_trial: {resources.gpus_per_trial} with workers_per_trial "
            f"{resources.workers_per_trial}: the workers of one data-parallel trial need whole GPUs "
            "(NCCL cannot put two ranks on one GPU). Fix: gpus_per_trial 1, or workers_per_trial 1 to "
            "share GPUs between single-worker trials."
        )


# Fields the sweep fills in per trial; everything else in TrainConfig is recipe.
_ENGINE_OWNED_FIELDS = {"model", "model_options", "dataset_root", "run_dir", "seed"}


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; raise `ParamsError` naming the key and the allowed values."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} does not exist. Fix: run from the repository root, or pass --params PATH.")
    with path.open() as fh:
        raw = yaml.safe_load(fh) or {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level.")
    raw = dict(raw)
    raw["root"] = str(path.resolve().parent)
    params = from_mapping(Params, raw, "params")
    _validate_params(params)
    return params


# ---------------------------------------------------------------------------------------------
# From params to plain per-trial values


def resolved_model_options(params: Params, dataset: str, variant: str) -> dict[str, Any]:
    """Variant options over suite-wide and per-dataset model options (variant wins)."""
    from refinenet.registry import model_options

    spec = params.variants[variant]
    valid = model_options(spec.model)
    options: dict[str, Any] = {}
    ds_spec = params.suite.dataset_settings.get(dataset, DatasetSpec())
    for source in (params.suite.model_options, ds_spec.model_options):
        options.update({k: v for k, v in source.items() if k in valid})
    options.update(spec.options)
    return options


def trial_config(params: Params, dataset: str, variant: str, seed: int, *, run_dir: str):
    """The `TrainConfig` of one trial (suite recipe, then per-dataset recipe)."""
    from pipelines.engine.config import TrainConfig

    recipe: dict[str, Any] = dict(params.suite.recipe)
    recipe.update(params.suite.dataset_settings.get(dataset, DatasetSpec()).recipe)
    values = dict(
        model=params.variants[variant].model,
        model_options=resolved_model_options(params, dataset, variant),
        dataset_root=str(params.path(params.paths.prepared) / dataset),
        run_dir=run_dir,
        seed=seed,
        **recipe,
    )
    return from_mapping(TrainConfig, values, f"trial {dataset}/{variant}/seed{seed}")


@dataclass(frozen=True)
class TrialSpec:
    """One trial of a sweep: a variant and a seed with its resolved `TrainConfig` fields."""

    key: str  # "<variant>/seed<seed>"
    variant: str
    seed: int
    config: dict[str, Any]  # TrainConfig fields; run_dir is filled in where the trial runs


def plan_dataset_trials(params: Params, dataset: str) -> list[TrialSpec]:
    """The trial grid of ``dataset``: the suite's variants x seeds."""
    trials = []
    for variant in params.suite.variants:
        for seed in params.suite.seeds:
            config = trial_config(params, dataset, variant, seed, run_dir="-")
            trials.append(TrialSpec(f"{variant}/seed{seed}", variant, seed, dataclasses.asdict(config)))
    return trials


def params_hash(obj: Any) -> str:
    """A short stable hash of a JSON-serialisable value (for MLflow tags)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
