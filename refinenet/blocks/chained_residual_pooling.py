"""Chained residual pooling (CRP), paper §3.2 and Fig. 3(d) (https://arxiv.org/abs/1611.06612)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from refinenet.blocks.residual_conv_unit import conv3x3

CRP_ORDERS = ("pool-conv", "conv-pool")


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
        for block in self.blocks:
            path = block(path)
            out = out + path
        return out
