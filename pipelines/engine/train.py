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
    CheckpointMismatchError,
    check_compatible,
    load_checkpoint,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from pipelines.engine.config import RESUME_FREE_FIELDS, TrainConfig
from pipelines.engine.data import IGNORE_INDEX, SegmentationDataset, TrainTransform, read_meta, train_loader
from pipelines.engine.distributed import (
    DistContext,
    all_reduce_sum,
    broadcast_buffers,
    broadcast_object,
    unused_parameters,
    wrap_ddp,
)
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


def distributed_loss(
    logits: torch.Tensor, target: torch.Tensor, world_size: int
) -> tuple[torch.Tensor, float]:
    """This rank's share of the global batch loss, and the global loss value (all ranks agree).

    The cross-entropy sum of this rank's pixels is divided by the number of valid pixels of the
    whole global batch and multiplied by ``world_size``, so that DistributedDataParallel's gradient
    average equals the gradient of `segmentation_loss` over the global batch in one process.
    """
    if logits.shape[-2:] != target.shape[-2:]:
        raise ValueError(
            f"Logits {tuple(logits.shape)} do not match labels {tuple(target.shape)}: "
            "models must return logits at the input size."
        )
    total = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
    valid = (target != IGNORE_INDEX).sum().to(total.dtype)
    sums = all_reduce_sum(torch.stack([total.detach(), valid]))
    global_valid = sums[1].clamp(min=1)
    return total * world_size / global_valid, float(sums[0] / global_valid)


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


class _NoHistory:
    """History of ranks other than 0 (rank 0 alone writes the run folder)."""

    def write(self, step: int, values: dict[str, Any]) -> None:
        pass


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

    Data parallel: when a torch.distributed process group of more than one rank is initialised,
    every rank calls `train` with the same config; ``config.batch_size`` is the per-rank batch and
    the effective batch is ``batch_size * world_size`` (the same samples as one process with that
    batch). The model is wrapped in DistributedDataParallel (SyncBatchNorm with ``config.sync_bn``,
    GPUs only); evaluation is sharded over the ranks. Rank 0 alone reads and writes the run folder
    (its checkpoint state is broadcast on resume). The reporter is called on every rank with the same
    metrics, and with ``checkpoint_dir`` None on ranks other than 0 (Ray Train needs every worker
    to report). Every rank returns the same metrics.
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
    ctx = DistContext.current()
    world = ctx.world_size
    effective_batch = config.batch_size * world
    device = resolve_device(config.device)
    if ctx.distributed and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())  # set per rank by the launcher
    if ctx.distributed and config.sync_bn and device.type != "cuda":
        raise ValueError(
            "TrainConfig.sync_bn=True needs GPUs: SyncBatchNorm does not run on the CPU (gloo). "
            "Fix: set sync_bn false, or freeze_backbone_bn true, for CPU data-parallel runs."
        )
    configure_determinism(config.deterministic, device)
    seed_everything(config.seed)

    run_dir = Path(config.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_path = ckpt_dir / CHECKPOINT_NAME
    config_dict = config.to_dict()
    state = None
    failure: Exception | None = None
    if ctx.is_main and ckpt_path.exists():
        try:
            state = load_checkpoint(ckpt_path)
            check_compatible(
                state, config.model, config.model_options, config_dict, RESUME_FREE_FIELDS, ckpt_path
            )
            saved_batch = int(state.get("effective_batch", config.batch_size))
            if saved_batch != effective_batch:
                raise CheckpointMismatchError(
                    f"Checkpoint {ckpt_path} was written with an effective batch of {saved_batch} "
                    f"(world size {state.get('world_size', 1)}), but this run has {effective_batch} "
                    f"(batch_size {config.batch_size} x world size {world}). Fix: resume with the same "
                    f"number of workers, or use another run_dir."
                )
        except Exception as error:  # every rank must learn about it, or the others wait forever
            failure, state = error, None
    if ctx.distributed:
        failure, state = broadcast_object((failure, state))
    if failure is not None:
        raise failure

    model = build_model(config.model, num_classes, **config.model_options)
    backbone_of(model, config.model)
    if config.freeze_backbone_bn:
        freeze_backbone_batchnorm(model)
    if ctx.distributed and config.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
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

    forward_model: nn.Module = model
    if ctx.distributed:
        unused = unused_parameters(model, config.crop_size, device, use_channels_last)
        forward_model = wrap_ddp(model, device, find_unused=bool(unused))

    history: _History | _NoHistory = _NoHistory()
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / "config.json", config_dict)
        history = _History(run_dir / "history.jsonl", step if step else None)

    def checkpoint(at: int) -> str | None:
        """Save ``last.pt`` (rank 0); every rank checks the weights (identical under DDP)."""
        if not _finite_params(model):
            raise NonFiniteLossError(
                f"Weights became non-finite by step {at} (lr {_lrs(optimizer)}); kept the last good "
                f"checkpoint {_kept(ckpt_path)}. Fix: lower lr or set grad_clip."
            )
        if not ctx.is_main:
            return None
        samples = at * effective_batch
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
                "world_size": world,
                "effective_batch": effective_batch,
                "recent_losses": list(recent),
                "config": config_dict,
                "model_name": config.model,
                "model_options": dict(config.model_options),
            },
        )
        return str(ckpt_dir)

    def run_eval(final: bool, scales: tuple[float, ...] | None = None) -> EvalResult:
        if ctx.distributed:
            broadcast_buffers(model)  # evaluate rank 0's BatchNorm statistics on every shard
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
            rank=ctx.rank,
            world_size=world,
        )
        set_train_mode(model, config.freeze_backbone_bn)
        return result

    def report(metrics: dict[str, float], at: int, saved: str | None) -> None:
        if reporter is not None and (ctx.distributed or saved is not None):
            reporter(metrics, at, saved)

    loader = train_loader(
        train_set,
        config.batch_size,
        config.seed,
        step * effective_batch,
        config.num_workers,
        pin_memory=device.type == "cuda",
        rank=ctx.rank,
        world_size=world,
    )
    batches = iter(loader)
    set_train_mode(model, config.freeze_backbone_bn)
    window_loss, window_steps, window_time = 0.0, 0, 0.0
    img_per_s = float("nan")  # global images per second of the last log window
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
            logits = forward_model(images)
        if ctx.distributed:
            loss, loss_value = distributed_loss(logits, labels, world)
        else:
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
            img_per_s = window_steps * effective_batch / max(window_time, 1e-9)
            history.write(
                step,
                {
                    "train/loss": window_loss / window_steps,
                    "lr": optimizer.param_groups[-1]["lr"],
                    "train/img_per_s": img_per_s,
                },
            )
            window_loss, window_steps, window_time = 0.0, 0, 0.0
        is_final = step == config.iterations
        saved = None
        if step % config.eval_interval == 0 and not is_final:
            metrics = run_eval(final=False).metrics()
            metrics["train/loss"] = float(np.mean(recent))
            if math.isfinite(img_per_s):
                metrics["train/img_per_s"] = img_per_s
            history.write(step, metrics)
            saved = checkpoint(step)
            report(metrics, step, saved)
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
    metrics["world_size"] = float(world)
    metrics["effective_batch"] = float(effective_batch)
    if ctx.is_main:
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
        info.update(world_size=world, per_worker_batch=config.batch_size, effective_batch=effective_batch)
        if ctx.is_main:
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
    if ctx.is_main:
        _write_json(run_dir / "metrics.json", {k: _json_value(v) for k, v in metrics.items()})
    if reporter is not None:
        reporter(metrics, step, str(ckpt_dir) if ctx.is_main else None)
    return metrics


def _kept(path: Path) -> str:
    return str(path) if path.exists() else "(none yet)"


def _lrs(optimizer: torch.optim.Optimizer) -> str:
    return ", ".join(f"{g.get('name', i)} {g['lr']:.3g}" for i, g in enumerate(optimizer.param_groups))
