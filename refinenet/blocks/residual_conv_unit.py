"""Residual convolution unit (RCU), paper §3.2 and Fig. 3(b) (https://arxiv.org/abs/1611.06612)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def conv3x3(in_channels: int, out_channels: int, *, bias: bool = False) -> nn.Conv2d:
    """3x3 convolution, stride 1, padding 1 (keeps the spatial size)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=bias)


class ResidualConvUnit(nn.Module):
    """ResNet's convolution unit with batch normalisation removed (§3.2, Fig. 3(b)).

    ``x + conv2(relu(conv1(relu(x))))``. As in the released code, the first 3x3 convolution has a
    bias and the second has none. Input and output have ``channels`` channels and the same size.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels, bias=True)
        self.conv2 = conv3x3(channels, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The first ReLU must not be in place: x is the identity branch.
        out = self.conv1(F.relu(x))
        # conv1's output is not needed by autograd, so this ReLU can overwrite it.
        out = self.conv2(F.relu(out, inplace=True))
        # conv2's output is kept by no backward function, so the residual sum can overwrite it.
        if out.dtype == torch.result_type(out, x):
            return out.add_(x)
        return out + x
