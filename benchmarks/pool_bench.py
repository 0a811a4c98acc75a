"""Micro-benchmark of the CRP max-pool implementations (docs/performance.md) on one GPU.

    python benchmarks/pool_bench.py --out benchmarks/results/h100/runN

The released RefineNet-101's stride-4 CRP pools a ``(8, 256, 128, 128)`` bf16 channels-last tensor
at batch 8, 512x512 (5x5, stride 1, padding 2). For each mode of `lean_max_pool` (and plain
``nn.MaxPool2d``) this times the forward, the forward + backward, and the bytes autograd keeps
between them; then the inference shapes (fp32 batch 1, bf16 batch 16). Writes ``pool_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.engine.measure import device_info  # noqa: E402
from refinenet.blocks.chained_residual_pooling import lean_max_pool  # noqa: E402

MODES = ("plain", "window", "separable")


def _pool(mode: str, pool: nn.MaxPool2d, x: torch.Tensor) -> torch.Tensor:
    return pool(x) if mode == "plain" else lean_max_pool(pool, x, mode)


def _time_ms(fn, iterations: int) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iterations):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iterations


def bench(shape: tuple[int, ...], dtype: torch.dtype, grad: bool, iterations: int) -> list[dict]:
    pool = nn.MaxPool2d(5, stride=1, padding=2)
    x = torch.randn(shape, device="cuda", dtype=dtype).to(memory_format=torch.channels_last)
    x = x.relu().requires_grad_(grad)  # ReLU output, as the CRP's first pool sees (ties at 0)
    g = torch.randn_like(x)
    reference = pool(x).detach()
    rows = []
    for mode in MODES:
        row = {"mode": mode, "shape": list(shape), "dtype": str(dtype), "grad": grad}
        try:
            with torch.no_grad() if not grad else torch.enable_grad():
                out = _pool(mode, pool, x)
            row["same_output"] = bool(torch.equal(out.detach(), reference))
            if grad:
                (grad_x,) = torch.autograd.grad(out, x, g)
                (grad_ref,) = torch.autograd.grad(pool(x), x, g)
                row["grad_max_abs_diff"] = float((grad_x.float() - grad_ref.float()).abs().max())
                del out, grad_x, grad_ref
                torch.cuda.synchronize()
                before = torch.cuda.memory_allocated()
                out = _pool(mode, pool, x)
                row["kept_mb"] = (torch.cuda.memory_allocated() - before) / 2**20  # output + saved
                del out

                def fwd(mode: str = mode) -> None:
                    _pool(mode, pool, x)

                def fwd_bwd(mode: str = mode) -> None:
                    torch.autograd.grad(_pool(mode, pool, x), x, g)

                row["fwd_ms"] = _time_ms(fwd, iterations)
                row["fwd_bwd_ms"] = _time_ms(fwd_bwd, iterations)
            else:
                with torch.no_grad():
                    row["fwd_ms"] = _time_ms(lambda: _pool(mode, pool, x), iterations)  # noqa: B023
        except Exception as error:  # noqa: BLE001  (record it and go on)
            row["error"] = repr(error)[:300]
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/h100")
    parser.add_argument("--iterations", type=int, default=50)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: benchmarks/pool_bench.py needs a CUDA GPU.", file=sys.stderr)
        return 2
    rows = []
    rows += bench((8, 256, 128, 128), torch.bfloat16, True, args.iterations)  # training, stride 4
    rows += bench((8, 256, 32, 32), torch.bfloat16, True, args.iterations)  # training, stride 16
    rows += bench((1, 256, 128, 128), torch.float32, False, args.iterations)  # inference batch 1
    rows += bench((16, 256, 128, 128), torch.bfloat16, False, args.iterations)  # inference batch 16
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = {**device_info(torch.device("cuda")), "iterations": args.iterations}
    (out / "pool_bench.json").write_text(json.dumps({"settings": info, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
