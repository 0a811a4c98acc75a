"""`TrainConfig`: the whole recipe of one training run as plain, validated data.

The engine never reads files to configure itself: `pipelines.config` (params.yaml) and the
`pipelines.train` CLI build a `TrainConfig` and hand it in. Defaults follow the released RefineNet
code where it fixes a value (paper.md §2): SGD with momentum 0.9 and weight decay 5e-4, backbone
learning-rate multiplier 0.1, random scaling 0.7-1.3, horizontal flip, crop 400.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("poly", "step", "constant")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")

# Fields that may differ between a run and its resumption (they do not change what is learned).
# run_dir: a Tune trial restored in a new Ray session (or by a Ray Train restart) resumes a copy
# of its checkpoint in a new trial folder.
RESUME_FREE_FIELDS = frozenset(
    {
        "run_dir",
        "stop_after",
        "num_workers",
        "log_interval",
        "measure",
        "measure_iterations",
        "n_prediction_images",
        "device",
    }
)


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"TrainConfig.{name}={value!r} is not allowed: {allowed}.")


@dataclass(frozen=True)
class TrainConfig:
    """One training run: model, data, optimisation recipe, evaluation and measurement settings.

    ``model_options`` is kept as a plain (copied, key-sorted) dict so that the config stays
    JSON-serialisable and picklable (Ray); treat it as read-only.
    """

    model: str
    dataset_root: str
    run_dir: str
    model_options: dict[str, Any] = field(default_factory=dict)
    train_split: str = "train"
    val_split: str = "val"
    seed: int = 0
    # optimisation
    iterations: int = 1000
    batch_size: int = 8
    crop_size: int = 400
    scale_range: tuple[float, float] = (0.7, 1.3)
    hflip: bool = True
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    backbone_lr_mult: float = 0.1
    schedule: Literal["poly", "step", "constant"] = "poly"
    poly_power: float = 0.9
    step_milestones: tuple[int, ...] = ()
    step_gamma: float = 0.1
    warmup_iters: int = 0
    grad_clip: float | None = None
    freeze_backbone_bn: bool = False
    # data parallel (world size > 1): batch_size is per worker; BatchNorm statistics over the global batch
    sync_bn: bool = False
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    deterministic: bool = True
    num_workers: int = 2
    # bookkeeping
    eval_interval: int = 500
    checkpoint_interval: int = 500
    log_interval: int = 50
    stop_after: int | None = None
    # evaluation
    eval_scales: tuple[float, ...] = (1.0,)
    eval_flip: bool = False
    eval_multiscale_scales: tuple[float, ...] = ()
    sliding_window: tuple[int, int] | None = None
    boundary_width: int = 3
    n_prediction_images: int = 4
    max_eval_images: int | None = None
    # measurements
    measure: bool = False
    measure_iterations: int = 20

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.model, str) or not self.model:
            _fail("model", self.model, "a registered model name, e.g. 'refinenet'")
        for name in ("dataset_root", "run_dir", "train_split", "val_split"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                _fail(name, value, "a non-empty string")
        options = self.model_options
        if isinstance(options, list | tuple):
            options = dict(options)
        if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
            _fail("model_options", self.model_options, "a mapping from option names to values")
        try:
            json.dumps(options)
        except TypeError as error:
            _fail("model_options", options, f"JSON-serialisable values ({error})")
        set_(self, "model_options", {k: options[k] for k in sorted(options)})
        for name in ("scale_range", "step_milestones", "eval_scales", "eval_multiscale_scales"):
            value = getattr(self, name)
            if not isinstance(value, list | tuple):
                _fail(name, value, "a list of numbers")
            set_(self, name, tuple(value))
        if self.sliding_window is not None:
            if not isinstance(self.sliding_window, list | tuple):
                _fail("sliding_window", self.sliding_window, "None or [crop, stride]")
            set_(self, "sliding_window", tuple(self.sliding_window))
        self._validate()

    def _validate(self) -> None:
        if self.freeze_backbone_bn and self.model_options.get("weights") is None:
            warnings.warn(
                "freeze_backbone_bn=True with a randomly initialised backbone (weights=None): its BatchNorm "
                "layers keep their initial statistics, so nothing normalises the ResNet and deep ones "
                "diverge. Freeze BatchNorm only with pretrained weights (weights='imagenet').",
                stacklevel=3,
            )
        def positive_int(name: str, minimum: int = 1) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                _fail(name, value, f"an integer >= {minimum}")

        for name in (
            "iterations",
            "batch_size",
            "crop_size",
            "eval_interval",
            "checkpoint_interval",
            "log_interval",
            "boundary_width",
            "measure_iterations",
        ):
            positive_int(name)
        for name in ("seed", "num_workers", "warmup_iters", "n_prediction_images"):
            positive_int(name, 0)
        for name in ("lr", "momentum", "weight_decay", "backbone_lr_mult", "poly_power", "step_gamma"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                _fail(name, value, "a finite number >= 0")
        if self.lr <= 0:
            _fail("lr", self.lr, "a number > 0")
        if self.optimizer not in OPTIMIZERS:
            _fail("optimizer", self.optimizer, f"one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            _fail("schedule", self.schedule, f"one of {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            _fail("precision", self.precision, f"one of {', '.join(PRECISIONS)}")
        if self.device not in DEVICES:
            _fail("device", self.device, f"one of {', '.join(DEVICES)}")
        lo_hi = self.scale_range
        if (
            len(lo_hi) != 2
            or not all(isinstance(v, int | float) for v in lo_hi)
            or not 0 < lo_hi[0] <= lo_hi[1]
        ):
            _fail("scale_range", lo_hi, "[low, high] with 0 < low <= high, e.g. [0.7, 1.3]")
        if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in self.step_milestones) or list(
            self.step_milestones
        ) != sorted(self.step_milestones):
            _fail("step_milestones", self.step_milestones, "increasing positive iteration numbers")
        if self.schedule == "step" and not self.step_milestones:
            _fail("step_milestones", self.step_milestones, "at least one milestone when schedule='step'")
        if not self.eval_scales:
            _fail("eval_scales", self.eval_scales, "at least one scale, e.g. [1.0]")
        for name in ("eval_scales", "eval_multiscale_scales"):
            if any(
                isinstance(s, bool) or not isinstance(s, int | float) or s <= 0 for s in getattr(self, name)
            ):
                _fail(name, getattr(self, name), "positive scales, e.g. [0.5, 0.75, 1.0]")
        if self.sliding_window is not None:
            sw = self.sliding_window
            if (
                len(sw) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in sw)
                or not (0 < sw[1] <= sw[0])
            ):
                _fail("sliding_window", sw, "None or [crop, stride] with 0 < stride <= crop")
        if self.grad_clip is not None and (
            isinstance(self.grad_clip, bool)
            or not isinstance(self.grad_clip, int | float)
            or self.grad_clip <= 0
        ):
            _fail("grad_clip", self.grad_clip, "None or a number > 0")
        if self.stop_after is not None and (
            isinstance(self.stop_after, bool) or not isinstance(self.stop_after, int) or self.stop_after < 1
        ):
            _fail("stop_after", self.stop_after, "None or an iteration number >= 1")
        if self.max_eval_images is not None and (
            not isinstance(self.max_eval_images, int) or self.max_eval_images < 1
        ):
            _fail("max_eval_images", self.max_eval_images, "None or an integer >= 1")
        for name in (
            "hflip",
            "freeze_backbone_bn",
            "sync_bn",
            "channels_last",
            "deterministic",
            "eval_flip",
            "measure",
        ):
            if not isinstance(getattr(self, name), bool):
                _fail(name, getattr(self, name), "true or false")

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as JSON-compatible plain values (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys are an error naming the allowed ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"Unknown TrainConfig field(s) {unknown}. Allowed: {', '.join(sorted(names))}.")
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
