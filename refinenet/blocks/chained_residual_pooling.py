"""Chained residual pooling (CRP), paper §3.2 and Fig. 3(d) (https://arxiv.org/abs/1611.06612)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from refinenet.blocks.residual_conv_unit import conv3x3

CRP_ORDERS = ("pool-conv", "conv-pool")


class _LeanMaxPool(torch.autograd.Function):
    """Stride-1 max pooling that keeps its input, not its int64 argmax, for the backward pass.

    ``nn.MaxPool2d`` saves an int64 index per output element: 4x the bytes of a bf16 activation,
    over 1 GB for the released graph's stride-4 CRP at batch 8, 512x512. Here the backward pass
    recomputes the indices from the saved input (one cheap pooling pass), so the gradient is the
    same, bit for bit, as ``nn.MaxPool2d``'s (same kernel, same tie-breaking).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: int, padding: int) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.kernel, ctx.padding = kernel, padding
        return F.max_pool2d(x, kernel, stride=1, padding=padding)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        _, indices = F.max_pool2d(x, ctx.kernel, stride=1, padding=ctx.padding, return_indices=True)
        grad_input = torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, [ctx.kernel, ctx.kernel], [1, 1], [ctx.padding, ctx.padding], [1, 1], False, indices
        )
        return grad_input, None, None


def lean_max_pool(pool: nn.MaxPool2d, x: torch.Tensor) -> torch.Tensor:
    """``pool(x)`` for a stride-1 ``nn.MaxPool2d``, with the memory-lean backward of `_LeanMaxPool`
    (same output, same gradient; only what autograd keeps differs)."""
    simple = pool.stride in (1, (1, 1)) and pool.dilation in (1, (1, 1)) and not pool.ceil_mode
    if simple and not pool.return_indices and torch.is_grad_enabled() and x.requires_grad:
        return _LeanMaxPool.apply(x, pool.kernel_size, pool.padding)
    return pool(x)


def _run_pooling_block(block: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    for layer in block:
        x = lean_max_pool(layer, x) if isinstance(layer, nn.MaxPool2d) else layer(x)
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
        self.blocks = nn.ModuleList(pooling_block(channels, order) for _ in range(n_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x, inplace=self.inplace)
        out = x
        path = x
        for i, block in enumerate(self.blocks):
            path = _run_pooling_block(block, path)
            # The running sum is saved by no backward function: after the first (out-of-place) sum,
            # which must not overwrite the ReLU output that the first block keeps, accumulate in place.
            if i == 0 or out.dtype != torch.result_type(out, path):
                out = out + path
            else:
                out += path
        return out
