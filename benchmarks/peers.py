"""The project's models beside their peer implementations, measured in one process (perf.md's protocol).

    python benchmarks/peers.py --out benchmarks/results/h100 [--sections refinenet,infer,baselines,profiler]

perf.md's settings: 512x512 random input, 21 classes, channels_last, cudnn.benchmark, TF32, SGD step,
cross-entropy on input-size logits, 4 warm-up + 15 timed steps, peak = max_memory_allocated over the
timed steps. Peers (never committed; fetched into the ignored ``peers/`` folder):

- ``port``: DrSleep/refinenet-pytorch ``rf101`` (the released RefineNet-101 graph), imported the
  way its README does (``from models.resnet import rf101``) from ``peers/refinenet_pytorch``;
  its stride-4 logits are upsampled bilinearly to the input size, as perf.md measured it.
- torchvision ``fcn_resnet101`` / ``deeplabv3_resnet101`` (OS 8) and smp ``Unet("resnet101")`` /
  ``DeepLabV3("resnet101", encoder_output_stride=8)``.

Training rows are interleaved (A B A B ...) over ``--rounds``: absolute figures move by 10% between
calls, so targets are ratios within one call. Writes ``peers.csv``, ``peers.json`` (rows and
settings), ``profiler_*.txt`` (torch.profiler tables) under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.engine.measure import (  # noqa: E402
    autocast,
    count_params,
    device_info,
    inference_time,
    set_fast_gpu_flags,
    train_mode,
    train_throughput,
)

NUM_CLASSES = 21
PORT_DIR = ROOT / "peers" / "refinenet_pytorch"


class InputSizeLogits(nn.Module):
    """Peer wrapper: logits upsampled bilinearly to the input size (dict outputs: ``["out"]``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if isinstance(out, dict):
            out = out["out"]
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out


def port_rf101() -> nn.Module:
    if not (PORT_DIR / "models" / "resnet.py").is_file():
        raise FileNotFoundError(
            f"{PORT_DIR} holds no DrSleep/refinenet-pytorch checkout. Fix: copy models/ and utils/ of "
            "https://github.com/DrSleep/refinenet-pytorch there (peers/ is git-ignored)."
        )
    if str(PORT_DIR) not in sys.path:
        sys.path.insert(0, str(PORT_DIR))
    from models.resnet import rf101  # the README's import

    return InputSizeLogits(rf101(NUM_CLASSES, imagenet=False, pretrained=False))


def ours(name: str, **options: Any) -> nn.Module:
    import baselines  # noqa: F401  (registers the baselines)
    from refinenet.registry import build_model

    return build_model(name, NUM_CLASSES, **options)


def ours_released(
    fold: bool = True,
    lean_pool: bool = True,
    checkpointing: bool = False,
    max_pool: str = "separable",
) -> nn.Module:
    """RefineNet-101 ``released``; the switches undo one optimisation each (ablations)."""
    model = ours("refinenet", backbone="resnet101", preset="released").set_max_pool(max_pool)
    if not fold:
        from torchvision.models.resnet import BasicBlock, Bottleneck

        from refinenet.model import _FoldingBasicBlock, _FoldingBottleneck, _FoldingStem

        for m in model.modules():
            if isinstance(m, _FoldingBottleneck):
                m.__class__ = Bottleneck
            elif isinstance(m, _FoldingBasicBlock):
                m.__class__ = BasicBlock
            elif isinstance(m, _FoldingStem):
                m.__class__ = nn.Sequential
    if checkpointing:
        model.set_activation_checkpointing(True)
    if not lean_pool:
        return _PlainPool(model)
    return model


class _PlainPool(nn.Module):
    """Runs the wrapped RefineNet with ``nn.MaxPool2d``'s own backward in the CRP (ablation)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.backbone = model.backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from refinenet.blocks import chained_residual_pooling as crp

        lean = crp.lean_max_pool
        crp.lean_max_pool = lambda pool, x, mode="": pool(x)
        try:
            return self.model(x)
        finally:
            crp.lean_max_pool = lean


def smp_peer(kind: str) -> nn.Module:
    import segmentation_models_pytorch as smp

    if kind == "unet":
        return smp.Unet("resnet101", encoder_weights=None, classes=NUM_CLASSES)
    return smp.DeepLabV3("resnet101", encoder_weights=None, encoder_output_stride=8, classes=NUM_CLASSES)


def tv_peer(kind: str) -> nn.Module:
    from torchvision.models import segmentation as seg

    builder = seg.fcn_resnet101 if kind == "fcn" else seg.deeplabv3_resnet101
    net = builder(weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=False)
    return InputSizeLogits(net)


REFINENET: dict[str, Callable[[], nn.Module]] = {
    "port-rf101": port_rf101,
    "ours-released": ours_released,
    "ours-released-nofold": lambda: ours_released(fold=False),
    "ours-released-plainpool": lambda: ours_released(lean_pool=False),
    "ours-released-ckpt": lambda: ours_released(checkpointing=True),
    "ours-released-window": lambda: ours_released(max_pool="window"),
}
BASELINES: dict[str, tuple[Callable[[], nn.Module], str]] = {
    # name: (builder, the peer it is compared with, "" for a peer itself)
    "smp-Unet-r101": (lambda: smp_peer("unet"), ""),
    "ours-unet": (lambda: ours("unet", backbone="resnet101"), "smp-Unet-r101"),
    "smp-DeepLabV3-r101-os8": (lambda: smp_peer("deeplabv3"), ""),
    "ours-deeplabv3": (lambda: ours("deeplabv3", backbone="resnet101"), "smp-DeepLabV3-r101-os8"),
    "tv-deeplabv3_resnet101": (lambda: tv_peer("deeplabv3"), ""),
    "tv-fcn_resnet101": (lambda: tv_peer("fcn"), ""),
    "ours-fcn8s": (lambda: ours("fcn8s", backbone="resnet101"), ""),
    "ours-deeplabv2": (lambda: ours("deeplabv2", backbone="resnet101"), ""),
}


def _fresh() -> None:
    gc.collect()
    torch.cuda.empty_cache()


def train_row(
    name: str,
    build: Callable[[], nn.Module],
    args,
    precision: str,
    freeze: bool,
    rnd: int,
    graph: bool = False,
) -> dict:
    torch.manual_seed(0)
    model = build()
    _fresh()
    row = {
        "section": "train",
        "name": name,
        "precision": precision,
        "batch": args.batch,
        "crop": args.crop,
        "freeze_backbone_bn": freeze,
        "round": rnd,
        "n_params": count_params(model),
        "cuda_graph": graph,
    }
    try:
        row.update(
            train_throughput(
                model,
                NUM_CLASSES,
                args.crop,
                args.batch,
                "cuda",
                precision,
                True,
                warmup=args.warmup,
                iterations=args.iterations,
                freeze_backbone_bn=freeze,
                cuda_graph=graph,
            )
        )
    except Exception as error:  # noqa: BLE001  (record it and go on with the other rows)
        row.update(
            {"error": repr(error)[:300], "train_img_per_s": float("nan"), "peak_mem_alloc_gb": float("nan")}
        )
    del model
    _fresh()
    print(
        f"train {name:26s} {precision} frozenBN={int(freeze)} graph={int(graph)} r{rnd}: "
        f"{row['train_img_per_s']:7.1f} img/s "
        f"peak {row['peak_mem_alloc_gb']:.2f} GB",
        flush=True,
    )
    return row


def infer_rows(name: str, build: Callable[[], nn.Module], args) -> list[dict]:
    torch.manual_seed(0)
    model = build().cuda()
    rows = []
    for precision, batch, graph in (("fp32", 1, False), ("fp32", 1, True), ("bf16", args.infer_batch, False)):
        iters = args.latency_iterations if batch == 1 else max(4, args.latency_iterations // batch)
        sec = inference_time(
            model,
            args.crop,
            batch,
            "cuda",
            precision,
            True,
            warmup=args.warmup,
            iterations=iters,
            cuda_graph=graph,
        )
        rows.append(
            {
                "section": "infer",
                "name": name,
                "precision": precision,
                "batch": batch,
                "crop": args.crop,
                "cuda_graph": graph,
                "latency_ms": 1000 * sec,
                "img_per_s": batch / sec,
            }
        )
        print(
            f"infer {name:26s} {precision} b{batch} graph={int(graph)}: {1000 * sec:7.2f} ms "
            f"{batch / sec:7.1f} img/s",
            flush=True,
        )
    del model
    _fresh()
    return rows


def numerics(args) -> list[dict]:
    """Our optimised RefineNet against the same weights run without the optimisations (GPU)."""
    torch.manual_seed(0)
    fast = ours_released().cuda().to(memory_format=torch.channels_last)
    torch.manual_seed(0)
    plain = _PlainPool(ours_released(fold=False)).cuda().to(memory_format=torch.channels_last)
    plain.model.load_state_dict(fast.state_dict())
    gen = torch.Generator().manual_seed(3)
    for m in (fast, plain):
        train_mode(m, True)
        for mod in m.modules():
            if isinstance(mod, nn.Dropout):
                mod.p = 0.0
    x = torch.randn(2, 3, args.crop, args.crop, generator=gen).cuda().to(memory_format=torch.channels_last)
    rows = []
    for precision in ("fp32", "bf16"):
        outs, grads = [], []
        for m in (fast, plain):
            m.zero_grad(set_to_none=True)
            with autocast(torch.device("cuda"), precision):
                out = m(x)
            out.float().square().mean().backward()
            outs.append(out.float().detach())
            grads.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
        rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
        rows.append(
            {
                "section": "numerics",
                "precision": precision,
                "rel_err_logits": rel(*outs),
                "rel_err_grads": rel(*grads),
            }
        )
        print(
            f"numerics {precision}: logits rel err {rows[-1]['rel_err_logits']:.2e}, "
            f"grads {rows[-1]['rel_err_grads']:.2e}",
            flush=True,
        )
    return rows


def profile_step(name: str, build: Callable[[], nn.Module], args, out: Path) -> None:
    """torch.profiler table of 3 training steps (bf16, frozen backbone BN): where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    model = build().cuda().to(memory_format=torch.channels_last)
    train_mode(model, True)
    x = torch.randn(args.batch, 3, args.crop, args.crop, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, NUM_CLASSES, (args.batch, args.crop, args.crop), device="cuda")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(torch.device("cuda"), "bf16"):
            logits = model(x)
        F.cross_entropy(logits.float(), y).backward()
        opt.step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=70)
    (out / f"profiler_{name}.txt").write_text(table)
    print(f"--- profiler {name} (3 steps) ---")
    print("\n".join(table.splitlines()[:22]))
    _fresh()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/h100")
    parser.add_argument("--sections", default="numerics,refinenet,infer,baselines,profiler")
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--infer-batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--latency-iterations", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--refinenet", default=",".join(REFINENET), help="RefineNet rows to train")
    parser.add_argument(
        "--quick", action="store_true", help="only the bf16, frozen-BN, eager training rows of the plan"
    )
    parser.add_argument(
        "--infer",
        default="port-rf101,ours-released,port-rf101,ours-released",
        help="RefineNet rows to time at inference, in this order",
    )
    parser.add_argument("--baselines", default=",".join(BASELINES), help="baseline rows (interleaved)")
    parser.add_argument("--baseline-inference", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: benchmarks/peers.py needs a CUDA GPU.", file=sys.stderr)
        return 2
    set_fast_gpu_flags()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sections = args.sections.split(",")
    rows: list[dict] = []
    started = time.time()
    if "numerics" in sections:
        rows += numerics(args)
    if "refinenet" in sections:
        # (name, precision, frozen backbone BN, CUDA-graphed step, rounds): the port and ours alternate
        plan = [
            ("port-rf101", "bf16", True, False, args.rounds),
            ("ours-released", "bf16", True, False, args.rounds),
            ("ours-released-window", "bf16", True, False, args.rounds),
            ("port-rf101", "bf16", True, True, args.rounds),
            ("ours-released", "bf16", True, True, args.rounds),
            ("ours-released-window", "bf16", True, True, args.rounds),
            ("ours-released-plainpool", "bf16", True, True, 1),
            ("ours-released-ckpt", "bf16", True, False, 1),
            ("port-rf101", "bf16", False, False, 1),
            ("ours-released", "bf16", False, False, 1),
            ("port-rf101", "bf16", False, True, 1),
            ("ours-released", "bf16", False, True, 1),
            ("port-rf101", "fp32", True, False, 1),
            ("ours-released", "fp32", True, False, 1),
            ("port-rf101", "fp32", True, True, 1),
            ("ours-released", "fp32", True, True, 1),
        ]
        wanted = set(args.refinenet.split(","))
        if args.quick:
            plan = [p for p in plan if p[1:4] == ("bf16", True, False)]
        for rnd in range(args.rounds):
            for name, precision, freeze, graph, rounds in plan:
                if rnd < rounds and name in wanted:
                    rows.append(train_row(name, REFINENET[name], args, precision, freeze, rnd, graph))
    write(out, rows, args, started)
    if "infer" in sections:
        for name in args.infer.split(","):
            rows += infer_rows(name, REFINENET[name], args)
    write(out, rows, args, started)
    if "baselines" in sections:
        names = [n for n in args.baselines.split(",") if n]
        for rnd in range(args.rounds):
            for name in names:
                for precision in ("bf16", "fp32"):
                    rows.append(train_row(name, BASELINES[name][0], args, precision, False, rnd))
        if args.baseline_inference:
            for name in names:
                rows += infer_rows(name, BASELINES[name][0], args)
    write(out, rows, args, started)
    if "profiler" in sections:
        profile_step("ours-released", REFINENET["ours-released"], args, out)
        profile_step("port-rf101", REFINENET["port-rf101"], args, out)
    write(out, rows, args, started)
    return 0


def write(out: Path, rows: list[dict], args, started: float) -> None:
    settings = {
        **vars(args),
        **device_info(torch.device("cuda")),
        "cudnn": torch.backends.cudnn.version(),
        "seconds": time.time() - started,
        "channels_last": True,
        "cudnn_benchmark": True,
        "tf32": True,
        "peer_of": {k: v for k, (_, v) in BASELINES.items() if v},
    }
    (out / "peers.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1) + "\n")
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("section", "name"), k))
    with (out / "peers.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}/peers.csv in {time.time() - started:.0f} s on {settings['device_name']}", flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
