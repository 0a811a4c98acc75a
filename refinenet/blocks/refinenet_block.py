"""One RefineNet block, paper §3.2 and Fig. 3(a) (https://arxiv.org/abs/1611.06612)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from refinenet.blocks.chained_residual_pooling import ChainedResidualPooling
from refinenet.blocks.multi_resolution_fusion import MultiResolutionFusion
from refinenet.blocks.residual_conv_unit import ResidualConvUnit


def rcu_chain(channels: int, n: int) -> nn.Sequential:
    """``n`` residual conv units in sequence (``n=0`` is the identity)."""
    return nn.Sequential(*(ResidualConvUnit(channels) for _ in range(n)))


class RefineNetBlock(nn.Module):
    """Adaptive convs -> multi-resolution fusion -> chained residual pooling -> output convs.

    Args:
        in_channels: width of each input path (in ``forward``'s input order).
        adaptive_rcus: RCUs per input path before fusion ("adaptive conv", paper: 2); an int for
            every path or one count per path (the released graph has none on the path that comes
            from the previous RefineNet block).
        crp_blocks: pooling blocks in the chained residual pooling.
        crp_order: ``"pool-conv"`` or ``"conv-pool"``.
        output_rcus: RCUs after the chained residual pooling ("output conv", paper: 1, released: 3).

    The output width is ``min(in_channels)`` and its resolution the largest input resolution.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        *,
        adaptive_rcus: int | Sequence[int] = 2,
        crp_blocks: int = 2,
        crp_order: str = "pool-conv",
        output_rcus: int = 1,
    ) -> None:
        super().__init__()
        if isinstance(adaptive_rcus, int):
            adaptive_rcus = [adaptive_rcus] * len(in_channels)
        if len(adaptive_rcus) != len(in_channels):
            raise ValueError(
                f"adaptive_rcus has {len(adaptive_rcus)} entries for {len(in_channels)} input paths."
            )
        self.adaptive_convs = nn.ModuleList(
            rcu_chain(c, n) for c, n in zip(in_channels, adaptive_rcus, strict=True)
        )
        self.fusion = MultiResolutionFusion(in_channels)
        self.out_channels = self.fusion.out_channels
        # The CRP input is a fresh tensor (a fusion sum or an RCU output) unless a single path has no
        # RCU; only then must its leading ReLU not overwrite the caller's tensor.
        fresh_input = len(in_channels) > 1 or adaptive_rcus[0] > 0
        self.chained_pooling = ChainedResidualPooling(
            self.out_channels, crp_blocks, order=crp_order, inplace=fresh_input
        )
        self.output_convs = rcu_chain(self.out_channels, output_rcus)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``inputs``: one tensor per path -> ``(N, out_channels, max H, max W)``."""
        if len(inputs) != len(self.adaptive_convs):
            raise ValueError(f"RefineNetBlock expects {len(self.adaptive_convs)} inputs, got {len(inputs)}.")
        paths = [adapt(x) for adapt, x in zip(self.adaptive_convs, inputs, strict=True)]
        return self.output_convs(self.chained_pooling(self.fusion(paths)))
