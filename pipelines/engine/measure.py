"""Speed and memory measurements of one model, taken in the same run as its accuracy.

Parameters, forward GFLOPs at ``1x3xcrop x crop`` (`torch.utils.flop_counter`, 2 FLOPs per MAC),
training images/s after warm-up (synchronised before reading the clock), peak GPU memory
(allocated and reserved, after a reset), inference latency at batch 1 and throughput at batch 16;
the device name, torch and CUDA versions, precision, batch and crop are recorded beside them
(stack.md, "Measuring").
"""

from __future__ import annotations

import contextlib
import copy
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
) -> dict[str, Any]:
    """Measure ``model``: a deep copy is trained, or with ``copy_model=False`` the model itself
    (its weights change; use it at the end of a run, so that peak memory holds one model only).

    Training uses random inputs and labels at ``batch x 3 x crop x crop``, SGD and cross-entropy
    on input-size logits. On the CPU pass small ``warmup``/``iterations``/``latency_iterations``.
    Memory figures are NaN on the CPU.
    """
    device = torch.device(device)
    results: dict[str, Any] = {
        "n_params": float(count_params(model)),
        "gflops": forward_gflops(model, crop, device),
    }
    work = (copy.deepcopy(model) if copy_model else model).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    work = work.to(memory_format=memory_format)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, 3, crop, crop, generator=gen).to(device, memory_format=memory_format)
    y = torch.randint(0, num_classes, (batch, crop, crop), generator=gen).to(device)
    opt = torch.optim.SGD([p for p in work.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    work.train()

    def step(net: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        with _autocast(device, precision):
            logits = net(x)
        loss = F.cross_entropy(logits.float(), y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        step(work, x, y, opt)
    _sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        step(work, x, y, opt)
    _sync(device)
    results["train_img_per_s"] = batch * iterations / (time.perf_counter() - start)
    if device.type == "cuda":
        results["peak_mem_alloc_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        results["peak_mem_reserved_gb"] = torch.cuda.max_memory_reserved(device) / 2**30
    else:
        results["peak_mem_alloc_gb"] = float("nan")
        results["peak_mem_reserved_gb"] = float("nan")
    del opt, x, y

    work.eval()
    one = torch.randn(1, 3, crop, crop, generator=gen).to(device, memory_format=memory_format)
    many = torch.randn(infer_batch, 3, crop, crop, generator=gen).to(device, memory_format=memory_format)
    with torch.no_grad(), _autocast(device, precision):
        for _ in range(max(1, warmup)):
            work(one)
        _sync(device)
        start = time.perf_counter()
        for _ in range(latency_iterations):
            work(one)
        _sync(device)
        results["infer_latency_ms"] = 1000 * (time.perf_counter() - start) / latency_iterations
        work(many)
        _sync(device)
        n_batches = max(1, latency_iterations // infer_batch)
        start = time.perf_counter()
        for _ in range(n_batches):
            work(many)
        _sync(device)
        results["infer_img_per_s"] = infer_batch * n_batches / (time.perf_counter() - start)
    del work, one, many
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
        }
    )
    return results
