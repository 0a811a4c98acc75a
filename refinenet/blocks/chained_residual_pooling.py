"""Chained residual pooling (CRP), paper §3.2 and Fig. 3(d) (https://arxiv.org/abs/1611.06612)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from refinenet.blocks.residual_conv_unit import conv3x3

CRP_ORDERS = ("pool-conv", "conv-pool")


MAX_POOL_MODES = ("separable", "window")


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def separable_max_pool(x: torch.Tensor, kernel: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """Stride-1 ``kernel`` max pooling as a ``(1, kw)`` pass along W, then a ``(kh, 1)`` pass along H.

    The max over a rectangle is the max over its rows of the max within each row, so the output is
    exactly ``F.max_pool2d(x, kernel, 1, padding)`` (padding is -inf in both). Two 5-tap passes do
    10 comparisons per output instead of 25.
    """
    row_max = F.max_pool2d(x, (1, kernel[1]), stride=1, padding=(0, padding[1]))
    return F.max_pool2d(row_max, (kernel[0], 1), stride=1, padding=(padding[0], 0))


class _SeparableMaxPool(torch.autograd.Function):
    """`separable_max_pool` that keeps its input, not an int64 argmax per output, for the backward.

    ``nn.MaxPool2d`` saves an int64 index per output element: 4x the bytes of a bf16 activation,
    over 1 GB for the released graph's stride-4 CRP at batch 8, 512x512. The backward pass here
    recomputes the two passes' indices from the saved input and routes the gradient back through
    them. The routed position is the same as ``nn.MaxPool2d``'s, ties included: both passes keep
    the first maximum, so the pair picks the first row holding the window's maximum and the first
    column of it in that row, which is the row-major first maximum that ``nn.MaxPool2d`` keeps.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.kernel, ctx.padding = kernel, padding
        return separable_max_pool(x, kernel, padding)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        (kh, kw), (ph, pw) = ctx.kernel, ctx.padding
        backward = torch.ops.aten.max_pool2d_with_indices_backward
        row_max, row_idx = F.max_pool2d(x, (1, kw), stride=1, padding=(0, pw), return_indices=True)
        _, col_idx = F.max_pool2d(row_max, (kh, 1), stride=1, padding=(ph, 0), return_indices=True)
        grad_rows = backward(grad, row_max, [kh, 1], [1, 1], [ph, 0], [1, 1], False, col_idx)
        del row_max, col_idx
        grad_input = backward(grad_rows, x, [1, kw], [1, 1], [0, pw], [1, 1], False, row_idx)
        return grad_input, None, None


class _LeanMaxPool(torch.autograd.Function):
    """Stride-1 max pooling over the whole window that keeps its input, not its int64 argmax, for the
    backward pass, which recomputes the indices (same kernel, same gradient bit for bit as
    ``nn.MaxPool2d``). The previous default; ``max_pool="window"``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.kernel, ctx.padding = kernel, padding
        return F.max_pool2d(x, kernel, stride=1, padding=padding)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        _, indices = F.max_pool2d(x, ctx.kernel, stride=1, padding=ctx.padding, return_indices=True)
        grad_input = torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, list(ctx.kernel), [1, 1], list(ctx.padding), [1, 1], False, indices
        )
        return grad_input, None, None


def lean_max_pool(pool: nn.MaxPool2d, x: torch.Tensor, mode: str = "separable") -> torch.Tensor:
    """``pool(x)`` for a stride-1 ``nn.MaxPool2d`` (same output; the gradient is routed to the same
    positions), computed as ``mode`` says:

    - ``"separable"`` (default): `separable_max_pool`; under autograd `_SeparableMaxPool` keeps the
      input instead of int64 indices and recomputes the indices in the backward.
    - ``"window"``: the full-window kernel, with the same lean backward (`_LeanMaxPool`); slower
      (docs/performance.md), kept as the ablation of the separable passes.

    Other pools (stride > 1, dilation, ceil mode, returned indices) run ``pool(x)``; so does a pool
    inside a ``torch.compile``'d region, which Inductor lowers itself.
    """
    if mode not in MAX_POOL_MODES:
        raise ValueError(f"Unknown max_pool mode {mode!r}. Valid modes: {', '.join(MAX_POOL_MODES)}.")
    simple = pool.stride in (1, (1, 1)) and pool.dilation in (1, (1, 1)) and not pool.ceil_mode
    if not simple or pool.return_indices or torch.compiler.is_compiling():
        return pool(x)
    kernel, padding = _pair(pool.kernel_size), _pair(pool.padding)
    if torch.is_grad_enabled() and x.requires_grad:
        function = _SeparableMaxPool if mode == "separable" else _LeanMaxPool
        return function.apply(x, kernel, padding)
    if mode == "separable":
        return separable_max_pool(x, kernel, padding)
    return F.max_pool2d(x, kernel, stride=1, padding=padding)


def _run_pooling_block(block: nn.Sequential, x: torch.Tensor, mode: str = "separable") -> torch.Tensor:
    for layer in block:
        x = lean_max_pool(layer, x, mode) if isinstance(layer, nn.MaxPool2d) else layer(x)
    return x


def pooling_block(channels: int, order: str = "pool-conv", pool_size: int = 5) -> nn.Sequential:
    """One CRP pooling block: ``pool_size`` max-pool (stride 1) and a 3x3 conv without bias.

    ``order="pool-conv"`` is the paper's and the released original graph's order;
    ``"conv-pool"`` is the released code's "improved residual pooling". Both orders have the same
    state-dict keys (``pool``, ``conv.weight``).
    """
    if order not in CRP_ORDERS:
        raise ValueError(f"Unknown CRP order {order!r}. Valid orders: {', '.join(CRP_ORDERS)}.")
    layers = {
        "pool": nn.MaxPool2d(pool_size, stride=1, padding=pool_size // 2),
        "conv": conv3x3(channels, channels),
    }
    return nn.Sequential(OrderedDict((name, layers[name]) for name in order.split("-")))


class ChainedResidualPooling(nn.Module):
    """ReLU, then a chain of ``n_blocks`` pooling blocks whose outputs are all summed with the input.

    ``relu(x) + b1 + b2 + ... + bn`` with ``b1 = block1(relu(x))`` and ``bk = blockk(b_{k-1})``
    (§3.2, Fig. 3(d): each block takes the previous block's output). ``n_blocks=0`` leaves only
    the ReLU (Table 2's "no chained pooling" row).

    Args:
        channels: input and output width.
        n_blocks: number of pooling blocks (paper: 2 by default, 4 for VOC and Person-Part).
        order: ``"pool-conv"`` (paper) or ``"conv-pool"`` (released "improved" pooling).
        inplace: apply the leading ReLU in place, overwriting the input (saves one activation;
            `RefineNetBlock` uses it because its CRP input is always a fresh tensor).
    """

    def __init__(self, channels: int, n_blocks: int = 2, *, order: str = "pool-conv", inplace: bool = False):
        super().__init__()
        if not isinstance(n_blocks, int) or n_blocks < 0:
            raise ValueError(f"n_blocks must be an integer >= 0, got {n_blocks!r}.")
        self.inplace = inplace
        self.max_pool = "separable"  # how the pools run (`lean_max_pool`); same function either way
        self.blocks = nn.ModuleList(pooling_block(channels, order) for _ in range(n_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x, inplace=self.inplace)
        out = x
        path = x
        for i, block in enumerate(self.blocks):
            path = _run_pooling_block(block, path, self.max_pool)
            # The running sum is saved by no backward function: after the first (out-of-place) sum,
            # which must not overwrite the ReLU output that the first block keeps, accumulate in place.
            if i == 0 or out.dtype != torch.result_type(out, path):
                out = out + path
            else:
                out += path
        return out
