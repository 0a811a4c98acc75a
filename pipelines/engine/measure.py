"""Speed and memory measurements of one model, taken in the same run as its accuracy.

Parameters, forward GFLOPs at ``1x3xcrop x crop`` (`torch.utils.flop_counter`, 2 FLOPs per MAC),
training images/s after warm-up (synchronised before reading the clock), peak GPU memory
(allocated and reserved, over the timed steps after a reset), inference latency at batch 1 and
throughput at batch 16 (optionally replayed from a CUDA graph); the device name, torch and CUDA
versions, precision, batch and crop are recorded beside them (stack.md, "Measuring").

The pieces (`train_throughput`, `inference_time`) are also used by `pipelines.profile` and
``benchmarks/peers.py``, so that the project's models and the peer implementations are measured by
the same code.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.flop_counter import FlopCounterMode

MEASUREMENT_KEYS = (
    "n_params",
    "gflops",
    "train_img_per_s",
    "peak_mem_alloc_gb",
    "peak_mem_reserved_gb",
    "infer_latency_ms",
    "infer_img_per_s",
)
PRECISIONS = ("fp32", "bf16")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str, cache_enabled: bool = True):
    """bf16 autocast for ``precision="bf16"``, nothing for ``"fp32"`` (TF32 where enabled)."""
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}. Valid precisions: {', '.join(PRECISIONS)}.")
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)
    return contextlib.nullcontext()


_autocast = autocast  # the earlier private name


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_gflops(model: nn.Module, crop: int, device: torch.device) -> float:
    """Forward GFLOPs of one ``1x3xcrop x crop`` image (eval mode, fp32)."""
    was_training = model.training
    model.eval()
    x = torch.randn(1, 3, crop, crop, device=device)
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9


def device_info(device: torch.device) -> dict[str, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        import platform

        name = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return {"device_name": name, "torch_version": torch.__version__, "cuda_version": str(torch.version.cuda)}


def set_fast_gpu_flags() -> None:
    """perf.md's settings: cudnn.benchmark and TF32 for float32 matrix work."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def train_mode(model: nn.Module, freeze_backbone_bn: bool) -> None:
    """``model.train()``; with ``freeze_backbone_bn`` the BatchNorm of ``model.backbone`` (or of the
    whole model, for peers without a ``backbone``) goes to eval mode without gradients, as the
    released recipe trains."""
    model.train()
    if freeze_backbone_bn:
        root = getattr(model, "backbone", model)
        for m in root.modules():
            if isinstance(m, _BatchNorm):
                m.eval()
                for p in m.parameters():
                    p.requires_grad_(False)


def train_throughput(
    model: nn.Module,
    num_classes: int,
    crop: int,
    batch: int,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
    warmup: int = 4,
    iterations: int = 15,
    lr: float = 1e-6,
    freeze_backbone_bn: bool = False,
    cuda_graph: bool = False,
) -> dict[str, float]:
    """Train ``model`` in place on random ``batch x 3 x crop x crop`` inputs (SGD, cross-entropy on
    input-size logits, perf.md's protocol): images/s over ``iterations`` timed steps after
    ``warmup``; peak memory (allocated, reserved) over the timed steps. NaN memory on the CPU.

    ``cuda_graph``: the model's forward and backward are captured once
    (``torch.cuda.make_graphed_callables``) and replayed every step; the loss and the optimizer step
    stay eager. It removes the CPU launch cost that bounds eager PyTorch at this batch."""
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    train_mode(model, freeze_backbone_bn)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, 3, crop, crop, generator=gen).to(device, memory_format=memory_format)
    y = torch.randint(0, num_classes, (batch, crop, crop), generator=gen).to(device)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    net = model
    if cuda_graph:
        if device.type != "cuda":
            raise ValueError("cuda_graph=True needs device='cuda'. Fix: drop it on the CPU.")
        with autocast(device, precision, cache_enabled=False):
            net = torch.cuda.make_graphed_callables(model, (x,), num_warmup_iters=max(3, warmup))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision, cache_enabled=not cuda_graph):
            logits = net(x)
        loss = F.cross_entropy(logits.float(), y, ignore_index=255)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    _sync(device)
    results = {"train_img_per_s": batch * iterations / (time.perf_counter() - start)}
    if device.type == "cuda":
        results["peak_mem_alloc_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        results["peak_mem_reserved_gb"] = torch.cuda.max_memory_reserved(device) / 2**30
    else:
        results["peak_mem_alloc_gb"] = float("nan")
        results["peak_mem_reserved_gb"] = float("nan")
    for p in model.parameters():
        p.grad = None
    if cuda_graph:  # make_graphed_callables replaced model.forward: restore it, free the graph's pool
        model.__dict__.pop("forward", None)
        del net
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    return results


def graphed(
    model: nn.Module, example: torch.Tensor, warmup: int = 3
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A CUDA-graph replay of ``model(example)`` (no grad): copy the input in, replay, read the output.

    Removes the per-kernel launch cost of eager PyTorch; the graph is fixed to ``example``'s shape.
    """
    static_x = example.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(warmup):
            model(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        static_y = model(static_x)

    def run(x: torch.Tensor) -> torch.Tensor:
        static_x.copy_(x)
        graph.replay()
        return static_y

    return run


def inference_time(
    model: nn.Module,
    crop: int,
    batch: int,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
    warmup: int = 4,
    iterations: int = 100,
    cuda_graph: bool = False,
) -> float:
    """Seconds per forward pass of a ``batch x 3 x crop x crop`` input in eval mode, no grad, averaged
    over ``iterations`` passes after ``warmup`` (``cuda_graph``: replayed from a CUDA graph)."""
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format).eval()
    gen = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(batch, 3, crop, crop, generator=gen).to(device, memory_format=memory_format)
    with torch.no_grad(), autocast(device, precision):
        run = model
        if cuda_graph:
            if device.type != "cuda":
                raise ValueError("cuda_graph=True needs device='cuda'. Fix: drop it on the CPU.")
            run = graphed(model, x, warmup=max(1, warmup))
        for _ in range(max(1, warmup)):
            run(x)
        _sync(device)
        start = time.perf_counter()
        for _ in range(iterations):
            run(x)
        _sync(device)
        seconds = (time.perf_counter() - start) / iterations
    del run
    return seconds


def measure(
    model: nn.Module,
    num_classes: int,
    crop: int,
    batch: int,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
    warmup: int = 5,
    iterations: int = 20,
    infer_batch: int = 16,
    latency_iterations: int = 100,
    lr: float = 1e-6,
    copy_model: bool = True,
    freeze_backbone_bn: bool = False,
    cuda_graph: bool = False,
) -> dict[str, Any]:
    """Measure ``model``: a deep copy is trained, or with ``copy_model=False`` the model itself
    (its weights change; use it at the end of a run, so that peak memory holds one model only).

    Training uses random inputs and labels at ``batch x 3 x crop x crop``, SGD and cross-entropy
    on input-size logits. On the CPU pass small ``warmup``/``iterations``/``latency_iterations``.
    Memory figures are NaN on the CPU. ``cuda_graph`` adds ``infer_latency_graph_ms`` (batch 1
    replayed from a CUDA graph).
    """
    device = torch.device(device)
    results: dict[str, Any] = {
        "n_params": float(count_params(model)),
        "gflops": forward_gflops(model, crop, device),
    }
    work = copy.deepcopy(model) if copy_model else model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    results.update(
        train_throughput(
            work,
            num_classes,
            crop,
            batch,
            device,
            precision,
            channels_last,
            warmup=warmup,
            iterations=iterations,
            lr=lr,
            freeze_backbone_bn=freeze_backbone_bn,
        )
    )
    common = dict(device=device, precision=precision, channels_last=channels_last, warmup=warmup)
    latency = inference_time(work, crop, 1, iterations=latency_iterations, **common)
    results["infer_latency_ms"] = 1000 * latency
    n_batches = max(1, latency_iterations // infer_batch)
    per_batch = inference_time(work, crop, infer_batch, iterations=n_batches, **common)
    results["infer_img_per_s"] = infer_batch / per_batch
    if cuda_graph and device.type == "cuda":
        graph_latency = inference_time(
            work, crop, 1, iterations=latency_iterations, cuda_graph=True, **common
        )
        results["infer_latency_graph_ms"] = 1000 * graph_latency
    del work
    if device.type == "cuda":
        torch.cuda.empty_cache()
    results.update(device_info(device))
    results.update(
        {
            "precision": precision,
            "batch": batch,
            "crop": crop,
            "infer_batch": infer_batch,
            "channels_last": channels_last,
            "warmup": warmup,
            "iterations": iterations,
            "freeze_backbone_bn": freeze_backbone_bn,
        }
    )
    return results
