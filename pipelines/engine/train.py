"""`train(config, reporter) -> metrics`: train one registered model on one prepared dataset.

The same function runs standalone (`python -m pipelines.train`) and inside a Ray Tune trial; only
the reporter differs. It writes the run folder of docs/architecture.md, resumes automatically from
``run_dir/checkpoints/last.pt``, and stops with `NonFiniteLossError` (keeping the last good
checkpoint) when the loss stops being finite. Recipe defaults follow the released code (paper.md
§2): SGD, momentum 0.9, weight decay 5e-4, backbone learning rate x0.1.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from pipelines.engine.checkpoint import (
    check_compatible,
    load_checkpoint,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from pipelines.engine.config import RESUME_FREE_FIELDS, TrainConfig
from pipelines.engine.data import IGNORE_INDEX, SegmentationDataset, TrainTransform, read_meta, train_loader
from pipelines.engine.evaluate import EvalResult, evaluate
from pipelines.engine.measure import measure

Reporter = Callable[[dict[str, float], int, "str | None"], None]
CHECKPOINT_NAME = "last.pt"


class NonFiniteLossError(RuntimeError):
    """The training loss (or the weights) stopped being finite; the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "TrainConfig.device='cuda' but no CUDA device is available. Fix: use device='auto' or 'cpu'."
        )
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    """Deterministic kernels where they exist (warn-only: bilinear backward has none on CUDA)."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def backbone_of(model: nn.Module, name: str) -> nn.Module:
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"Model {name!r} has no `backbone` submodule; the registry contract requires one.")
    return backbone


def freeze_backbone_batchnorm(model: nn.Module) -> None:
    """Frozen backbone BatchNorm: affine parameters without gradient (eval mode via `set_train_mode`)."""
    for m in model.backbone.modules():
        if isinstance(m, _BatchNorm):
            for p in m.parameters():
                p.requires_grad_(False)


def set_train_mode(model: nn.Module, freeze_backbone_bn: bool) -> None:
    """``model.train()``, then the backbone's BatchNorm back to eval mode if it is frozen."""
    model.train()
    if freeze_backbone_bn:
        for m in model.backbone.modules():
            if isinstance(m, _BatchNorm):
                m.eval()


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Two parameter groups: backbone (lr x backbone_lr_mult) and head (lr)."""
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    head = [p for p in model.parameters() if id(p) not in backbone_ids and p.requires_grad]
    groups = [
        {"params": backbone, "lr": config.lr * config.backbone_lr_mult, "name": "backbone"},
        {"params": head, "lr": config.lr, "name": "head"},
    ]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError(f"Model {config.model!r} has no trainable parameters.")
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the base learning rates at iteration ``step`` (0-based): warm-up x schedule."""
    warm = min(1.0, (step + 1) / config.warmup_iters) if config.warmup_iters else 1.0
    if config.schedule == "poly":
        sched = max(0.0, 1.0 - step / config.iterations) ** config.poly_power
    elif config.schedule == "step":
        sched = config.step_gamma ** sum(step >= m for m in config.step_milestones)
    else:
        sched = 1.0
    return warm * sched


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel-wise cross-entropy on input-size logits, mean over non-ignored pixels (0 if none)."""
    if logits.shape[-2:] != target.shape[-2:]:
        raise ValueError(
            f"Logits {tuple(logits.shape)} do not match labels {tuple(target.shape)}: "
            "models must return logits at the input size."
        )
    total = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
    valid = (target != IGNORE_INDEX).sum().clamp(min=1)
    return total / valid


def _finite_params(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


class _History:
    """``history.jsonl``: one JSON line per log or evaluation step."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        kept = []
        if resume_step is not None and path.exists():
            for line in path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    if json.loads(line).get("step", 0) <= resume_step:
                        kept.append(line)
        path.write_text("".join(k + "\n" for k in kept))

    def write(self, step: int, values: dict[str, Any]) -> None:
        line = {"step": step, **{k: _json_value(v) for k, v in values.items()}}
        with self.path.open("a") as fh:
            fh.write(json.dumps(line) + "\n")


def write_eval_files(run_dir: Path, result: EvalResult, classes: list[str]) -> None:
    """confusion_matrix.npy, per_class_iou.json and per_image_stats.npz of the final evaluation."""
    np.save(run_dir / "confusion_matrix.npy", result.confusion.matrix.astype(np.int64))
    iou = [None if math.isnan(v) else float(v) for v in result.confusion.iou()]
    _write_json(run_dir / "per_class_iou.json", {"classes": list(classes), "iou": iou})
    np.savez(
        run_dir / "per_image_stats.npz",
        image_ids=np.array(result.image_ids),
        intersection=result.intersection.astype(np.int64),
        union=result.union.astype(np.int64),
    )


def train(config: TrainConfig, reporter: Reporter | None = None) -> dict[str, float]:
    """Train ``config.model`` on ``config.dataset_root``; return the final metrics.

    ``reporter(metrics, step, checkpoint_dir)`` is called after every evaluation (``checkpoint_dir``
    holds ``last.pt`` of that step). With ``config.stop_after`` set the run checkpoints and returns
    after that many iterations; calling `train` again resumes it.
    """
    from refinenet.registry import build_model

    if not isinstance(config, TrainConfig):
        raise TypeError(f"train() needs a TrainConfig, got {type(config).__name__}.")
    meta = read_meta(config.dataset_root)
    classes = list(meta["classes"])
    num_classes = len(classes)
    train_set = SegmentationDataset(
        config.dataset_root,
        config.train_split,
        TrainTransform(config.crop_size, config.scale_range, config.hflip),
    )
    val_set = SegmentationDataset(config.dataset_root, config.val_split)
    device = resolve_device(config.device)
    configure_determinism(config.deterministic, device)
    seed_everything(config.seed)

    run_dir = Path(config.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_path = ckpt_dir / CHECKPOINT_NAME
    config_dict = config.to_dict()
    state = None
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        check_compatible(
            state, config.model, config.model_options, config_dict, RESUME_FREE_FIELDS, ckpt_path
        )

    model = build_model(config.model, num_classes, **config.model_options)
    backbone_of(model, config.model)
    if config.freeze_backbone_bn:
        freeze_backbone_batchnorm(model)
    use_channels_last = config.channels_last and device.type == "cuda"
    model.to(device)
    if use_channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    scaler = torch.amp.GradScaler(device.type, enabled=False)  # bf16 needs no loss scaling
    autocast_dtype = torch.bfloat16 if config.precision == "bf16" else None

    step = 0
    recent: collections.deque[float] = collections.deque(maxlen=config.log_interval)
    if state is not None:
        recent.extend(float(v) for v in state.get("recent_losses", []))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        set_rng_states(state["rng"])
        del state

    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / "config.json", config_dict)
    history = _History(run_dir / "history.jsonl", step if step else None)

    def checkpoint(at: int) -> str:
        if not _finite_params(model):
            raise NonFiniteLossError(
                f"Weights became non-finite by step {at} (lr {_lrs(optimizer)}); kept the last good "
                f"checkpoint {_kept(ckpt_path)}. Fix: lower lr or set grad_clip."
            )
        samples = at * config.batch_size
        save_checkpoint(
            ckpt_path,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rng_states(),
                "data_position": {
                    "samples": samples,
                    "epoch": samples // len(train_set),
                    "index": samples % len(train_set),
                },
                "step": at,
                "recent_losses": list(recent),
                "config": config_dict,
                "model_name": config.model,
                "model_options": dict(config.model_options),
            },
        )
        return str(ckpt_dir)

    def run_eval(final: bool, scales: tuple[float, ...] | None = None) -> EvalResult:
        result = evaluate(
            model,
            val_set,
            num_classes,
            device,
            scales=scales or (config.eval_scales if final else (1.0,)),
            flip=config.eval_flip if final else False,
            sliding_window=config.sliding_window,
            boundary_width=config.boundary_width,
            prediction_dir=run_dir / "predictions" if final and scales is None else None,
            n_prediction_images=config.n_prediction_images,
            palette=meta.get("palette"),
            autocast_dtype=autocast_dtype,
            channels_last=use_channels_last,
            max_images=config.max_eval_images,
            num_workers=config.num_workers if device.type == "cuda" else 0,
        )
        set_train_mode(model, config.freeze_backbone_bn)
        return result

    loader = train_loader(
        train_set,
        config.batch_size,
        config.seed,
        step * config.batch_size,
        config.num_workers,
        pin_memory=device.type == "cuda",
    )
    batches = iter(loader)
    set_train_mode(model, config.freeze_backbone_bn)
    window_loss, window_steps, window_time = 0.0, 0, 0.0
    trainable = [p for p in model.parameters() if p.requires_grad]
    end = config.iterations if config.stop_after is None else min(config.iterations, config.stop_after)
    while step < end:
        t0 = time.perf_counter()
        images, labels = next(batches)
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if use_channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with (
            torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
        ):
            logits = model(images)
        loss = segmentation_loss(logits, labels)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(
                f"Loss is {loss_value} at step {step + 1} (lr {_lrs(optimizer)}); kept the last good "
                f"checkpoint {_kept(ckpt_path)}. Fix: lower lr or set grad_clip."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        if device.type == "cuda" and step % config.log_interval == 0:
            torch.cuda.synchronize(device)
        window_time += time.perf_counter() - t0
        recent.append(loss_value)
        window_loss += loss_value
        window_steps += 1
        if step % config.log_interval == 0 or step == config.iterations:
            history.write(
                step,
                {
                    "train/loss": window_loss / window_steps,
                    "lr": optimizer.param_groups[-1]["lr"],
                    "train/img_per_s": window_steps * config.batch_size / max(window_time, 1e-9),
                },
            )
            window_loss, window_steps, window_time = 0.0, 0, 0.0
        is_final = step == config.iterations
        saved = None
        if step % config.eval_interval == 0 and not is_final:
            metrics = run_eval(final=False).metrics()
            metrics["train/loss"] = float(np.mean(recent))
            history.write(step, metrics)
            saved = checkpoint(step)
            if reporter is not None:
                reporter(metrics, step, saved)
        elif step % config.checkpoint_interval == 0 or is_final or step == config.stop_after:
            saved = checkpoint(step)
    del batches, loader

    if step < config.iterations:  # stopped early on request (stop_after)
        return {"train/loss": float(np.mean(recent)) if recent else float("nan"), "step": float(step)}

    # Final evaluation with the full evaluation settings, files of the run folder.
    result = run_eval(final=True)
    metrics = result.metrics()
    if config.eval_multiscale_scales:
        metrics["val/mIoU_ms"] = run_eval(final=True, scales=config.eval_multiscale_scales).metrics()[
            "val/mIoU"
        ]
    metrics["train/loss"] = float(np.mean(recent)) if recent else float("nan")
    write_eval_files(run_dir, result, classes)
    if config.measure:
        del optimizer, scheduler
        small = device.type == "cpu"
        info = measure(
            model,
            num_classes,
            config.crop_size,
            config.batch_size,
            device,
            config.precision,
            use_channels_last,
            warmup=1 if small else 5,
            iterations=min(2, config.measure_iterations) if small else config.measure_iterations,
            latency_iterations=3 if small else 100,
            copy_model=False,
        )
        _write_json(run_dir / "measurements.json", {k: _json_value(v) for k, v in info.items()})
        metrics.update(
            {
                k: float(v)
                for k, v in info.items()
                if isinstance(v, int | float)
                and not isinstance(v, bool)
                and k
                in (
                    "n_params",
                    "gflops",
                    "train_img_per_s",
                    "peak_mem_alloc_gb",
                    "peak_mem_reserved_gb",
                    "infer_latency_ms",
                    "infer_img_per_s",
                )
            }
        )
    history.write(step, metrics)
    _write_json(run_dir / "metrics.json", {k: _json_value(v) for k, v in metrics.items()})
    if reporter is not None:
        reporter(metrics, step, str(ckpt_dir))
    return metrics


def _kept(path: Path) -> str:
    return str(path) if path.exists() else "(none yet)"


def _lrs(optimizer: torch.optim.Optimizer) -> str:
    return ", ".join(f"{g.get('name', i)} {g['lr']:.3g}" for i, g in enumerate(optimizer.param_groups))
