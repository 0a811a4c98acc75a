"""The four RefineNet building blocks of paper §3.2 / Fig. 3 (https://arxiv.org/abs/1611.06612)."""

from refinenet.blocks.chained_residual_pooling import CRP_ORDERS, ChainedResidualPooling
from refinenet.blocks.multi_resolution_fusion import MultiResolutionFusion
from refinenet.blocks.refinenet_block import RefineNetBlock
from refinenet.blocks.residual_conv_unit import ResidualConvUnit

__all__ = [
    "CRP_ORDERS",
    "ChainedResidualPooling",
    "MultiResolutionFusion",
    "RefineNetBlock",
    "ResidualConvUnit",
]
