"""Multi-resolution fusion (MRF), paper §3.2 and Fig. 3(c) (https://arxiv.org/abs/1611.06612)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from refinenet.blocks.residual_conv_unit import conv3x3


class MultiResolutionFusion(nn.Module):
    """Fuse input paths of different widths and resolutions into one feature map (§3.2, Fig. 3(c)).

    Each input gets a 3x3 convolution (no bias, as in the released code) to the smallest input
    width; all are then upsampled bilinearly to the largest input resolution (read from the inputs
    at forward time, so any image size works) and summed. A single input passes through unchanged
    (the paper: "if there is only one input path, the input path will directly go through").

    Args:
        in_channels: the width of each input path, in the order the inputs are given to ``forward``.
    """

    def __init__(self, in_channels: Sequence[int]) -> None:
        super().__init__()
        if len(in_channels) == 0:
            raise ValueError("MultiResolutionFusion needs at least one input path.")
        self.out_channels = min(in_channels)
        if len(in_channels) == 1:
            self.convs = nn.ModuleList([nn.Identity()])
        else:
            self.convs = nn.ModuleList(conv3x3(c, self.out_channels) for c in in_channels)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``inputs``: one ``(N, C_i, H_i, W_i)`` tensor per path -> ``(N, min C_i, max H, max W)``."""
        if len(inputs) != len(self.convs):
            raise ValueError(f"MultiResolutionFusion expects {len(self.convs)} inputs, got {len(inputs)}.")
        if len(inputs) == 1:
            return inputs[0]
        # The resize target is the largest input resolution, taken from the partner tensors.
        size = max((x.shape[-2:] for x in inputs), key=lambda s: s[0] * s[1])
        # Start the sum from a full-resolution path (a fresh conv output, kept by no backward
        # function) and add the upsampled paths into it in place: one buffer, no temporaries.
        order = sorted(range(len(inputs)), key=lambda i: inputs[i].shape[-2:] != size)
        out = None
        for i in order:
            x = self.convs[i](inputs[i])
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            if out is None:
                out = x
            elif out.dtype == torch.result_type(out, x):
                out += x
            else:
                out = out + x
        return out
